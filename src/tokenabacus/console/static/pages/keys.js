// Keys (admins only): create one (its secret shown once, with a copy button), list them, revoke
// one. Every change goes through the /admin routes the CLI's rules live behind (POST /admin/keys,
// DELETE /admin/keys/{id}), with the session's CSRF token as every write of the console.

import { api } from "../api.js";
import { h } from "../dom.js";
import { t } from "../i18n.js";
import { card, fill, hideError, showError, table } from "../ui.js";

const ROLES = ["member", "viewer", "admin"];

function field(name, label, input) {
  return h("label", { class: "field", "data-field": name }, h("span", {}, label), input);
}

function text(name, attrs = {}) {
  return h("input", { name, autocomplete: "off", ...attrs });
}

// The body POST /admin/keys takes, from the form: empty fields are left out.
function keyBody(form) {
  const data = new FormData(form);
  const get = (k) => String(data.get(k) || "").trim();
  const body = { role: get("role") || "member" };
  for (const k of ["user", "project", "department", "name"]) if (get(k)) body[k] = get(k);
  if (body.role === "viewer" && get("scope_value")) body.scope = { kind: get("scope_kind"), value: get("scope_value") };
  const ips = get("allow_ips")
    .split(/[\s,]+/)
    .filter(Boolean);
  if (ips.length) body.allow_ips = ips;
  return body;
}

// The new key, once: selectable text and a copy button. It is not kept anywhere by the page.
function secret(made) {
  const out = h("input", { class: "secret mono", readonly: true, value: made.key, "data-secret": made.key_id });
  const status = h("span", { class: "muted small", role: "status" });
  const copy = h(
    "button",
    {
      type: "button",
      class: "small",
      "data-action": "copy",
      onclick: async () => {
        out.select();
        try {
          await navigator.clipboard.writeText(made.key);
        } catch {
          document.execCommand("copy"); // an older browser, or a page not allowed the clipboard
        }
        status.textContent = t("keys.copied");
      },
    },
    t("keys.copy"),
  );
  return h(
    "div",
    { class: "flash once", "data-created": made.key_id },
    h("p", {}, h("strong", {}, t("keys.created", { id: made.key_id })), " ", t("keys.once")),
    h("div", { class: "secret-row" }, out, copy, status),
  );
}

function createForm(rerender) {
  const scopeKind = h(
    "select",
    { name: "scope_kind" },
    ["department", "project"].map((k) => h("option", { value: k }, t(`scope.${k}`))),
  );
  const form = h(
    "form",
    { class: "filters key-form", "data-form": "new-key" },
    field(
      "role",
      t("keys.role"),
      h(
        "select",
        { name: "role" },
        ROLES.map((r) => h("option", { value: r }, t(`role.${r}`))),
      ),
    ),
    field("user", t("field.user"), text("user", { list: "dl-user" })),
    field("department", t("field.department"), text("department", { list: "dl-department" })),
    field("project", t("field.project"), text("project", { list: "dl-project" })),
    field("name", t("keys.name"), text("name")),
    field("scope", t("keys.scope"), h("span", { class: "pair" }, scopeKind, text("scope_value"))),
    field("allow_ips", t("keys.allow_ips"), text("allow_ips", { placeholder: "10.0.0.0/8, 192.168.1.7" })),
    h("div", { class: "field buttons" }, h("button", { type: "submit", class: "primary" }, t("keys.create"))),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const made = await api("/admin/keys", { method: "POST", body: keyBody(form) });
      rerender(made);
    } catch (err) {
      showError(err);
      button.disabled = false;
    }
  });
  return form;
}

function revokeButton(r, me, rerender) {
  if (r.revoked_at) return h("span", { class: "muted" }, t("keys.revoked"));
  if (r.key_id === me.key_id) return h("span", { class: "muted small" }, t("keys.this_session"));
  // Two steps, no dialog: the first click asks, the second revokes.
  const b = h("button", { type: "button", class: "danger small", "data-action": "revoke" }, t("keys.revoke"));
  b.addEventListener("click", async () => {
    if (b.dataset.action === "revoke") {
      b.dataset.action = "confirm";
      b.textContent = t("keys.confirm_revoke", { id: r.key_id });
      return;
    }
    b.disabled = true;
    try {
      await api(`/admin/keys/${encodeURIComponent(r.key_id)}`, { method: "DELETE" });
      rerender(null, t("keys.revoked_flash", { id: r.key_id }));
    } catch (err) {
      showError(err);
      b.disabled = false;
    }
  });
  return b;
}

function scopeOf(r) {
  if (r.scope_kind) return `${t(`scope.${r.scope_kind}`)}: ${r.scope_value}`;
  return "";
}

async function lists() {
  const quiet = (p) => api(p).catch(() => []);
  const [depts, projects, users] = await Promise.all([
    quiet("/admin/org/departments"),
    quiet("/admin/org/projects"),
    quiet("/admin/org/users"),
  ]);
  const dl = (id, rows) => h("datalist", { id }, rows.map((r) => h("option", { value: r.name })));
  return [dl("dl-department", depts), dl("dl-project", projects), dl("dl-user", users)];
}

export async function render(main, ctx, made, flash) {
  main.append(h("h1", {}, t("keys.title")));
  if (!ctx.me || ctx.me.role !== "admin") {
    main.append(h("p", { class: "empty", "data-admin-only": "" }, t("keys.admin_only")));
    return;
  }
  const showAll = ctx.query.get("all") === "1";
  const rerender = (m, message) => {
    hideError();
    main.replaceChildren();
    render(main, ctx, m, message);
  };
  const listBox = h("div");
  const datalists = h("div", { hidden: true });
  const toggle = h(
    "a",
    { class: "export", href: showAll ? "#/keys" : "#/keys?all=1", "data-toggle": "revoked" },
    showAll ? t("keys.hide_revoked") : t("keys.show_revoked"),
  );
  main.append(
    made ? secret(made) : "",
    flash ? h("p", { class: "flash", role: "status" }, flash) : "",
    card(t("keys.new"), { note: t("keys.new.note") }, createForm(rerender), datalists),
    card(t("keys.list"), { actions: [toggle], wide: true }, listBox),
  );
  fill(datalists, lists);
  await fill(listBox, async () => {
    const rows = await api("/admin/keys", { params: { include_revoked: showAll ? "true" : null } });
    return table({
      name: "keys",
      key: (r) => r.key_id,
      rows,
      columns: [
        { key: "key_id", label: t("field.key_id"), cls: "mono nowrap" },
        { key: "prefix", label: t("keys.prefix"), cls: "mono" },
        { key: "name", label: t("keys.name") },
        { key: "role", label: t("keys.role"), value: (r) => t(`role.${r.role}`) },
        { key: "user", label: t("field.user") },
        { key: "project", label: t("field.project") },
        { key: "department", label: t("field.department") },
        { key: "scope", label: t("keys.scope"), value: scopeOf },
        { key: "allow_ips", label: t("keys.allow_ips"), value: (r) => (r.allow_ips || []).join(", "), cls: "mono" },
        { key: "created_at", label: t("keys.created_at"), kind: "time", cls: "nowrap" },
        { key: "actions", label: "", render: (r) => revokeButton(r, ctx.me, rerender) },
      ],
      empty: t("keys.none"),
    });
  });
}
