// An alert as the page's reader reads it. The stored message is in the language the alert was
// sent in (an IM message); the page says it again in its own language from the alert's
// structured fields: kind, scope, figure, baseline, threshold, unit and period.

import { fmtInt, fmtWhen } from "./format.js";
import { t } from "./i18n.js";

const DIMS = { department: "scope.department", project: "scope.project", user: "scope.user", key_id: "scope.key" };
const DIMS_MODEL = { model: "field.model" };

// 1,234 for whole or large figures, 12.35 otherwise (as the server's IM text does).
export function figure(v) {
  if (v === null || v === undefined) return "—";
  const n = Number(v);
  if (Number.isInteger(n) || Math.abs(n) >= 100) return fmtInt(Math.round(n));
  return n.toLocaleString("en-US", { maximumFractionDigits: 2 });
}

function pct(v) {
  return v === null || v === undefined ? "—" : `${+Number(v).toFixed(1)}%`;
}

function unit(u) {
  return u ? t(`alert.unit.${u}`) : "";
}

// "project=campaign-618 tokens/month" -> "Project campaign-618 · tokens per month".
export function scopeText(scope) {
  if (!scope) return "—";
  const [head, ...rest] = scope.split(" ");
  const [dim, value] = head.includes("=") ? head.split(/=(.*)/s) : [null, head];
  const label = DIMS[dim] || DIMS_MODEL[dim];
  let text = label ? `${t(label)} ${value}` : head;
  const tail = rest.join(" ");
  const m = tail.match(/^(tokens|requests|cost:[A-Z]{3})\/(minute|day|week|month|total)$/);
  if (m) {
    const metric = m[1].startsWith("cost:") ? `${t("metric.cost")} (${m[1].slice(5)})` : t(`metric.${m[1]}`);
    text += ` · ${metric} ${t(`qperiod.${m[2]}`)}`;
  } else if (tail) {
    text += ` ${tail}`;
  }
  return text;
}

export function kindTitle(kind) {
  const key = `alert.kind.${kind}`;
  const s = t(key);
  return s === key ? kind : s;
}

// The day or period start an alert is about, when its period names one.
function when(period) {
  if (!period) return "";
  const at = period.split("@")[0];
  if (/^\d{13}$/.test(at)) return fmtWhen(Number(at));
  return /^\d{4}-\d{2}-\d{2}/.test(at) ? fmtWhen(at) : "";
}

export function message(a) {
  const vars = {
    scope: scopeText(a.scope),
    figure: figure(a.figure),
    baseline: figure(a.baseline),
    threshold: figure(a.threshold),
    figure_pct: pct(a.figure),
    threshold_pct: pct(a.threshold),
    unit: unit(a.unit),
    when: when(a.period),
  };
  if (a.kind === "spike" && a.baseline) vars.ratio = pct((100 * a.figure) / a.baseline);
  const known = ["spike", "burst", "drift", "error_rate", "quota", "upstream_down"];
  if (!known.includes(a.kind)) return t("alert.msg.other", vars);
  if (a.kind === "spike" && !a.baseline) return t("alert.msg.spike_new", vars);
  return t(`alert.msg.${a.kind}`, vars);
}
