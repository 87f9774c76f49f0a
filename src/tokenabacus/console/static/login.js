// The sign-in page: the server names what went wrong with a code; this page says it in the
// reader's language, and offers the same language toggle as the console.

import { applyStatic, getLang, setLang, t } from "./i18n.js";

function paint() {
  applyStatic(document);
  const box = document.getElementById("login-error");
  const code = (box.dataset.code || new URLSearchParams(window.location.search).get("e") || "").trim();
  box.textContent = code ? t(`login.error.${code}`) : "";
  box.hidden = !code;
  box.classList.toggle("info", code === "signed_out");
}

document.getElementById("lang").addEventListener("click", () => {
  setLang(getLang() === "zh" ? "en" : "zh");
  paint();
});
paint();
