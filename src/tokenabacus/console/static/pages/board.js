// The article's board: who spends (departments, then projects, then users, by tokens and by
// cost), when (an hour-by-day heatmap), on what (cost per model), who bursts, where the month
// ends, and which alerts fired. Every table is a named report of the /admin API, exportable.

import { api } from "../api.js";
import { h } from "../dom.js";
import { addDays, fmtInt, fmtMoney, today } from "../format.js";
import { getLang, note, t } from "../i18n.js";
import { card, chart, exportLinks, fill, segmented, showError, table } from "../ui.js";
import { alerts, forecast, suspicious } from "./board-watch.js";
import { compact } from "./overview.js";

const PERIODS = ["today", "week", "month", "last_month", "range"];
const DAY = /^\d{4}-\d{2}-\d{2}$/;
const DIMS = ["department", "project", "user"];
const SHORT = 10;

function go(query) {
  const q = Object.fromEntries(Object.entries(query).filter(([, v]) => v));
  window.location.hash = `#/board?${new URLSearchParams(q)}`;
}

// The board's window as the report routes take it: a period, last month (the month before this
// one), or a range of days typed by the reader, "to" included (the routes' `until` is exclusive).
export function span(view) {
  if (view.period === "last_month") return { period: "month", previous: true };
  if (view.period === "range") return { since: view.since, until: addDays(view.to, 1) };
  return { period: view.period };
}

function rangePicker(view) {
  const from = h("input", { name: "since", value: view.since || "", placeholder: "yyyy-mm-dd", size: 10 });
  const to = h("input", { name: "to", value: view.to || "", placeholder: "yyyy-mm-dd", size: 10 });
  const apply = (e) => {
    e.preventDefault();
    const since = from.value.trim();
    const until = to.value.trim();
    if (!DAY.test(since) || !DAY.test(until) || until < since) {
      showError(new Error(t("board.bad_range")));
      return;
    }
    go({ period: "range", since, to: until, rank: view.rank });
  };
  return h(
    "form",
    { class: "range", "data-form": "range", onsubmit: apply },
    h("label", {}, h("span", { class: "control-label" }, t("board.from")), from),
    h("label", {}, h("span", { class: "control-label" }, t("board.to")), to),
    h("button", { type: "submit", class: "small" }, t("filter.apply")),
  );
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
function ranking(dim, win, rank, tz) {
  const body = h("div");
  const params = { by: dim, ...win, rank, tz };
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
    grid: { left: 128, right: 72, top: 8, bottom: 48 },
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
      data: days.map((d) => `${d} ${weekday(d)}`),
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

function peaks(win, tz) {
  const chartBox = h("div");
  const tableBox = h("div");
  const params = { ...win, tz };
  const el = card(
    t("board.peaks"),
    { actions: [exportLinks("/admin/reports/peaks", params)], note: t("board.peaks.note", { tz }) },
    chartBox,
    tableBox,
  );
  el.dataset.section = "peaks";
  fill(chartBox, async () => {
    const rows = await api("/admin/report", { params: { by: "day,hour", ...win, tz } });
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
function models(win, tz) {
  const body = h("div");
  const params = { ...win, tz };
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
          { key: "cost_per_1k_micros", label: t("col.per_1k"), kind: "price" },
          { key: "cost_per_request_micros", label: t("col.per_request"), kind: "price" },
          { key: "unpriced_requests", label: t("col.unpriced"), kind: "int" },
        ],
        empty: t("board.nothing"),
      }),
      ...res.notes.map((n) => h("p", { class: "note" }, note(n))),
    ];
  });
  return el;
}

export async function render(main, ctx) {
  const q = ctx.query;
  let period = PERIODS.includes(q.get("period")) ? q.get("period") : "week";
  const view = { period, since: q.get("since") || "", to: q.get("to") || "" };
  if (period === "range" && !(DAY.test(view.since) && DAY.test(view.to))) period = view.period = "week";
  const rank = q.get("rank") === "cost" ? "cost" : "tokens";
  view.rank = rank;
  const win = span(view);
  const tz = ctx.tz;
  const pick = (p) => {
    // "A chosen range" opens with the last 7 days filled in, for the reader to change.
    const end = today().iso;
    go(p === "range" ? { period: p, since: view.since || addDays(end, -6), to: view.to || end, rank } : { period: p, rank });
  };
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
          pick,
          "period",
        ),
        period === "range" ? rangePicker(view) : null,
        h("span", { class: "control-label" }, t("board.rank")),
        segmented(
          [
            ["tokens", t("rank.tokens")],
            ["cost", t("rank.cost")],
          ],
          rank,
          (r) => go({ ...view, rank: r }),
          "rank",
        ),
      ),
    ),
    ...DIMS.map((d) => ranking(d, win, rank, tz)),
    peaks(win, tz),
    models(win, tz),
    suspicious(win, tz),
    forecast(tz),
    alerts(tz),
  );
}
