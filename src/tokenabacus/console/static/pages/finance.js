// Finance: any past month's chargeback, as `tokenabacus report chargeback --month M` builds it
// (the /admin route runs the same code): what each department owes, its detail by project, user
// and model, the price versions that charged it, the month's adjustments and the hardware
// apportioned; the workbook in the reader's language. A viewer gets its own scope (the server
// cuts it); nothing here assumes a department is visible.

import { api, url } from "../api.js";
import { h } from "../dom.js";
import { addMonths, fmtMoney, today } from "../format.js";
import { getLang, t } from "../i18n.js";
import { card, fill, table } from "../ui.js";

const MONTH = /^\d{4}-\d{2}$/;
const MONTHS_BACK = 24;
const none = (v) => (v === null || v === undefined || v === "" ? t("none") : v);

function go(month) {
  window.location.hash = `#/finance?month=${month}`;
}

function monthPicker(month) {
  const now = today().iso.slice(0, 7);
  const months = Array.from({ length: MONTHS_BACK + 1 }, (_, i) => addMonths(now, -i));
  if (!months.includes(month)) months.push(month);
  const select = h(
    "select",
    { name: "month", "aria-label": t("finance.month"), onchange: (e) => go(e.target.value) },
    months.map((m) => h("option", { value: m, selected: m === month }, m)),
  );
  return h("label", { class: "control" }, h("span", { class: "control-label" }, t("finance.month")), select);
}

function downloads(month) {
  const base = "/admin/reports/chargeback";
  return h(
    "span",
    { class: "exports" },
    h(
      "a",
      {
        class: "export",
        href: url(base, { month, format: "xlsx", lang: getLang() }),
        download: "",
        "data-format": "xlsx",
      },
      t("finance.workbook"),
    ),
    h("a", { class: "export", href: url(base, { month, format: "csv" }), download: "", "data-format": "csv" }, t("export.csv")),
  );
}

// The request log of a department over the month (its days in the operator's zone).
function logLink(department, month) {
  const q = new URLSearchParams({ department, since: `${month}-01`, until: `${addMonths(month, 1)}-01` });
  return h("a", { href: `#/requests?${q}`, "data-log": department }, department);
}

const unpricedTag = (r) => (r.currency ? null : h("span", { class: "tag" }, t("unpriced")));

// Hardware apportioned to each department, per currency (the summary's own figure when the
// server gives one).
function hardwareBy(rows) {
  const out = new Map();
  const add = (k, v) => out.set(k, (out.get(k) || 0n) + BigInt(v ?? 0));
  for (const r of rows) {
    add(`${r.department ?? ""}|${r.currency}`, r.cost_micros);
    add(`*|${r.currency}`, r.cost_micros); // the grand total's
  }
  return out;
}

function summary(res) {
  const hw = hardwareBy(res.hardware);
  const hwOf = (r) => {
    if (r.hardware_micros !== undefined) return r.hardware_micros;
    const v = r.currency ? hw.get(`${r.total ? "*" : (r.department ?? "")}|${r.currency}`) : undefined;
    return v === undefined ? null : v.toString();
  };
  const money = (key, label) => ({ key, label, kind: "money" });
  return table({
    name: "finance-summary",
    key: (r) => `${r.department ?? ""}|${r.currency ?? ""}`,
    rows: res.summary.filter((r) => r.row !== "total"),
    foot: res.totals.map((r) => ({ ...r, department: t("total"), total: true })),
    columns: [
      {
        key: "department",
        label: t("dim.department"),
        render: (r) => (r.total ? r.department : [r.department ? logLink(r.department, res.month) : t("none"), unpricedTag(r)]),
      },
      { key: "requests", label: t("col.requests"), kind: "int" },
      { key: "total_tokens", label: t("col.total_tokens"), kind: "int" },
      money("cost_micros", t("col.cost")),
      money("adjustments_micros", t("finance.adjustments")),
      { key: "hardware_micros", label: t("finance.hardware"), kind: "money", value: hwOf },
      money("amount_due_micros", t("finance.amount_due")),
      { key: "unpriced_requests", label: t("col.unpriced"), kind: "int" },
    ],
    empty: t("finance.nothing"),
  });
}

function detail(department, rows) {
  const label = (r) => {
    if (r.row === "total") return t("total");
    if (r.row === "subtotal") return `${none(r.project)} · ${t("finance.subtotal")}`;
    return none(r.project);
  };
  const body = table({
    name: "finance-detail",
    key: (r) => [r.row, r.project, r.user, r.model, r.currency].map((v) => v ?? "").join("|"),
    rows: rows.filter((r) => r.row !== "total"),
    foot: rows.filter((r) => r.row === "total"),
    columns: [
      { key: "project", label: t("dim.project"), value: label, cls: "nowrap" },
      { key: "user", label: t("dim.user"), value: (r) => (r.row === "group" ? none(r.user) : "") },
      {
        key: "model",
        label: t("col.model"),
        render: (r) => (r.row === "group" ? [r.model, unpricedTag(r)] : ""),
      },
      { key: "requests", label: t("col.requests"), kind: "int" },
      { key: "prompt_tokens", label: t("col.prompt_tokens"), kind: "int" },
      { key: "completion_tokens", label: t("col.completion_tokens"), kind: "int" },
      { key: "total_tokens", label: t("col.total_tokens"), kind: "int" },
      { key: "cost_micros", label: t("col.cost"), kind: "money" },
    ],
  });
  for (const tr of body.querySelectorAll("tbody tr")) {
    if (tr.dataset.key.startsWith("subtotal|")) tr.classList.add("subtotal");
  }
  return h(
    "details",
    { class: "dept", "data-department": department },
    h("summary", {}, department || t("none")),
    body,
  );
}

