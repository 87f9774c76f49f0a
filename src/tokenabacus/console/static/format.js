// Figures as people read them. Money arrives as integer micro-units (1 yuan = 1,000,000) and is
// formatted with BigInt arithmetic, so no digit changes on the way (floats lose digits above 2^53
// and round 0.1 + 0.2 wrongly). Tokens and counts are integers, grouped by thousands.

import { meta } from "./dom.js";

const SYMBOLS = { CNY: "¥", USD: "$", EUR: "€", GBP: "£", JPY: "JP¥", HKD: "HK$" };
export const TZ = meta("ta-tz", "UTC");

function big(v) {
  if (typeof v === "bigint") return v;
  if (typeof v === "number") return BigInt(Number.isInteger(v) ? v : Math.round(v));
  return BigInt(String(v).trim());
}

export function group(digits) {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

export function fmtInt(v) {
  if (v === null || v === undefined || v === "") return "—";
  const b = big(v);
  return (b < 0n ? "-" : "") + group((b < 0n ? -b : b).toString());
}

export function symbol(currency) {
  return SYMBOLS[currency] ?? (currency ? `${currency} ` : "");
}

// Minor units of a currency (what a person reads): cents for most, none for yen.
const MINOR = { JPY: 0, KRW: 0 };

export function minorUnits(currency) {
  return MINOR[currency] ?? 2;
}

// ¥1,234.57: the currency's minor units (2 for CNY and USD), half up, thousands grouped, so a
// column's figures all carry the same decimals. Unit prices (per 1k tokens, per request, one
// request's cost) pass `decimals` (4) to keep their digits; the ledger's exact figure is 6.
export function fmtMoney(micros, currency, decimals) {
  if (micros === null || micros === undefined) return "—";
  const keep = Math.max(0, Math.min(6, decimals ?? minorUnits(currency)));
  let m = big(micros);
  const neg = m < 0n;
  if (neg) m = -m;
  const unit = 10n ** BigInt(6 - keep);
  const q = (m + unit / 2n) / unit; // half up, in units of the last decimal kept
  const scale = 10n ** BigInt(keep);
  const whole = group((q / scale).toString());
  const text = keep ? `${whole}.${(q % scale).toString().padStart(keep, "0")}` : whole;
  return (neg && q !== 0n ? "-" : "") + symbol(currency) + text;
}

// A unit price or one request's cost: four decimals, the same in every row.
export function fmtPrice(micros, currency) {
  return fmtMoney(micros, currency, 4);
}

// A percentage the server already computed (12.3 means 12.3 %).
export function fmtPct(p, digits = 1) {
  if (p === null || p === undefined) return "—";
  return `${Number(p).toFixed(digits)}%`;
}

export function fmtRate(r) {
  return r === null || r === undefined ? "—" : `${(r * 100).toFixed(2)}%`;
}

// Change of `now` against `before` in percent, or null when there is nothing to compare with.
export function change(now, before) {
  if (now === null || now === undefined || before === null || before === undefined) return null;
  const a = big(now);
  const b = big(before);
  if (b === 0n) return a === 0n ? 0 : null;
  return (Number(a - b) / Number(b)) * 100;
}

const PARTS = new Intl.DateTimeFormat("en-CA", {
  timeZone: TZ,
  year: "numeric",
  month: "2-digit",
  day: "2-digit",
  hour: "2-digit",
  minute: "2-digit",
  second: "2-digit",
  hourCycle: "h23",
});

function parts(ms) {
  const o = {};
  for (const p of PARTS.formatToParts(new Date(ms))) o[p.type] = p.value;
  return o;
}

// 2026-11-03 14:05:09 in the operator's zone.
export function fmtTime(ms, seconds = true) {
  if (ms === null || ms === undefined) return "—";
  const p = parts(ms);
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}${seconds ? `:${p.second}` : ""}`;
}

// 2026-11-03 in the operator's zone.
export function fmtDate(ms) {
  if (ms === null || ms === undefined) return "—";
  const p = parts(ms);
  return `${p.year}-${p.month}-${p.day}`;
}

// A time the server wrote as text (ISO 8601 with an offset, "2026-12-01T00:00:00+08:00", or
// epoch milliseconds): shown as "2026-12-01 08:30" in the operator's zone, a midnight as the date
// alone. Text that is not a time is returned as it is.
export function fmtWhen(v) {
  if (v === null || v === undefined || v === "") return "—";
  const ms = typeof v === "number" ? v : /^\d{4}-\d{2}-\d{2}T/.test(v) ? Date.parse(v) : NaN;
  if (Number.isNaN(ms)) return String(v);
  const p = parts(ms);
  const day = `${p.year}-${p.month}-${p.day}`;
  return p.hour === "00" && p.minute === "00" && p.second === "00" ? day : `${day} ${p.hour}:${p.minute}`;
}

// Today's date (YYYY-MM-DD) and its year, month and day in the operator's zone.
export function today(ms = Date.now()) {
  const p = parts(ms);
  return { iso: `${p.year}-${p.month}-${p.day}`, year: +p.year, month: +p.month, day: +p.day };
}

export function daysInMonth(year, month) {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

export function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${fmtInt(ms)} ms`;
}

// The month n months from "YYYY-MM" (n may be negative).
export function addMonths(month, n) {
  const [y, m] = month.split("-").map(Number);
  const d = new Date(Date.UTC(y, m - 1 + n, 1));
  return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

// Micros as a plain decimal string (12500000 -> "12.5"): what a person types back into a form.
export function microsToDecimal(micros) {
  let m = big(micros);
  const neg = m < 0n;
  if (neg) m = -m;
  const frac = (m % 1_000_000n).toString().padStart(6, "0").replace(/0+$/, "");
  return `${neg ? "-" : ""}${m / 1_000_000n}${frac ? `.${frac}` : ""}`;
}

// A quota's amount: money for a cost limit (metric "cost:CNY"), else a count.
export function fmtAmount(metric, amount) {
  if (amount === null || amount === undefined) return "—";
  return metric && metric.startsWith("cost:") ? fmtMoney(amount, metric.slice(5)) : fmtInt(amount);
}

// A calendar date n days from an ISO date (calendar arithmetic, no time zone involved).
export function addDays(iso, n) {
  const [y, m, d] = iso.split("-").map(Number);
  return new Date(Date.UTC(y, m - 1, d + n)).toISOString().slice(0, 10);
}
