// Shared pieces of the pages: the error banner, cards, tables with export links, and charts.

import { ApiError, SignedOut, url } from "./api.js";
import { h } from "./dom.js";
import { describe } from "./errors.js";
import { fmtInt, fmtMoney, fmtPct, fmtPrice, fmtTime, fmtWhen } from "./format.js";
import { t } from "./i18n.js";

// The banner -----------------------------------------------------------------------------------
export function showError(err) {
  if (err instanceof SignedOut) return;
  const banner = document.getElementById("banner");
  const text = document.getElementById("banner-text");
  text.textContent = describe(err); // in the page's language

  banner.hidden = false;
  if (!(err instanceof ApiError)) console.error(err);
}

export function hideError() {
  const banner = document.getElementById("banner");
  if (banner) banner.hidden = true;
}

// Layout ---------------------------------------------------------------------------------------
export function card(title, { id, actions = [], note, wide } = {}, ...body) {
  return h(
    "section",
    { class: `card${wide ? " wide" : ""}`, id },
    h("header", { class: "card-head" }, h("h2", {}, title), h("div", { class: "card-actions" }, actions)),
    note ? h("p", { class: "note" }, note) : null,
    body,
  );
}

export function loading() {
  return h("p", { class: "loading" }, t("loading"));
}

// A section that loads on its own: a failure shows in the banner and in place, never silently,
// and does not take the rest of the page down.
// `make` returns nodes, and may add functions to run once they are in the page (a chart needs
// its box laid out before it can draw).
export async function fill(container, make) {
  container.replaceChildren(loading());
  try {
    const out = [].concat(await make());
    container.replaceChildren(...out.filter((n) => n !== null && n !== undefined && typeof n !== "function"));
    for (const after of out.filter((n) => typeof n === "function")) after();
  } catch (e) {
    if (e instanceof SignedOut) return;
    showError(e);
    container.replaceChildren(h("p", { class: "failed" }, `${t("failed")}: ${describe(e)}`));
  }
}

// "Export CSV" and "Export XLSX": the same admin route in another format. A plain link: the
// session cookie authenticates the GET and the browser downloads what the server builds.
export function exportLinks(path, params = {}) {
  return h(
    "span",
    { class: "exports" },
    ["csv", "xlsx"].map((f) =>
      h(
        "a",
        { class: "export", href: url(path, { ...params, format: f }), download: "", "data-format": f },
        t(`export.${f}`),
      ),
    ),
  );
}

export function segmented(options, current, onPick, name) {
  return h(
    "div",
    { class: "segmented", role: "group", "data-name": name },
    options.map(([value, label]) =>
      h(
        "button",
        {
          type: "button",
          class: value === current ? "on" : "",
          "aria-pressed": value === current ? "true" : "false",
          "data-value": value,
          onclick: () => onPick(value),
        },
        label,
      ),
    ),
  );
}

// Tables ---------------------------------------------------------------------------------------
// A column: { key, label, kind: "int" | "money" | "price" | "pct" | "change" | "text" | "time" | "when",
//   value(row) (raw figure, default row[key]), currency(row), render(row) (a custom cell) }.
const NUMERIC = new Set(["int", "money", "price", "pct", "change"]);

export function changeCell(p) {
  if (p === null || p === undefined) return h("span", { class: "chg none" }, "—");
  const dir = p > 0 ? "up" : p < 0 ? "down" : "flat";
  const arrow = p > 0 ? "▲" : p < 0 ? "▼" : "";
  return h("span", { class: `chg ${dir}` }, `${arrow} ${Math.abs(p).toFixed(1)}%`.trim());
}

function cell(col, row, total) {
  const v = col.value ? col.value(row) : row[col.key];
  const attrs = { "data-col": col.key, class: NUMERIC.has(col.kind) ? "num" : col.cls || null };
  // A totals row leaves the figures that do not add up (ranks, shares, changes) empty.
  if (total && (v === null || v === undefined) && (col.kind || col.render)) return h("td", attrs);
  if (col.render) return h("td", attrs, col.render(row));
  if (v !== null && v !== undefined && ["int", "money", "price"].includes(col.kind)) attrs["data-value"] = String(v);
  let text;
  switch (col.kind) {
    case "int":
      text = fmtInt(v);
      break;
    case "money":
      text = fmtMoney(v, col.currency ? col.currency(row) : row.currency);
      break;
    case "price":
      text = fmtPrice(v, col.currency ? col.currency(row) : row.currency);
      break;
    case "pct":
      text = fmtPct(v);
      break;
    case "change": {
      const c = changeCell(v);
      if (col.invert) c.classList.add("invert"); // rising is the bad news (cost)
      return h("td", attrs, c);
    }
    case "time":
      text = fmtTime(v);
      break;
    case "when":
      text = fmtWhen(v);
      break;
    default:
      text = v === null || v === undefined || v === "" ? "—" : String(v);
  }
  return h("td", attrs, text);
}

export function table({ name, columns, rows, key, onRow, foot = [], empty }) {
  if (!rows.length && !foot.length) return h("p", { class: "empty", "data-table": name }, empty || t("empty"));
  const tr = (row, cls) => {
    const attrs = { class: cls, "data-key": key ? String(key(row) ?? "") : null };
    if (onRow && cls !== "total") {
      attrs.tabindex = "0";
      attrs.class = `${cls || ""} link`.trim();
      attrs.onclick = () => onRow(row);
      attrs.onkeydown = (e) => e.key === "Enter" && onRow(row);
    }
    return h(
      "tr",
      attrs,
      columns.map((c) => cell(c, row, cls === "total")),
    );
  };
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "data", "data-table": name },
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          columns.map((c) => h("th", { class: NUMERIC.has(c.kind) ? "num" : null, title: c.title }, c.label)),
        ),
      ),
      h(
        "tbody",
        {},
        rows.map((r) => tr(r)),
      ),
      foot.length
        ? h(
            "tfoot",
            {},
            foot.map((r) => tr(r, "total")),
          )
        : null,
    ),
  );
}

// Charts ---------------------------------------------------------------------------------------
// ECharts is loaded as a classic script (vendor/echarts.min.js); charts live until the next page.
const charts = new Set();

export function chart(el, option) {
  if (!window.echarts) {
    el.replaceChildren(h("p", { class: "failed" }, t("chart.missing")));
    return null;
  }
  const c = window.echarts.init(el, null, { renderer: "canvas" });
  c.setOption(option);
  charts.add(c);
  return c;
}

export function disposeCharts() {
  for (const c of charts) c.dispose();
  charts.clear();
}

window.addEventListener("resize", () => {
  for (const c of charts) c.resize();
});
