// The coordinator's HTTP/JSON API as the console calls it: same origin,
// relative paths (so the console also works under an Ingress path prefix
// that ends in `/`), the bearer token from sessionStorage, errors as
// google.rpc.Status bodies.

import { h } from "./dom.js";

const TOKEN_KEY = "camshaft.token";

/** The tab's bearer token, or "" (sessionStorage: gone when the tab closes). */
export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

/** Keeps `value` as the tab's token ("" forgets it). */
export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** A failed call: the HTTP status and the google.rpc.Status body. */
export class ApiError extends Error {
  constructor(httpStatus, body, fallback) {
    super((body && body.message) || fallback || `HTTP ${httpStatus}`);
    this.httpStatus = httpStatus;
    this.code = (body && body.status) || "";
    this.details = (body && body.details) || [];
  }

  /** The BadRequest field violations: [{field, description}]. */
  get fieldViolations() {
    return this.details.flatMap((d) => (d.fieldViolations || []).map((v) => ({ field: v.field || "", description: v.description || "" })));
  }
}

/**
 * Calls the API: `api("v1/jobs", {method: "POST", body: {...}})`. `body` is
 * sent as JSON, `form` (FormData) as multipart. A 401 asks for a token once
 * and retries. Resolves to the parsed JSON answer (null when empty).
 */
export async function api(path, { method = "GET", body, form, signal, retried = false } = {}) {
  const headers = { Accept: "application/json" };
  const tok = token();
  if (tok) headers.Authorization = `Bearer ${tok}`;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  } else if (form) {
    payload = form;
  }
  const res = await fetch(path, { method, headers, body: payload, signal, credentials: "same-origin" });
  if (res.status === 401 && !retried) {
    const given = await askForToken(tok ? "The server refused this token." : "");
    if (given) return api(path, { method, body, form, signal, retried: true });
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) throw new ApiError(res.status, data, text.slice(0, 200) || res.statusText);
  return data;
}

/** `path` with the token as `access_token` (EventSource sends no headers). */
export function withAccessToken(path) {
  const tok = token();
  if (!tok) return path;
  return `${path}${path.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(tok)}`;
}

/** Who the token is: `{name, role}`, or null when the server does not say. */
export async function whoami() {
  try {
    return await api("v1/whoami");
  } catch (e) {
    if (e instanceof ApiError && (e.httpStatus === 404 || e.httpStatus === 405)) return null;
    throw e;
  }
}

let pendingAsk = null;

/**
 * Shows the token dialog (once, however many calls are waiting on it) and
 * resolves to the token entered, or "" when it was dismissed.
 */
export function askForToken(reason = "") {
  if (pendingAsk) return pendingAsk;
  const dialog = document.getElementById("token-dialog");
  const input = dialog.querySelector("input");
  const note = dialog.querySelector(".dialog-reason");
  note.textContent = reason;
  input.value = "";
  pendingAsk = new Promise((resolve) => {
    const done = () => {
      dialog.removeEventListener("close", done);
      pendingAsk = null;
      const value = dialog.returnValue === "save" ? input.value.trim() : "";
      if (value) setToken(value);
      if (dialog.returnValue === "forget") setToken("");
      document.dispatchEvent(new CustomEvent("camshaft:token"));
      resolve(value);
    };
    dialog.addEventListener("close", done);
  });
  dialog.returnValue = "";
  dialog.showModal();
  input.focus();
  return pendingAsk;
}

/** A short, readable message of any error, for the status bar or a page. */
export function errorText(e) {
  if (e instanceof ApiError) {
    if (e.httpStatus === 403) return `Not allowed: ${e.message}`;
    return e.message;
  }
  if (e && e.name === "AbortError") return "cancelled";
  return (e && e.message) || String(e);
}

/** A paragraph showing an error (role=alert). */
export function errorBox(e) {
  return h("p", { class: "error", role: "alert" }, errorText(e));
}
