// Quotas: each visible limit's use this period against its limit (grants included), and the
// requests for more. Admins approve (all, or a smaller amount) or deny with a reason; viewers
// read the same page without the buttons (the server refuses them anyway).

import { api } from "../api.js";
import { h } from "../dom.js";
import { fmtAmount, fmtTime, fmtWhen, microsToDecimal } from "../format.js";
import { t } from "../i18n.js";
import { card, exportLinks, fill, hideError, showError, table } from "../ui.js";
import { limitForm } from "./quota-form.js";

function metricLabel(metric) {
  return metric.startsWith("cost:") ? `${t("metric.cost")} (${metric.slice(5)})` : t(`metric.${metric}`);
}

// What a request asks for: the metric, and the model when it is only one model's.
function what(r) {
  return r.model ? `${metricLabel(r.metric)} · ${r.model}` : metricLabel(r.metric);
}

function scopeLabel(kind, name) {
  return kind === "global" ? t("scope.global") : `${t(`scope.${kind}`)}: ${name}`;
}

function progress(r) {
  const limit = r.effective_limit;
  const usedPct = limit > 0 ? (100 * r.used) / limit : r.used > 0 ? 100 : 0;
  const heldPct = limit > 0 ? (100 * r.reserved) / limit : 0;
  const level = usedPct >= 100 ? "over" : usedPct >= 80 ? "near" : "ok";
  return h(
    "div",
    { class: "progress-cell" },
    h(
      "div",
      {
        class: `progress ${level}`,
        role: "progressbar",
        "aria-valuemin": "0",
        "aria-valuemax": String(limit),
        "aria-valuenow": String(r.used),
        title: t("quota.reserved_title", { n: fmtAmount(r.metric, r.reserved) }),
      },
      h("span", { class: "used", style: `width:${Math.min(100, usedPct)}%` }),
      h("span", { class: "held", style: `width:${Math.max(0, Math.min(100 - Math.min(100, usedPct), heldPct))}%` }),
    ),
    h("span", { class: "progress-text" }, `${usedPct.toFixed(usedPct < 10 ? 1 : 0)}%`),
  );
}

// A limit set at run time can be deleted here; one from the config file is changed there.
function deleteButton(r, rerender) {
  if (r.source !== "runtime") return h("span", { class: "muted small" }, t("quota.from_config"));
  const b = h("button", { type: "button", class: "danger small", "data-action": "delete" }, t("quota.delete"));
  b.addEventListener("click", async () => {
    if (b.dataset.action === "delete") {
      b.dataset.action = "confirm"; // two steps, no dialog
      b.textContent = t("quota.confirm_delete");
      return;
    }
    b.disabled = true;
    try {
      await api(`/admin/quotas/${encodeURIComponent(r.quota_id)}`, { method: "DELETE" });
      rerender(t("quota.deleted", { id: r.quota_id }));
    } catch (e) {
      showError(e);
      b.disabled = false;
    }
  });
  return b;
}

function statusTable(rows, admin, rerender) {
  const extra = admin ? [{ key: "actions", label: "", render: (r) => deleteButton(r, rerender) }] : [];
  return table({
    name: "quota-status",
    key: (r) => r.quota_id,
    rows,
    columns: [
      { key: "scope", label: t("col.scope"), value: (r) => scopeLabel(r.scope, r.name), cls: "nowrap" },
      { key: "model", label: t("col.model"), value: (r) => r.model || t("quota.all_models") },
      { key: "metric", label: t("col.metric"), value: (r) => metricLabel(r.metric) },
      { key: "period", label: t("col.period"), value: (r) => t(`qperiod.${r.period}`) },
      { key: "progress", label: t("col.progress"), render: progress },
      { key: "used", label: t("col.used"), kind: "int", render: (r) => amountSpan(r.metric, r.used) },
      {
        key: "effective_limit",
        label: t("col.limit"),
        kind: "int",
        render: (r) => [
          amountSpan(r.metric, r.effective_limit),
          r.granted
            ? h(
                "span",
                { class: "muted small" },
                ` (${t("quota.incl_granted", { n: fmtAmount(r.metric, r.granted) })})`,
              )
            : null,
        ],
      },
      { key: "remaining", label: t("col.remaining"), kind: "int", render: (r) => amountSpan(r.metric, r.remaining) },
      {
        key: "resets_at",
        label: t("col.resets_at"),
        value: (r) => (r.resets_at ? fmtWhen(r.resets_at) : t("quota.never")),
        cls: "nowrap",
      },
      ...extra,
    ],
    empty: t("quota.none"),
  });
}

// The raw figure (micros for money) in data-value, the readable one as text.
function amountSpan(metric, v) {
  return h("span", { "data-value": v === null || v === undefined ? null : String(v) }, fmtAmount(metric, v));
}

function asked(r) {
  return amountSpan(r.metric, r.amount);
}

function decisionBody(metric, amountText, reason) {
  const body = {};
  const v = amountText.trim();
  if (v) {
    if (metric.startsWith("cost:")) body.cost = v;
    else if (/^\d+$/.test(v.replace(/[,\s_]/g, ""))) body[metric] = Number(v.replace(/[,\s_]/g, ""));
    else throw new Error(t("quota.bad_amount", { v }));
  }
  if (reason.trim()) body.reason = reason.trim();
  return body;
}

