// The article's board: who spends (departments, then projects, then users, by tokens and by
// cost), when (an hour-by-day heatmap), on what (cost per model), who bursts, where the month
// ends, and which alerts fired. Every table is a named report of the /admin API, exportable.

import { api } from "../api.js";
import { h } from "../dom.js";
import { daysInMonth, fmtInt, fmtMoney, today } from "../format.js";
import { getLang, note, t } from "../i18n.js";
import { card, chart, exportLinks, fill, segmented, table } from "../ui.js";
import { compact } from "./overview.js";

const PERIODS = ["today", "week", "month"];
const DIMS = ["department", "project", "user"];
const SHORT = 10;

function go(query) {
  window.location.hash = `#/board?${new URLSearchParams(query)}`;
}

const none = (v) => (v === null || v === undefined || v === "" ? t("none") : v);

function shareCell(pct) {
  if (pct === null || pct === undefined) return "—";
  return h(
    "span",
    { class: "share" },
    h("span", { class: "share-bar", style: `width:${Math.min(100, Math.max(0, pct))}%` }),
    h("span", { class: "share-text" }, `${Number(pct).toFixed(1)}%`),
  );
}

// Rankings -------------------------------------------------------------------------------------
function ranking(dim, period, rank, tz) {
  const body = h("div");
  const params = { by: dim, period, rank, tz };
  const el = card(t(`board.top.${dim}`), { actions: [exportLinks("/admin/reports/top", params)] }, body);
  el.dataset.section = `top-${dim}`;
  fill(body, async () => {
    const res = await api("/admin/reports/top", { params });
    const rows = res.rows.filter((r) => r.row !== "total");
    const total = res.rows.filter((r) => r.row === "total").map((r) => ({ ...r, [dim]: t("total") }));
    const cols = [
      { key: "tokens_rank", label: t("col.tokens_rank"), kind: "int", title: t("col.tokens_rank.title") },
      { key: dim, label: t(`dim.${dim}`), value: (r) => (r.row === "total" ? r[dim] : none(r[dim])), cls: "name" },
      { key: "requests", label: t("col.requests"), kind: "int" },
      { key: "total_tokens", label: t("col.total_tokens"), kind: "int" },
      { key: "tokens_share_pct", label: t("col.share"), render: (r) => shareCell(r.tokens_share_pct) },
      { key: "tokens_change_pct", label: t("col.change"), kind: "change", title: t("col.change.title") },
      { key: "cost_micros", label: t("col.cost"), kind: "money" },
      { key: "cost_share_pct", label: t("col.cost_share"), render: (r) => shareCell(r.cost_share_pct) },
      {
        key: "cost_change_pct",
        label: t("col.cost_change"),
        kind: "change",
        invert: true,
        title: t("col.change.title"),
      },
      { key: "cost_rank", label: t("col.cost_rank"), kind: "int", title: t("col.cost_rank.title") },
    ];
    // Departments are few; projects and users show their top ten until asked for all.
    const cut = dim === "department" ? rows.length : SHORT;
    const make = (n) =>
      table({
        name: `top-${dim}`,
        columns: cols,
        rows: rows.slice(0, n),
        foot: total,
        key: (r) => r[dim] ?? "",
        empty: t("board.nothing"),
      });
    const shown = make(cut);
    const more =
      rows.length > cut
        ? h(
            "button",
            {
              type: "button",
              class: "more small",
              onclick: (e) => {
                shown.replaceWith(make(rows.length));
                e.currentTarget.remove();
              },
            },
            t("board.show_all", { n: fmtInt(rows.length) }),
          )
        : null;
    return [shown, more, ...res.notes.map((n) => h("p", { class: "note" }, note(n)))];
  });
  return el;
}

// Peak hours -----------------------------------------------------------------------------------
function weekday(day) {
  // Noon UTC of that date: its weekday whatever the viewer's own zone.
  const d = new Date(`${day}T12:00:00Z`);
  return new Intl.DateTimeFormat(getLang() === "zh" ? "zh-CN" : "en-GB", { weekday: "short", timeZone: "UTC" }).format(
    d,
  );
}

function heatmap(rows) {
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const cells = new Map(rows.map((r) => [`${r.day}|${r.hour}`, r]));
  const data = [];
  let max = 0;
  days.forEach((day, y) => {
    for (let hour = 0; hour < 24; hour++) {
      const r = cells.get(`${day}|${hour}`);
      const v = r ? r.total_tokens : 0;
      max = Math.max(max, v);
      data.push([hour, y, v]);
    }
  });
  const box = h("div", { class: "chart heat", style: `height:${Math.max(160, 60 + days.length * 26)}px` });
  const option = {
    grid: { left: 96, right: 72, top: 8, bottom: 48 },
    tooltip: {
      formatter: (p) => {
        const [hour, y, v] = p.value;
        const r = cells.get(`${days[y]}|${hour}`);
        const lines = [
          `${days[y]} ${String(hour).padStart(2, "0")}:00–${String((hour + 1) % 24).padStart(2, "0")}:00`,
          `${t("col.total_tokens")}: ${fmtInt(v)}`,
          `${t("col.requests")}: ${fmtInt(r ? r.requests : 0)}`,
        ];
        if (r && r.cost_micros !== null) lines.push(`${t("col.cost")}: ${fmtMoney(r.cost_micros, r.currency)}`);
        return lines.join("<br>");
      },
    },
    xAxis: {
      type: "category",
      data: Array.from({ length: 24 }, (_, i) => String(i).padStart(2, "0")),
      splitArea: { show: true },
      name: t("board.hour"),
      nameLocation: "middle",
      nameGap: 26,
    },
    yAxis: {
      type: "category",
      data: days.map((d) => `${d.slice(5)} ${weekday(d)}`),
      inverse: true,
      splitArea: { show: true },
    },
    visualMap: {
      min: 0,
      max: max || 1,
      calculable: false,
      orient: "vertical",
      right: 4,
      top: "middle",
      itemHeight: Math.max(80, days.length * 26 - 20),
      itemWidth: 12,
      text: [compact(max), "0"],
      textStyle: { color: "#667085", fontSize: 11 },
      inRange: { color: ["#f3f6fc", "#a9c1ff", "#4f7cff", "#1d3fa8"] },
    },
    series: [{ type: "heatmap", data, emphasis: { itemStyle: { borderColor: "#333", borderWidth: 1 } } }],
  };
  return { box, option, days };
}

