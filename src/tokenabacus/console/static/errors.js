// What went wrong, in the reader's language. The /admin API answers OpenAI's error JSON
// ({error: {message, type, code}}) worded in English; the English page shows that text as it is,
// the Chinese page says the same in Chinese: a known message (its names kept) by its own wording,
// else what its code means, else the server's text after a Chinese lead-in.

import { ApiError } from "./api.js";
import { getLang, t } from "./i18n.js";

// [code (null: any), the server's wording, the string that says it]: first match wins.
const KNOWN = [
  [null, /^a denial needs a reason$/, "err.deny_reason"],
  [null, /^cannot grant more than the (\d+) asked for$/, "err.grant_more"],
  [null, /^no pending quota request with id '(.+)'$/, "err.no_pending"],
  [null, /^quota request (\S+) was decided by someone else meanwhile$/, "err.decided"],
  [null, /^no record with request id '(.+)'$/, "err.no_record"],
  [null, /^no active key with id '(.+)'$/, "err.no_key"],
  [null, /^no limit with id '(.+)'$/, "err.no_limit"],
  [null, /^(\S+) is declared in the config file: change it there$/, "err.config_limit"],
  [null, /^you may not ask for quota for (\S+) '(.+)'$/, "err.ask_scope"],
  ["out_of_scope", /^this key reads (department|project) '(.+)' only$/, "err.reads_only"],
  ["out_of_scope", /^project '(.+)' is not in department '(.+)', the one this key reads$/, "err.project_elsewhere"],
  ["out_of_scope", /^department '(.+)' is not the department of project '(.+)'$/, "err.dept_mismatch"],
];

// A code the server uses, said whatever the message (the message adds nothing a reader needs).
const CODES = {
  csrf: "err.csrf",
  admin_only: "err.admin_only",
  no_scope: "err.no_scope",
  member_only_me: "err.member_only",
  ip_not_allowed: "err.ip",
  out_of_scope: "err.out_of_scope",
  internal_error: "err.internal",
  method_not_allowed: "err.method",
  network: "err.network",
};

export function describe(err) {
  const message = err instanceof Error ? err.message : String(err);
  if (getLang() !== "zh" || !(err instanceof ApiError)) return message;
  for (const [code, pattern, key] of KNOWN) {
    if (code && code !== err.code) continue;
    const m = message.match(pattern);
    // A scope's kind ("project") is said in the page's language; names stay as they are.
    const said = (v) => (["department", "project", "user", "key"].includes(v) ? t(`scope.${v}`) : v);
    if (m) return t(key, Object.fromEntries(m.slice(1).map((v, i) => [`a${i + 1}`, said(v)])));
  }
  if (CODES[err.code]) return t(CODES[err.code]);
  if (err.status === 404 && /^Unknown route/.test(message)) return t("err.route");
  return `${t("err.lead")}${message}`;
}
