// Today and this month at a glance, each figure beside the same stretch of the period before,
// and the month's days as a chart.

import { api } from "../api.js";
import { h } from "../dom.js";
import { addDays, change, fmtInt, fmtMoney, fmtRate, today } from "../format.js";
import { t } from "../i18n.js";
import { card, changeCell, chart, fill } from "../ui.js";

// Which direction is good news: more traffic is neutral-to-good; more spend and more errors are
// what people watch for, so they rise in red.
const UP_IS_BAD = new Set(["cost", "error_rate"]);
const DAYS = 30; // the chart's span, today included

function mainCost(costs) {
  // The currency most is charged in (CNY in practice); others listed under it, never added.
  const sorted = [...(costs || [])].sort((a, b) => (b.cost_micros > a.cost_micros ? 1 : -1));
  return { first: sorted[0] || null, others: sorted.slice(1) };
}

function kpi(metric, label, value, text, pctChange, previousText, extra) {
  // No change to show (nothing before to compare with): no lone dash either.
  const arrow = pctChange === null || pctChange === undefined ? "" : changeCell(pctChange);
  if (arrow && UP_IS_BAD.has(metric)) arrow.classList.add("invert");
  return h(
    "div",
    { class: "kpi", "data-metric": metric },
    h("div", { class: "kpi-label" }, label),
    h("div", { class: "kpi-value", "data-value": value === null ? null : String(value) }, text),
    h("div", { class: "kpi-change" }, arrow, h("span", { class: "kpi-prev" }, previousText)),
    extra ? h("div", { class: "kpi-extra" }, extra) : null,
  );
}

function period(name, p) {
  const cur = p.current;
  const prev = p.previous;
  const before = t(`overview.vs.${name}`);
  const cost = mainCost(cur.costs);
  const prevCost = (prev.costs || []).find((c) => cost.first && c.currency === cost.first.currency);
  const rateChange =
    cur.error_rate === null || prev.error_rate === null ? null : (cur.error_rate - prev.error_rate) * 100;
  const rate = kpi(
    "error_rate",
    t("kpi.error_rate"),
    cur.error_rate,
    fmtRate(cur.error_rate),
    null,
    `${before}: ${fmtRate(prev.error_rate)}`,
    t("kpi.errors", { n: fmtInt(cur.errors) }),
  );
  // Error rate changes in percentage points, not percent of a percent.
  if (rateChange !== null) {
    rate.querySelector(".kpi-change").prepend(h("span", { class: "chg" }));
    const dir = rateChange > 0 ? "up" : rateChange < 0 ? "down" : "flat";
    const arrow = rateChange > 0 ? "▲" : rateChange < 0 ? "▼" : "";
    rate
      .querySelector(".chg")
      .replaceWith(h("span", { class: `chg ${dir} invert` }, `${arrow} ${Math.abs(rateChange).toFixed(2)} ${t("pp")}`));
  }
  return h(
    "div",
    { class: "kpi-group", "data-period": name },
    h("h2", { class: "kpi-title" }, t(`overview.${name}`), h("span", { class: "muted" }, ` · ${p.label}`)),
    h(
      "div",
      { class: "kpis" },
      kpi(
        "total_tokens",
        t("kpi.tokens"),
        cur.total_tokens,
        fmtInt(cur.total_tokens),
        change(cur.total_tokens, prev.total_tokens),
        `${before}: ${fmtInt(prev.total_tokens)}`,
        t("kpi.split", { p: fmtInt(cur.prompt_tokens), c: fmtInt(cur.completion_tokens) }),
      ),
      kpi(
        "requests",
        t("kpi.requests"),
        cur.requests,
        fmtInt(cur.requests),
        change(cur.requests, prev.requests),
        `${before}: ${fmtInt(prev.requests)}`,
      ),
      kpi(
        "cost",
        t("kpi.cost"),
        cost.first ? cost.first.cost_micros : null,
        cost.first ? fmtMoney(cost.first.cost_micros, cost.first.currency) : "—",
        cost.first && prevCost ? change(cost.first.cost_micros, prevCost.cost_micros) : null,
        `${before}: ${prevCost ? fmtMoney(prevCost.cost_micros, prevCost.currency) : "—"}`,
        [
          ...cost.others.map((c) => `+ ${fmtMoney(c.cost_micros, c.currency)} `),
          cur.unpriced_requests ? t("kpi.unpriced", { n: fmtInt(cur.unpriced_requests) }) : null,
        ],
      ),
      rate,
    ),
  );
}

