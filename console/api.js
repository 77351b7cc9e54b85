// The console's only way to the server: fetch with the signed-in key.
// The key lives in sessionStorage (this tab, this session) and nowhere else.

const KEY = "botwire.key";

export const session = {
  get key() { return sessionStorage.getItem(KEY); },
  set(key) { sessionStorage.setItem(KEY, key); },
  clear() { sessionStorage.removeItem(KEY); },
};

/** An API failure with the server's code and message (or ours, in plain words). */
export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** Called when the key stops working (401); set by the app. */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(f) { onUnauthorized = f; }

/**
 * Calls the API. `json` sends a JSON body; `text` + `contentType` send raw
 * text; `headers` adds request headers. Answers the parsed JSON, the text (always with `asText`), or (with
 * `raw`) the Response.
 */
export async function api(method, path, opts = {}) {
  const headers = {};
  const key = opts.key ?? session.key;
  if (key) headers["Authorization"] = `Bearer ${key}`;
  let body;
  if (opts.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(opts.json);
  } else if (opts.text !== undefined) {
    headers["Content-Type"] = opts.contentType || "text/plain";
    body = opts.text;
  }
  if (opts.accept) headers["Accept"] = opts.accept;
  if (opts.headers) Object.assign(headers, opts.headers);
  let resp;
  try {
    resp = await fetch(path, { method, headers, body });
  } catch {
    throw new ApiError(0, "network", "Could not reach the botwire server. Check that it is running and try again.");
  }
  if (resp.status === 401 && !opts.key) {
    session.clear();
    onUnauthorized();
    throw new ApiError(401, "unauthorized", "Your key is no longer accepted. Please sign in again.");
  }
  if (!resp.ok) {
    let err = null;
    try { err = (await resp.json()).error; } catch { /* not JSON */ }
    if (err && err.message) throw new ApiError(resp.status, err.code, err.message, err.details);
    throw new ApiError(resp.status, "http", `The server answered ${resp.status} ${resp.statusText}.`);
  }
  if (opts.raw) return resp;
  if (resp.status === 204) return null;
  if (opts.asText) return resp.text();
  const ct = resp.headers.get("content-type") || "";
  return ct.includes("json") ? resp.json() : resp.text();
}

/** Every page of a list route, up to `max` items. */
export async function all(path, max = 1000) {
  const out = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api("GET", `${path}${sep}limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    out.push(...page.data);
    cursor = page.next_cursor;
  } while (cursor && out.length < max);
  return out;
}

/** An error in plain words, for the page. */
export function plain(err) {
  if (!(err instanceof ApiError)) return `Something went wrong in the console: ${err && err.message ? err.message : err}`;
  const m = err.message.replace(/\s+$/, "");
  switch (err.status) {
    case 403: return `This key may not do that. ${m}`;
    case 404: return `Not found: ${m}`;
    case 409: return `That clashes with what exists: ${m}`;
    case 413: return "That is too large for the server to accept.";
    case 429: return `Too many requests just now; try again in a moment. ${m}`;
    case 503: return "The server's database is unavailable; try again shortly.";
    default: return err.status >= 500 ? "The server had a problem (it has been logged). Try again." : m;
  }
}

/** Path segment, encoded. */
export const seg = (s) => encodeURIComponent(s);