function versions(rows) {
  return table({
    name: "finance-versions",
    key: (r) => r.price_version,
    rows,
    columns: [
      { key: "model", label: t("col.model") },
      { key: "price_version", label: t("field.price_version"), cls: "mono" },
      { key: "effective_from", label: t("finance.effective_from"), kind: "when", cls: "nowrap" },
      { key: "input_per_1m", label: t("finance.input_per_1m"), value: (r) => price(r, "input") },
      { key: "cached_per_1m", label: t("finance.cached_per_1m"), value: (r) => price(r, "cached") },
      { key: "output_per_1m", label: t("finance.output_per_1m"), value: (r) => price(r, "output") },
      { key: "requests", label: t("col.requests"), kind: "int" },
      { key: "total_tokens", label: t("col.total_tokens"), kind: "int" },
      { key: "cost_micros", label: t("col.cost"), kind: "money" },
    ],
    empty: t("finance.no_versions"),
  });
}

// A per-million price. The server words it ("¥1000"); the page shows it as every other amount
// (¥1,000.00), keeping any decimals past the cent.
function price(r, what) {
  const micros = r[`${what}_per_1m_micros`];
  if (micros !== undefined && micros !== null) return fmtMoney(micros, r.currency);
  const text = r[`${what}_per_1m`];
  const m = typeof text === "string" ? text.match(/^(-?)[^\d-]*(\d+)(?:\.(\d{1,6}))?$/) : null;
  if (!m) return text ?? "—";
  const frac = m[3] || "";
  const value = BigInt(m[2]) * 1_000_000n + BigInt(frac.padEnd(6, "0") || "0");
  return fmtMoney(m[1] ? -value : value, r.currency, Math.max(2, frac.length));
}

function adjustments(rows) {
  const labels = { department: t("dim.department"), project: t("dim.project"), user: t("dim.user"), model: t("col.model") };
  const what = (r) =>
    r.request_id ||
    Object.keys(labels)
      .filter((k) => r[k])
      .map((k) => `${labels[k]} ${r[k]}`)
      .join(" · ") ||
    t("finance.everyone");
  return table({
    name: "finance-adjustments",
    key: (r) => r.adjustment_id,
    rows,
    columns: [
      { key: "at", label: t("finance.at"), kind: "when", cls: "nowrap" },
      { key: "target", label: t("finance.applies_to"), value: what },
      { key: "amount_micros", label: t("finance.amount"), kind: "money" },
      { key: "reason", label: t("col.reason"), cls: "wrap" },
      { key: "created_by", label: t("finance.created_by") },
      { key: "created_at", label: t("finance.created_at"), kind: "when", cls: "nowrap" },
    ],
    empty: t("finance.no_adjustments"),
  });
}

function hardware(rows) {
  return table({
    name: "finance-hardware",
    key: (r) => `${r.pool}|${r.department ?? ""}|${r.project ?? ""}`,
    rows,
    columns: [
      { key: "pool", label: t("finance.pool") },
      { key: "basis", label: t("finance.basis"), value: (r) => t(`finance.basis.${r.basis}`) },
      { key: "department", label: t("dim.department"), value: (r) => none(r.department) },
      { key: "project", label: t("dim.project"), value: (r) => none(r.project) },
      { key: "share", label: t("col.share"), value: (r) => (r.share === null ? null : r.share * 100), kind: "pct" },
      { key: "cost_micros", label: t("col.cost"), kind: "money" },
    ],
    empty: t("finance.no_hardware"),
  });
}

// The report's notes are English sentences; the Chinese page says the known ones in Chinese.
function noteText(n) {
  if (getLang() !== "zh") return n;
  const m = n.match(/^([\d,]+) requests? had no price in force/);
  if (m) return t("finance.note.unpriced", { n: m[1] });
  if (/^costs are in several currencies/.test(n)) return t("finance.note.currencies");
  return `${t("finance.note.lead")}${n}`;
}

export async function render(main, ctx) {
  const asked = ctx.query.get("month") || "";
  const month = MONTH.test(asked) ? asked : addMonths(today().iso.slice(0, 7), -1);
  const sumBox = h("div");
  const deptBox = h("div");
  const verBox = h("div");
  const adjBox = h("div");
  const hwBox = h("div");
  const notes = h("div");
  main.append(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, t("finance.title")),
      h("div", { class: "controls" }, monthPicker(month), downloads(month)),
    ),
    card(t("finance.summary", { month }), { wide: true, note: t("finance.summary.note", { tz: ctx.tz }) }, sumBox, notes),
    card(t("finance.detail"), { note: t("finance.detail.note") }, deptBox),
    card(t("finance.versions"), {}, verBox),
    card(t("finance.adjustments"), {}, adjBox),
    card(t("finance.hardware"), {}, hwBox),
  );
  main.querySelectorAll(".card").forEach((el, i) => {
    el.dataset.section = ["summary", "detail", "versions", "adjustments", "hardware"][i];
  });
  const res = api("/admin/reports/chargeback", { params: { month, format: "json", tz: ctx.tz } });
  await Promise.all([
    fill(sumBox, async () => summary(await res)),
    fill(notes, async () => (await res).notes.map((n) => h("p", { class: "note" }, noteText(n)))),
    fill(deptBox, async () => {
      const depts = Object.entries((await res).departments);
      if (!depts.length) return h("p", { class: "empty" }, t("finance.nothing"));
      return depts.map(([d, rows]) => detail(d, rows));
    }),
    fill(verBox, async () => versions((await res).price_versions)),
    fill(adjBox, async () => adjustments((await res).adjustments)),
    fill(hwBox, async () => hardware((await res).hardware)),
  ]);
}
