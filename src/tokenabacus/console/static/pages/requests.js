// The request log: the ledger's records newest first, filtered by time, model, project, user,
// status and client address, a page at a time. The filters live in the address (#/requests?...),
// so a filtered view can be bookmarked, shared and navigated back to.

import { api } from "../api.js";
import { h } from "../dom.js";
import { fmtInt, fmtMs } from "../format.js";
import { t } from "../i18n.js";
import { card, exportLinks, fill, table } from "../ui.js";

const PAGE = 50;
const FILTERS = ["since", "until", "model", "department", "project", "user", "status", "client_ip"];
const STATUSES = ["ok", "error", "cancelled", "rejected"];
const EXPORT_MAX = 10000; // the route's own ceiling

function field(name, value, attrs = {}) {
  return h(
    "label",
    { class: "field" },
    h("span", {}, t(`filter.${name}`)),
    h("input", { name, value: value || "", autocomplete: "off", ...attrs }),
  );
}

function statusBadge(s) {
  return h("span", { class: `status status-${s}` }, t(`status.${s}`));
}

function datalist(id, values) {
  return h(
    "datalist",
    { id },
    [...new Set(values.filter(Boolean))].sort().map((v) => h("option", { value: v })),
  );
}

async function options() {
  // Suggestions only: a failure here must not hide the log, so errors are swallowed to empty.
  const quiet = (p, params) => api(p, { params }).catch(() => null);
  const [departments, projects, users, models] = await Promise.all([
    quiet("/admin/org/departments"),
    quiet("/admin/org/projects"),
    quiet("/admin/org/users"),
    quiet("/admin/reports/models", { period: "month" }),
  ]);
  return [
    datalist(
      "dl-department",
      (departments || []).map((d) => d.name),
    ),
    datalist(
      "dl-project",
      (projects || []).map((p) => p.name),
    ),
    datalist(
      "dl-user",
      (users || []).map((u) => u.name),
    ),
    datalist(
      "dl-model",
      ((models && models.rows) || []).map((m) => m.model),
    ),
  ];
}

export async function render(main, ctx) {
  const q = ctx.query;
  const filters = Object.fromEntries(FILTERS.map((f) => [f, q.get(f) || ""]));
  const page = Math.max(0, parseInt(q.get("page") || "0", 10) || 0);
  const lists = h("div", { hidden: true });

  const form = h(
    "form",
    {
      class: "filters",
      "data-form": "filters",
      onsubmit: (e) => {
        e.preventDefault();
        const data = new FormData(form);
        const next = new URLSearchParams();
        for (const f of FILTERS) {
          let v = String(data.get(f) || "").trim();
          if (f === "since" || f === "until") v = v.replace("T", " "); // shown as typed: 2026-11-03 14:05
          if (v) next.set(f, v);
        }
        window.location.hash = `#/requests?${next}`;
      },
    },
    // Text, not datetime-local: the browser would show its own locale's format (12/08/2026, 2026/12/08).
    field("since", filters.since, { placeholder: "yyyy-mm-dd hh:mm" }),
    field("until", filters.until, { placeholder: "yyyy-mm-dd hh:mm" }),
    field("model", filters.model, { list: "dl-model" }),
    field("department", filters.department, { list: "dl-department" }),
    field("project", filters.project, { list: "dl-project" }),
    field("user", filters.user, { list: "dl-user" }),
    h(
      "label",
      { class: "field" },
      h("span", {}, t("filter.status")),
      h(
        "select",
        { name: "status" },
        h("option", { value: "" }, t("filter.any")),
        STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, t(`status.${s}`))),
      ),
    ),
    field("client_ip", filters.client_ip, { inputmode: "decimal" }),
    h(
      "div",
      { class: "field buttons" },
      h("button", { type: "submit", class: "primary" }, t("filter.apply")),
      h("a", { class: "button", href: "#/requests" }, t("filter.clear")),
    ),
  );

  const body = h("div");
  const params = { ...filters, tz: ctx.tz };
  main.append(
    h("h1", {}, t("requests.title")),
    card(
      t("requests.log"),
      { actions: [exportLinks("/admin/usage", { ...params, limit: EXPORT_MAX })], wide: true },
      form,
      h("p", { class: "note" }, t("requests.tz_note", { tz: ctx.tz })),
      lists,
      body,
    ),
  );
  fill(lists, options);
  await fill(body, async () => {
    // One more than a page: whether there is a next page, without counting the whole ledger.
    const rows = await api("/admin/usage", { params: { ...params, limit: PAGE + 1, offset: page * PAGE } });
    const more = rows.length > PAGE;
    const shown = rows.slice(0, PAGE);
    const pageLink = (n) => {
      const next = new URLSearchParams(q);
      if (n) next.set("page", String(n));
      else next.delete("page");
      return `#/requests?${next}`;
    };
    return [
      table({
        name: "requests",
        key: (r) => r.request_id,
        rows: shown,
        onRow: (r) => {
          window.location.hash = `#/requests/${encodeURIComponent(r.request_id)}`;
        },
        columns: [
          { key: "timestamp", label: t("col.time"), kind: "time", cls: "nowrap" },
          { key: "status", label: t("col.status"), render: (r) => statusBadge(r.status) },
          { key: "model", label: t("col.model") },
          { key: "user", label: t("dim.user") },
          { key: "project", label: t("dim.project") },
          { key: "department", label: t("dim.department") },
          { key: "prompt_tokens", label: t("col.prompt_tokens"), kind: "int" },
          { key: "completion_tokens", label: t("col.completion_tokens"), kind: "int" },
          { key: "total_tokens", label: t("col.total_tokens"), kind: "int" },
          { key: "cost_micros", label: t("col.cost"), kind: "price" },
          { key: "duration_ms", label: t("col.duration"), value: (r) => fmtMs(r.duration_ms), cls: "num" },
          { key: "client_ip", label: t("col.client_ip"), cls: "mono" },
        ],
        empty: t("requests.none"),
      }),
      h(
        "nav",
        { class: "pager", "aria-label": t("pager") },
        page > 0 ? h("a", { class: "button", href: pageLink(page - 1), rel: "prev" }, `← ${t("pager.prev")}`) : null,
        h(
          "span",
          { class: "muted" },
          shown.length ? t("pager.rows", { a: fmtInt(page * PAGE + 1), b: fmtInt(page * PAGE + shown.length) }) : "",
        ),
        more ? h("a", { class: "button", href: pageLink(page + 1), rel: "next" }, `${t("pager.next")} →`) : null,
      ),
    ];
  });
}
