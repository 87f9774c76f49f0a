// One request's full record: who sent it, when and how long it took, what was counted (ours
// beside the upstream's), what it cost and at which price version, and where the numbers came
// from. Each value carries the ledger's raw figure in data-value.

import { api } from "../api.js";
import { h } from "../dom.js";
import { fmtInt, fmtMoney, fmtTime } from "../format.js";
import { t } from "../i18n.js";
import { card } from "../ui.js";

function row(field, label, value, text, cls) {
  return h(
    "div",
    { class: "kv", "data-field": field },
    h("dt", {}, label),
    h(
      "dd",
      { class: cls, "data-value": value === null || value === undefined ? null : String(value) },
      text === null || text === undefined || text === "" ? "—" : text,
    ),
  );
}

const plain = (r, f, cls) => row(f, t(`field.${f}`), r[f], r[f] === null ? null : String(r[f]), cls);
const count = (r, f) => row(f, t(`field.${f}`), r[f], r[f] === null ? null : fmtInt(r[f]), "num");
const ms = (r, f) => row(f, t(`field.${f}`), r[f], r[f] === null ? null : `${fmtInt(r[f])} ms`, "num");

function group(title, ...rows) {
  return card(title, {}, h("dl", { class: "kvs" }, rows));
}

export async function render(main, ctx) {
  const id = ctx.id;
  main.append(h("p", { class: "crumbs" }, h("a", { href: "#/requests" }, `← ${t("request.back")}`)));
  const r = await api(`/admin/usage/${encodeURIComponent(id)}`);
  if (ctx.stale()) return;
  const diff = (ours, theirs) =>
    ours === null || theirs === null || ours === undefined || theirs === undefined ? null : ours - theirs;
  const dp = diff(r.prompt_tokens, r.upstream_prompt_tokens);
  const dc = diff(r.completion_tokens, r.upstream_completion_tokens);
  const signed = (n) => (n === null ? null : `${n > 0 ? "+" : ""}${fmtInt(n)}`);
  main.append(
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, t("request.title"), " ", h("code", { class: "rid" }, r.request_id)),
      h("span", { class: `status status-${r.status}` }, t(`status.${r.status}`)),
    ),
    h(
      "div",
      { class: "grid2", "data-record": r.request_id },
      group(
        t("request.identity"),
        plain(r, "request_id", "mono"),
        plain(r, "key_id", "mono"),
        plain(r, "user"),
        plain(r, "project"),
        plain(r, "department"),
        plain(r, "client_ip", "mono"),
        plain(r, "user_agent", "wrap"),
      ),
      group(
        t("request.call"),
        row("timestamp", t("field.timestamp"), r.timestamp, `${fmtTime(r.timestamp)} (${ctx.tz})`),
        plain(r, "model"),
        plain(r, "model_version", "mono"),
        plain(r, "engine"),
        plain(r, "endpoint", "mono"),
        row("stream", t("field.stream"), r.stream, r.stream ? t("yes") : t("no")),
        row("status", t("field.status"), r.status, t(`status.${r.status}`)),
        plain(r, "error_code", "mono"),
      ),
      group(t("request.timings"), ms(r, "duration_ms"), ms(r, "ttft_ms")),
      group(
        t("request.tokens"),
        count(r, "prompt_tokens"),
        count(r, "completion_tokens"),
        count(r, "total_tokens"),
        count(r, "cached_tokens"),
        row(
          "usage_source",
          t("field.usage_source"),
          r.usage_source,
          r.usage_source ? t(`source.${r.usage_source}`) : null,
        ),
        count(r, "upstream_prompt_tokens"),
        count(r, "upstream_completion_tokens"),
        row("prompt_difference", t("field.prompt_difference"), dp, signed(dp), "num"),
        row("completion_difference", t("field.completion_difference"), dc, signed(dc), "num"),
      ),
      group(
        t("request.cost"),
        row(
          "cost_micros",
          t("field.cost"),
          r.cost_micros,
          r.cost_micros === null ? t("unpriced") : fmtMoney(r.cost_micros, r.currency, 6), // the ledger's exact figure
          "num",
        ),
        plain(r, "currency"),
        plain(r, "price_version", "mono"),
      ),
      // The chain's links, when the ledger keeps one.
      r.hash || r.prev_hash
        ? group(t("request.integrity"), plain(r, "hash", "mono wrap"), plain(r, "prev_hash", "mono wrap"))
        : null,
    ),
  );
}