function peaks(period, tz) {
  const chartBox = h("div");
  const tableBox = h("div");
  const params = { period, tz };
  const el = card(
    t("board.peaks"),
    { actions: [exportLinks("/admin/reports/peaks", params)], note: t("board.peaks.note", { tz }) },
    chartBox,
    tableBox,
  );
  el.dataset.section = "peaks";
  fill(chartBox, async () => {
    const rows = await api("/admin/report", { params: { by: "day,hour", period, tz } });
    if (!rows.length) return h("p", { class: "empty" }, t("board.nothing"));
    const c = heatmap(rows);
    return [c.box, () => chart(c.box, c.option)];
  });
  fill(tableBox, async () => {
    const res = await api("/admin/reports/peaks", { params });
    return table({
      name: "peaks",
      key: (r) => r.day,
      rows: res.rows,
      columns: [
        { key: "day", label: t("col.day"), value: (r) => `${r.day} ${weekday(r.day)}` },
        { key: "peak_hour", label: t("col.peak_hour") },
        { key: "requests", label: t("col.requests"), kind: "int" },
        { key: "total_tokens", label: t("col.total_tokens"), kind: "int" },
        { key: "share_of_day_pct", label: t("col.share_of_day"), kind: "pct" },
        { key: "day_tokens", label: t("col.day_tokens"), kind: "int" },
      ],
      empty: t("board.nothing"),
    });
  });
  return el;
}

// Models ---------------------------------------------------------------------------------------
function models(period, tz) {
  const body = h("div");
  const params = { period, tz };
  const el = card(t("board.models"), { actions: [exportLinks("/admin/reports/models", params)] }, body);
  el.dataset.section = "models";
  fill(body, async () => {
    const res = await api("/admin/reports/models", { params });
    return [
      table({
        name: "models",
        key: (r) => `${r.model}|${r.currency ?? ""}`,
        rows: res.rows,
        columns: [
          {
            key: "model",
            label: t("col.model"),
            // Records charged nothing (no price, or refused before any token) form their own row.
            render: (r) => [r.model, r.currency ? null : h("span", { class: "tag" }, t("unpriced"))],
          },
          { key: "requests", label: t("col.requests"), kind: "int" },
          { key: "prompt_tokens", label: t("col.prompt_tokens"), kind: "int" },
          { key: "completion_tokens", label: t("col.completion_tokens"), kind: "int" },
          { key: "total_tokens", label: t("col.total_tokens"), kind: "int" },
          { key: "cost_micros", label: t("col.cost"), kind: "money" },
          { key: "cost_per_1k_micros", label: t("col.per_1k"), kind: "money" },
          { key: "cost_per_request_micros", label: t("col.per_request"), kind: "money" },
          { key: "unpriced_requests", label: t("col.unpriced"), kind: "int" },
        ],
        empty: t("board.nothing"),
      }),
      ...res.notes.map((n) => h("p", { class: "note" }, note(n))),
    ];
  });
  return el;
}

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

function suspicious(period, tz) {
  const body = h("div");
  const params = { period, tz };
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
function forecast(tz) {
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
function figure(v) {
  if (v === null || v === undefined) return "—";
  return Number.isInteger(v) ? fmtInt(v) : Number(v).toLocaleString("en-US", { maximumFractionDigits: 2 });
}

function alerts(tz) {
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
          render: (r) => h("span", { class: `sev sev-${r.severity}` }, t(`sev.${r.severity}`)),
        },
        { key: "rule", label: t("col.rule"), cls: "nowrap" },
        { key: "scope", label: t("col.scope") },
        { key: "figure", label: t("col.figure"), value: (r) => figure(r.figure), cls: "num" },
        { key: "threshold", label: t("col.threshold"), value: (r) => figure(r.threshold), cls: "num" },
        { key: "message", label: t("col.message"), cls: "wrap" },
      ],
      empty: t("board.no_alerts"),
    });
  });
  return el;
}

export async function render(main, ctx) {
  const period = PERIODS.includes(ctx.query.get("period")) ? ctx.query.get("period") : "week";
  const rank = ctx.query.get("rank") === "cost" ? "cost" : "tokens";
  const tz = ctx.tz;
  main.append(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, t("board.title")),
      h(
        "div",
        { class: "controls" },
        h("span", { class: "control-label" }, t("board.period")),
        segmented(
          PERIODS.map((p) => [p, t(`period.${p}`)]),
          period,
          (p) => go({ period: p, rank }),
          "period",
        ),
        h("span", { class: "control-label" }, t("board.rank")),
        segmented(
          [
            ["tokens", t("rank.tokens")],
            ["cost", t("rank.cost")],
          ],
          rank,
          (r) => go({ period, rank: r }),
          "rank",
        ),
      ),
    ),
    ...DIMS.map((d) => ranking(d, period, rank, tz)),
    peaks(period, tz),
    models(period, tz),
    suspicious(period, tz),
    forecast(tz),
    alerts(tz),
  );
}
