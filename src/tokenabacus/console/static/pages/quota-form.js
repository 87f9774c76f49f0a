// An admin sets a limit (or changes an existing one's number) from the quotas page: POST
// /admin/quotas with what `tokenabacus quota set` takes; the server checks and records it.

import { api } from "../api.js";
import { h } from "../dom.js";
import { t } from "../i18n.js";
import { showError } from "../ui.js";

const SCOPES = ["department", "project", "user", "key", "global"];
const METRICS = ["tokens", "requests", "cost"];
const PERIODS = ["day", "week", "month", "minute", "total"];

function select(name, values, label) {
  return h(
    "select",
    { name },
    values.map((v) => h("option", { value: v }, label(v))),
  );
}

function field(name, label, input) {
  return h("label", { class: "field", "data-field": name }, h("span", {}, label), input);
}

// The body of POST /admin/quotas. Amounts stay text for money (a decimal string is exact).
export function limitBody(form) {
  const data = new FormData(form);
  const get = (k) => String(data.get(k) || "").trim();
  const body = { scope: get("scope"), period: get("period") };
  if (body.scope !== "global") body.name = get("name");
  if (get("model")) body.model = get("model");
  const amount = get("amount").replace(/[,\s_]/g, "");
  const metric = get("metric");
  if (metric === "cost") {
    body.cost = amount;
    body.currency = get("currency") || "CNY";
  } else if (/^\d+$/.test(amount)) {
    body[metric] = Number(amount);
  } else {
    throw new Error(t("quota.bad_amount", { v: get("amount") }));
  }
  return body;
}

export function limitForm(done) {
  const form = h(
    "form",
    { class: "filters quota-form", "data-form": "set-limit" },
    field(
      "scope",
      t("col.scope"),
      select("scope", SCOPES, (s) => t(`scope.${s}`)),
    ),
    field("name", t("quota.name"), h("input", { name: "name", autocomplete: "off" })),
    field("model", t("col.model"), h("input", { name: "model", placeholder: t("quota.all_models") })),
    field(
      "metric",
      t("col.metric"),
      select("metric", METRICS, (m) => t(`metric.${m}`)),
    ),
    field("amount", t("col.limit"), h("input", { name: "amount", inputmode: "decimal", autocomplete: "off" })),
    field("currency", t("field.currency"), h("input", { name: "currency", value: "CNY", size: 4 })),
    field(
      "period",
      t("col.period"),
      select("period", PERIODS, (p) => t(`qperiod.${p}`)),
    ),
    h("div", { class: "field buttons" }, h("button", { type: "submit", class: "primary" }, t("quota.set"))),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const row = await api("/admin/quotas", { method: "POST", body: limitBody(form) });
      done(t("quota.set_done", { id: row.quota_id }));
    } catch (err) {
      showError(err);
      button.disabled = false;
    }
  });
  return form;
}
