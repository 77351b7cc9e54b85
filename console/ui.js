// Small DOM helpers shared by the pages: element building, labelled fields,
// messages, badges and formatting. Text always goes in as text, never HTML.

import { plain } from "./api.js";

/** Builds an element: h("button", {class: "primary", onclick}, "Save"). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

let uid = 0;
/** A fresh element id. */
export const newId = (p = "f") => `${p}-${++uid}`;

/**
 * A labelled field: label, control, optional hint and a place for an error.
 * `control` is an element; its id is set if missing.
 */
export function field(label, control, hint) {
  if (!control.id) control.id = newId();
  const hintEl = hint ? h("span", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  const err = h("span", { class: "field-error", id: `${control.id}-error`, hidden: true });
  return h("div", { class: "field", dataset: { name: control.name || "" } },
    h("label", { for: control.id }, label), control, hintEl, err);
}

/** Shows `message` under the field holding `control` (or clears it). */
export function fieldError(control, message) {
  const err = document.getElementById(`${control.id}-error`);
  if (!err) return;
  err.textContent = message || "";
  err.hidden = !message;
  if (message) control.setAttribute("aria-invalid", "true");
  else control.removeAttribute("aria-invalid");
}

/** Clears every field error inside `root`. */
export function clearErrors(root) {
  root.querySelectorAll(".field-error").forEach((e) => { e.hidden = true; e.textContent = ""; });
  root.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
  root.querySelectorAll(".alert.error").forEach((e) => e.remove());
}

/**
 * Shows an API error near what caused it: under the named field when the
 * message names one of the form's fields (`field \`url\`: …`), else at the
 * top of `root`.
 */
export function showError(root, err, before) {
  const text = plain(err);
  const msg = err && err.message ? err.message : "";
  // "field `url`: …" (bad JSON shape) or "rate_limit must be …" (a rule).
  const m = /field [`"]?([a-z_]+)/i.exec(msg) || /^([a-z_]+)(?: must|:| is)/.exec(msg);
  if (m) {
    const control = root.querySelector(`[name="${m[1]}"]`);
    if (control) { fieldError(control, text); control.focus(); return; }
  }
  const box = alert("error", text);
  if (before) before.before(box); else root.prepend(box);
  box.focus();
}

/** A message box; errors are announced. */
export function alert(kind, ...content) {
  return h("div", { class: `alert ${kind}`, role: kind === "error" ? "alert" : "status", tabindex: "-1" }, ...content);
}

let toastTimer;
/** A short confirmation at the bottom of the screen. */
export function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove("show"), 2600);
}

/** A button that runs `action` and is disabled while it runs. */
export function button(label, action, cls = "") {
  const b = h("button", { type: "button", class: cls }, label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await action(b); } finally { b.disabled = false; }
  });
  return b;
}

/** A badge: kind is ok, warn, bad, off, info, hook or campaign. */
export const badge = (kind, text, title) => h("span", { class: `badge ${kind}`, title }, text);

/** The badge for an endpoint health state. */
export function healthBadge(state) {
  const map = { healthy: ["ok", "Healthy"], failing: ["warn", "Failing"], disabled: ["off", "Disabled"] };
  const [k, t] = map[state] || ["off", state || "Unknown"];
  return badge(k, t);
}

/** The badge for a delivery status. */
export function statusBadge(status) {
  const map = { succeeded: ["ok", "Succeeded"], pending: ["info", "Pending"], failed: ["warn", "Failed, will retry"], dead: ["bad", "Dead"] };
  const [k, t] = map[status] || ["off", status];
  return badge(k, t);
}

/** An RFC 3339 time in the reader's locale. */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

/** A `<time>` element. */
export const time = (iso) => h("time", { datetime: iso || "" }, when(iso));

/** A percentage from a 0..1 rate. */
export const pct = (r) => (r === null || r === undefined ? "—" : `${(r * 100).toFixed(r === 1 || r === 0 ? 0 : 1)} %`);

/** Pretty JSON. */
export const pretty = (v) => JSON.stringify(v, null, 2);

/** A definition list from [term, value] pairs (values may be nodes). */
export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([t, v]) => [h("dt", {}, t), h("dd", {}, v)]));
}

/** A page heading block with optional crumbs, subtitle and actions. */
export function pageHead(title, { crumbs, sub, actions } = {}) {
  return h("div", { class: "page-head" },
    h("div", {},
      crumbs ? h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, crumbs) : null,
      h("h1", { tabindex: "-1" }, title),
      sub ? h("p", { class: "muted" }, sub) : null),
    actions ? h("div", { class: "row" }, actions) : null);
}

/** Parses a JSON object typed by the user; throws a plain-words Error. */
export function parseObject(text, what) {
  if (!text.trim()) return {};
  let v;
  try { v = JSON.parse(text); } catch (e) { throw new Error(`${what} is not valid JSON: ${e.message}`); }
  if (v === null || typeof v !== "object" || Array.isArray(v)) throw new Error(`${what} must be a JSON object, like {"key": "value"}.`);
  return v;
}

/** A datetime-local value → RFC 3339 UTC (empty stays empty). */
export function localToIso(v) {
  if (!v) return "";
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? "" : d.toISOString();
}

/** RFC 3339 → a datetime-local value in the reader's zone. */
export function isoToLocal(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

/** What the API shows in place of a secret header value. */
const REDACTED = "••••";

/**
 * Custom headers: rows of name, value and a "Secret" box, with add and
 * delete. `initial` is `{name: {value, sensitive}}` as the API shows it;
 * a new row starts secret. A secret shows as •••• and its last four
 * characters once saved: left as it is, the server keeps the stored value;
 * unticking "Secret" on it empties the value, to be typed again.
 * Returns {el, read()} where read() answers `{name: {value, sensitive}}`.
 */
export function headerEditor(legend, initial = {}) {
  const rows = h("div", {});
  const addRow = (k = "", v = "", secret = true, focus = false) => {
    const ki = h("input", { type: "text", value: k, autocomplete: "off", class: "kv-key" });
    const vi = h("input", { type: "text", value: v, autocomplete: "off", spellcheck: "false", class: "kv-value" });
    const box = h("input", { type: "checkbox", class: "kv-secret", checked: secret });
    box.addEventListener("change", () => {
      if (!box.checked && vi.value.startsWith(REDACTED)) {
        vi.value = "";
        vi.placeholder = "Type the value again to show it in clear";
        vi.focus();
      }
    });
    const row = h("div", { class: "kv-row" }, field("Name", ki), field("Value", vi),
      h("label", { class: "inline kv-check" }, box, "Secret"));
    const del = h("button", { type: "button", class: "danger small", "aria-label": "Delete header row" }, "Delete");
    del.addEventListener("click", () => { row.remove(); addBtn.focus(); });
    row.append(del);
    rows.append(row);
    if (focus) ki.focus();
  };
  const addBtn = h("button", { type: "button", class: "small" }, "Add header");
  addBtn.addEventListener("click", () => addRow("", "", true, true));
  Object.entries(initial || {}).forEach(([k, v]) => {
    if (v && typeof v === "object") addRow(k, v.value, v.sensitive !== false);
    else addRow(k, v ?? "", true);
  });
  const note = h("p", { class: "small muted" }, "A secret is shown once, when it is saved, then as •••• and its last four characters (in the delivery log too). Leave a •••• value as it is to keep it.");
  const el = h("fieldset", {}, h("legend", {}, legend), note, rows, addBtn);
  return {
    el,
    read() {
      const out = {};
      rows.querySelectorAll(".kv-row").forEach((r) => {
        const k = r.querySelector(".kv-key").value.trim();
        if (k) out[k] = { value: r.querySelector(".kv-value").value, sensitive: r.querySelector(".kv-secret").checked };
      });
      return out;
    },
  };
}

/** A `<select>` from [value, label] pairs. */
export function select(name, pairs, value) {
  return h("select", { name }, pairs.map(([v, l]) => h("option", { value: v, selected: v === value ? "selected" : null }, l)));
}

/**
 * A page with unsaved work sets `current` to `{hash, dirty()}`; the shell
 * asks before leaving that page's address while `dirty()` is true.
 */
export const leaveGuard = { current: null };