function actions(r, rerender) {
  const start = r.metric.startsWith("cost:") ? microsToDecimal(r.amount) : String(r.amount);
  const amount = h("input", {
    class: "amount",
    name: "amount",
    value: start,
    inputmode: "decimal",
    "aria-label": t("quota.grant_amount"),
    title: t("quota.grant_amount"),
  });
  const reason = h("input", {
    class: "reason",
    name: "reason",
    placeholder: t("quota.reason_ph"),
    "aria-label": t("quota.reason"),
  });
  const decide = async (verb, button) => {
    button.disabled = true;
    try {
      const body =
        verb === "approve"
          ? decisionBody(r.metric, amount.value, reason.value)
          : decisionBody(r.metric, "", reason.value);
      const done = await api(`/admin/quota-requests/${encodeURIComponent(r.request_id)}/${verb}`, {
        method: "POST",
        body,
      });
      rerender(
        verb === "approve"
          ? t("quota.approved", { id: done.request_id, n: fmtAmount(done.metric, done.granted) })
          : t("quota.denied", { id: done.request_id }),
      );
    } catch (e) {
      showError(e);
      button.disabled = false;
    }
  };
  const approve = h("button", { type: "button", class: "primary small", "data-action": "approve" }, t("quota.approve"));
  const deny = h("button", { type: "button", class: "danger small", "data-action": "deny" }, t("quota.deny"));
  approve.addEventListener("click", () => decide("approve", approve));
  deny.addEventListener("click", () => decide("deny", deny));
  return h("div", { class: "decide" }, amount, approve, reason, deny);
}

export async function render(main, ctx, flash) {
  const admin = ctx.me && ctx.me.role === "admin";
  const statusBox = h("div");
  const pendingBox = h("div");
  const decidedBox = h("div");
  const rerender = (message) => {
    hideError(); // an earlier refusal is answered by this success
    main.replaceChildren();
    render(main, ctx, message);
  };
  main.append(
    h("h1", {}, t("quotas.title")),
    flash ? h("p", { class: "flash", role: "status" }, flash) : "",
    card(
      t("quotas.status"),
      { actions: [exportLinks("/admin/quotas/status")], note: t("quotas.status.note") },
      statusBox,
    ),
    admin ? card(t("quota.set_title"), { note: t("quota.set_note") }, limitForm(rerender)) : "",
    card(
      t("quotas.pending"),
      {
        actions: [exportLinks("/admin/quota-requests", { status: "pending" })],
        note: admin ? t("quotas.pending.admin") : t("quotas.pending.viewer"),
      },
      pendingBox,
    ),
    card(t("quotas.decided"), {}, decidedBox),
  );
  await Promise.all([
    fill(statusBox, async () => statusTable(await api("/admin/quotas/status"), admin, rerender)),
    fill(pendingBox, async () => {
      const rows = await api("/admin/quota-requests", { params: { status: "pending" } });
      const cols = [
        { key: "request_id", label: t("col.request"), cls: "mono" },
        { key: "scope", label: t("col.scope"), value: (r) => scopeLabel(r.scope_kind, r.scope_value), cls: "nowrap" },
        { key: "metric", label: t("col.metric"), value: (r) => what(r), cls: "nowrap" },
        { key: "amount", label: t("col.asked"), kind: "int", render: asked },
        { key: "reason", label: t("col.reason"), cls: "wrap" },
        {
          key: "requested_by",
          label: t("col.requested_by"),
          render: (r) => [
            r.requested_by || "—",
            h("div", { class: "muted small nowrap" }, fmtTime(r.requested_at, false)),
          ],
        },
      ];
      if (admin) cols.push({ key: "actions", label: t("col.decision"), render: (r) => actions(r, rerender) });
      return table({
        name: "quota-pending",
        key: (r) => r.request_id,
        rows,
        columns: cols,
        empty: t("quota.no_pending"),
      });
    }),
    fill(decidedBox, async () => {
      const [approved, denied] = await Promise.all([
        api("/admin/quota-requests", { params: { status: "approved" } }),
        api("/admin/quota-requests", { params: { status: "denied" } }),
      ]);
      const rows = [...approved, ...denied].sort((a, b) => (b.decided_at || 0) - (a.decided_at || 0)).slice(0, 20);
      return table({
        name: "quota-decided",
        key: (r) => r.request_id,
        rows,
        columns: [
          { key: "request_id", label: t("col.request"), cls: "mono" },
          {
            key: "status",
            label: t("col.status"),
            render: (r) => h("span", { class: `status status-${r.status}` }, t(`qstatus.${r.status}`)),
          },
          { key: "scope", label: t("col.scope"), value: (r) => scopeLabel(r.scope_kind, r.scope_value), cls: "nowrap" },
          { key: "metric", label: t("col.metric"), value: (r) => what(r), cls: "nowrap" },
          { key: "amount", label: t("col.asked"), kind: "int", render: asked },
          { key: "granted", label: t("col.granted"), kind: "int", render: (r) => amountSpan(r.metric, r.granted) },
          { key: "decision_reason", label: t("col.decision_reason"), cls: "wrap" },
          { key: "decided_by", label: t("col.decided_by") },
          { key: "decided_at", label: t("col.decided_at"), kind: "time", cls: "nowrap" },
        ],
        empty: t("quota.no_decided"),
      });
    }),
  ]);
}
