// The board's watchful half: who bursts above its usual rate, where the month ends (forecast),
// and which alerts fired, each in the page's language.

import * as alert from "../alerts.js";
import { api } from "../api.js";
import { h } from "../dom.js";
import { daysInMonth, fmtInt, fmtMoney, today } from "../format.js";
import { getLang, t } from "../i18n.js";
import { card, exportLinks, fill, table } from "../ui.js";

const none = (v) => (v === null || v === undefined || v === "" ? t("none") : v);

// Suspicious callers ---------------------------------------------------------------------------
// The server words each reason in English; the Chinese page says the same from the row's figures
// (flagged_on names them), never by parsing the English.
function reason(r) {
  if (getLang() !== "zh") return r.reason;
  const one = (what) => {
    const peak = fmtInt(r[`peak_${what}_per_minute`]);
    const usual = r[`baseline_${what}_per_minute`];
    if (usual === null || usual === undefined) return t(`reason.${what}.new`, { peak });
    const ratio = r[`${what}_ratio`];
    const fixed1 = (v) => Number(v).toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
    return t(`reason.${what}`, { peak, ratio: fixed1(ratio), usual: fixed1(usual) });
  };
  return (r.flagged_on || "").split(",").filter(Boolean).map(one).join("；");
}

export function suspicious(win, tz) {
  const body = h("div");
  const params = { ...win, tz };
  const el = card(t("board.suspicious"), { actions: [exportLinks("/admin/reports/suspicious", params)] }, body);
  el.dataset.section = "suspicious";
  fill(body, async () => {
    const res = await api("/admin/reports/suspicious", { params });
    return [
      table({
        name: "suspicious",
        key: (r) => r.key_id,
        rows: res.rows,
        columns: [
          { key: "key_id", label: t("col.key_id") },
          { key: "user", label: t("dim.user"), cls: "nowrap" },
          { key: "project", label: t("dim.project"), cls: "nowrap" },
          { key: "department", label: t("dim.department"), cls: "nowrap" },
          { key: "reason", label: t("col.reason"), value: (r) => reason(r), cls: "wrap" },
          { key: "peak_requests_per_minute", label: t("col.peak_rpm"), kind: "int" },
          { key: "peak_requests_at", label: t("col.peak_at"), cls: "nowrap" },
          { key: "peak_tokens_per_minute", label: t("col.peak_tpm"), kind: "int" },
          { key: "peak_tokens_at", label: t("col.peak_at"), cls: "nowrap" },
        ],
        empty: t("board.no_suspicious"),
      }),
      h("p", { class: "note" }, t("board.suspicious.note")),
    ];
  });
  return el;
}

// The forecast's notes, said in Chinese on the Chinese page (the server words them in English).
function forecastNote(note) {
  if (!note || getLang() !== "zh") return note;
  return note
    .split("; ")
    .map((part) => {
      let m = part.match(/^([\d,]+) unpriced records? in the history: cost covers the rest$/);
      if (m) return t("fnote.unpriced", { n: m[1] });
      m = part.match(/^(cost: )?only (\d+) days? of .*\(a forecast needs (\d+)\)$/);
      if (m) return t("fnote.short", { n: m[2], need: m[3] });
      if (/could not be fitted/.test(part)) return t("fnote.unfit");
      if (/^no priced records/.test(part)) return t("fnote.no_price");
      return part;
    })
    .join("；");
}

// Month-end forecast -----------------------------------------------------------------------------
// The server's month-end horizon: the month's complete days as recorded, plus the forecast of
// the days left (today included), so the export holds the same figures as the table.
export function forecast(tz) {
  const body = h("div");
  const now = today();
  const left = daysInMonth(now.year, now.month) - now.day + 1;
  const params = { by: "department", horizon: "month-end", tz };
  const el = card(
    t("board.forecast"),
    {
      actions: [exportLinks("/admin/forecast", params)],
      note: t("board.forecast.note", { month: now.iso.slice(0, 7), days: left }),
    },
    body,
  );
  el.dataset.section = "forecast";
  fill(body, async () => {
    const rows = await api("/admin/forecast", { params });
    const range = (r) =>
      r.month_cost_low_micros === null
        ? "—"
        : `${fmtMoney(r.month_cost_low_micros, r.currency)} – ${fmtMoney(r.month_cost_high_micros, r.currency)}`;
    return table({
      name: "forecast",
      key: (r) => `${r.department ?? ""}|${r.currency ?? ""}`,
      rows,
      columns: [
        { key: "department", label: t("dim.department"), value: (r) => none(r.department) },
        { key: "so_far_tokens", label: t("col.so_far_tokens"), kind: "int" },
        { key: "tokens", label: t("col.rest_tokens"), kind: "int" },
        { key: "month_tokens", label: t("col.month_tokens"), kind: "int" },
        { key: "so_far_cost_micros", label: t("col.so_far_cost"), kind: "money" },
        { key: "cost_micros", label: t("col.rest_cost"), kind: "money" },
        { key: "month_cost_micros", label: t("col.month_cost"), kind: "money" },
        { key: "range", label: t("col.range"), render: range, cls: "nowrap" },
        { key: "note", label: t("col.note"), value: (r) => forecastNote(r.note), cls: "wrap muted" },
      ],
      empty: t("board.nothing"),
    });
  });
  return el;
}

// Alerts ---------------------------------------------------------------------------------------
// Said in the page's language from the alert's fields (alerts.js), not the stored IM text.
export function alerts(tz) {
  const body = h("div");
  const params = { limit: 50, tz };
  const el = card(t("board.alerts"), { actions: [exportLinks("/admin/alerts", params)] }, body);
  el.dataset.section = "alerts";
  fill(body, async () => {
    const rows = await api("/admin/alerts", { params });
    return table({
      name: "alerts",
      key: (r) => r.id,
      rows,
      columns: [
        { key: "fired_at", label: t("col.fired_at"), kind: "time", cls: "nowrap" },
        {
          key: "severity",
          label: t("col.severity"),
          cls: "nowrap",
          render: (r) => h("span", { class: `sev sev-${r.severity}` }, t(`sev.${r.severity}`)),
        },
        {
          key: "rule",
          label: t("col.alert"),
          cls: "nowrap",
          render: (r) => h("span", { title: r.rule, "data-rule": r.rule }, alert.kindTitle(r.kind)),
        },
        { key: "scope", label: t("col.scope"), value: (r) => alert.scopeText(r.scope), cls: "nowrap" },
        { key: "figure", label: t("col.figure"), value: (r) => alert.figure(r.figure), cls: "num" },
        { key: "threshold", label: t("col.threshold"), value: (r) => alert.figure(r.threshold), cls: "num" },
        { key: "message", label: t("col.message"), value: (r) => alert.message(r), cls: "wrap" },
      ],
      empty: t("board.no_alerts"),
    });
  });
  return el;
}
