// The one way the pages reach the server: the /admin API on the same origin, with the session
// cookie. Writes carry the page's CSRF token in a header (another site's form cannot set one).
// A 401 means the session ended: back to the sign-in page. Any other failure throws an ApiError
// carrying the server's own message (OpenAI's error JSON), for the banner.

import { meta } from "./dom.js";

const CSRF = meta("csrf-token");

export class ApiError extends Error {
  constructor(message, status, code, type) {
    super(message);
    this.status = status;
    this.code = code;
    this.type = type;
  }
}

// Thrown after a redirect to the sign-in page has started: nothing left to show.
export class SignedOut extends Error {}

export function url(path, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}${path.includes("?") ? "&" : "?"}${s}` : path;
}

export async function api(path, { method = "GET", params, body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") {
    headers["X-CSRF-Token"] = CSRF;
    if (body !== undefined) headers["Content-Type"] = "application/json";
  }
  let resp;
  try {
    resp = await fetch(url(path, params), {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError(`${path}: ${e.message}`, 0, "network");
  }
  if (resp.status === 401) {
    window.location.assign("/console/login?e=expired");
    throw new SignedOut("signed out");
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const err = data && data.error;
    const message = (err && err.message) || `${resp.status} ${resp.statusText} (${path})`;
    throw new ApiError(message, resp.status, err && err.code, err && err.type);
  }
  return data;
}