function dailyChart(rows) {
  // by=day,currency: tokens summed over currencies; cost in the main currency only.
  const days = new Map();
  const spend = new Map();
  for (const r of rows) {
    const d = days.get(r.day) || { tokens: 0, requests: 0, cost: 0n };
    d.tokens += r.total_tokens;
    d.requests += r.requests;
    days.set(r.day, d);
    if (r.currency && r.cost_micros !== null)
      spend.set(r.currency, (spend.get(r.currency) || 0n) + BigInt(r.cost_micros));
  }
  const currency = [...spend.entries()].sort((a, b) => (b[1] > a[1] ? 1 : -1))[0]?.[0];
  for (const r of rows) {
    if (r.currency === currency && r.cost_micros !== null) days.get(r.day).cost += BigInt(r.cost_micros);
  }
  const labels = [...days.keys()].sort();
  const box = h("div", { class: "chart", id: "daily-chart" });
  const option = {
    grid: { left: 64, right: 64, top: 36, bottom: 28 },
    tooltip: { trigger: "axis" },
    legend: { data: [t("kpi.tokens"), t("kpi.cost")], top: 0 },
    xAxis: { type: "category", data: labels }, // yyyy-mm-dd, as every date on the page
    yAxis: [
      { type: "value", name: t("kpi.tokens"), axisLabel: { formatter: (v) => compact(v) } },
      {
        type: "value",
        name: t("kpi.cost"),
        axisLabel: { formatter: (v) => `${currency === "CNY" ? "¥" : ""}${compact(v)}` },
      },
    ],
    series: [
      {
        name: t("kpi.tokens"),
        type: "bar",
        data: labels.map((d) => days.get(d).tokens),
        itemStyle: { color: "#4f7cff" },
      },
      {
        name: t("kpi.cost"),
        type: "line",
        yAxisIndex: 1,
        smooth: false,
        data: labels.map((d) => Number(days.get(d).cost) / 1e6), // a chart's line only: the figures are in the tables
        itemStyle: { color: "#e8833a" },
      },
    ],
  };
  option.tooltip.formatter = (items) => {
    const day = labels[items[0].dataIndex];
    const d = days.get(day);
    return [
      day,
      `${t("kpi.tokens")}: ${fmtInt(d.tokens)}`,
      `${t("kpi.requests")}: ${fmtInt(d.requests)}`,
      `${t("kpi.cost")}: ${currency ? fmtMoney(d.cost, currency) : "—"}`,
    ].join("<br>");
  };
  return { box, option, empty: !labels.length };
}

export function compact(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return `${+(v / 1e9).toFixed(1)}B`;
  if (a >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (a >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return String(+v.toFixed(2));
}

export async function render(main, ctx) {
  const top = h("div", { class: "overview" });
  const daily = h("div");
  main.append(h("h1", {}, t("overview.title")), top, card(t("overview.daily", { n: DAYS }), { wide: true }, daily));
  await Promise.all([
    fill(top, async () => {
      const ov = await api("/admin/reports/overview", { params: { tz: ctx.tz } });
      return [period("today", ov.today), period("month", ov.month)];
    }),
    fill(daily, async () => {
      const since = addDays(today().iso, -(DAYS - 1));
      const rows = await api("/admin/report", { params: { by: "day,currency", since, tz: ctx.tz } });
      const c = dailyChart(rows);
      if (c.empty) return h("p", { class: "empty" }, t("empty"));
      return [c.box, () => chart(c.box, c.option)];
    }),
  ]);
}
