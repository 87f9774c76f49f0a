// The console: a hash-routed page over the /admin API. #/overview, #/board, #/finance?month=,
// #/requests (with its filters in the hash's query), #/requests/<request_id>, #/quotas, and for
// admins #/keys.

import { api, SignedOut } from "./api.js";
import { h } from "./dom.js";
import { TZ } from "./format.js";
import { applyStatic, getLang, setLang, t } from "./i18n.js";
import * as board from "./pages/board.js";
import * as finance from "./pages/finance.js";
import * as keys from "./pages/keys.js";
import * as overview from "./pages/overview.js";
import * as quotas from "./pages/quotas.js";
import * as request from "./pages/request.js";
import * as requests from "./pages/requests.js";
import { disposeCharts, hideError, showError } from "./ui.js";

const main = document.getElementById("main");
let me = null;
let rendering = 0;

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(query) };
}

function pick(parts) {
  const [page, id] = parts;
  if (page === "board") return ["board", board];
  if (page === "finance") return ["finance", finance];
  if (page === "keys") return ["keys", keys];
  if (page === "requests" && id) return ["requests", request];
  if (page === "requests") return ["requests", requests];
  if (page === "quotas") return ["quotas", quotas];
  return ["overview", overview];
}

async function route() {
  const run = ++rendering;
  const { parts, query } = parseHash();
  const [name, page] = pick(parts);
  for (const a of document.querySelectorAll(".tabs a")) {
    a.classList.toggle("active", a.dataset.page === name);
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  hideError();
  disposeCharts();
  main.replaceChildren();
  main.dataset.page = name;
  document.title = `${t(`nav.${name}`)} · tokenabacus`;
  try {
    // A stale render (the user clicked on) must not paint over the newer page.
    await page.render(main, { me, id: parts[1], query, tz: TZ, stale: () => run !== rendering });
  } catch (e) {
    if (!(e instanceof SignedOut)) showError(e);
  }
}

// Tabs the page template does not list: finance for every reader, keys for admins only.
function addTabs(role) {
  const nav = document.querySelector("nav.tabs");
  const tab = (name) => h("a", { href: `#/${name}`, "data-page": name, "data-i18n": `nav.${name}` }, t(`nav.${name}`));
  if (!nav.querySelector("[data-page=finance]")) nav.querySelector("[data-page=board]").after(tab("finance"));
  if (role === "admin" && !nav.querySelector("[data-page=keys]")) nav.append(tab("keys"));
}

function showWho() {
  const who = document.getElementById("who");
  if (!me) return;
  const scope = me.scope ? `${t(`scope.${me.scope.kind}`)}: ${me.scope.value}` : t("scope.all");
  who.replaceChildren(
    h("span", { class: `role role-${me.role}`, "data-role": me.role }, t(`role.${me.role}`)),
    h("span", { class: "who-name", title: me.key_id }, me.name || me.user || me.key_id),
    h("span", { class: "who-scope", "data-scope": me.scope ? `${me.scope.kind}:${me.scope.value}` : "" }, scope),
  );
}

function paintStatic() {
  applyStatic(document);
  document.getElementById("tz-name").textContent = TZ;
  showWho();
}

async function start() {
  document.getElementById("banner-close").addEventListener("click", hideError);
  document.getElementById("lang").addEventListener("click", () => {
    setLang(getLang() === "zh" ? "en" : "zh");
    paintStatic();
    route();
  });
  paintStatic();
  try {
    me = await api("/admin/me");
  } catch (e) {
    showError(e);
    return;
  }
  document.body.dataset.role = me.role;
  addTabs(me.role);
  showWho();
  window.addEventListener("hashchange", route);
  if (!window.location.hash) window.history.replaceState(null, "", "#/overview");
  route();
}

start();
