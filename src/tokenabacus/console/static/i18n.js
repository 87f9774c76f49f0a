// Every string the console shows, in English and Chinese. The language is the reader's choice
// (the header's toggle, remembered in localStorage), else the browser's (zh* reads Chinese).
// Numbers, money and times are formatted in format.js, the same way in both languages.

import { EN as EN_PAGES } from "./lang/en.js";
import { EN_OPS } from "./lang/en-ops.js";
import { ZH as ZH_PAGES } from "./lang/zh.js";
import { ZH_OPS } from "./lang/zh-ops.js";

const EN = { ...EN_PAGES, ...EN_OPS };
const ZH = { ...ZH_PAGES, ...ZH_OPS };

export const DICT = { en: EN, zh: ZH };
const KEY = "tokenabacus.lang";

function initial() {
  let saved = null;
  try {
    saved = window.localStorage.getItem(KEY);
  } catch {
    saved = null; // storage may be disabled: fall back to the browser's language
  }
  if (saved === "en" || saved === "zh") return saved;
  return (navigator.language || "").toLowerCase().startsWith("zh") ? "zh" : "en";
}

let lang = initial();
document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";

export function getLang() {
  return lang;
}

export function setLang(next) {
  lang = next === "zh" ? "zh" : "en";
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  try {
    window.localStorage.setItem(KEY, lang);
  } catch {
    // not remembered, but still switched
  }
}

// t("kpi.errors", { n: "12" }); an unknown key shows the key itself (a visible bug, not a blank).
export function t(key, vars) {
  let s = DICT[lang][key] ?? EN[key] ?? key;
  if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
  return s;
}

export function applyStatic(root) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-title]")) {
    el.title = t(el.dataset.i18nTitle);
    el.setAttribute("aria-label", t(el.dataset.i18nTitle));
  }
}

// The server's notes are English sentences; the ones the board shows are said in the reader's language.
const NOTES = {
  "change is against the same stretch of the period before, up to this time": "note.same_stretch",
  "models without a price show no cost: set one with `tokenabacus prices set`": "note.no_price",
};

export function note(text) {
  return NOTES[text] ? t(NOTES[text]) : text;
}
