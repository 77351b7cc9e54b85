// Form fields bound to a key of a flow document's object: typing writes the
// value at once, emptying a field removes the key (so a field left alone
// leaves the document as it was). `fieldHooks.changed` is called on edits.

import { h, field, newId } from "./ui.js";

/** Set by the editor: marks the document edited. */
export const fieldHooks = { changed: () => {} };
const changed = () => fieldHooks.changed();

/** A text field bound to `obj[key]` (an emptied field removes the key). */
export function text(obj, key, label, { area = false, hint, onChange, name } = {}) {
  const el = area
    ? h("textarea", { rows: 3, name: name || key, spellcheck: "true" })
    : h("input", { type: "text", name: name || key, autocomplete: "off" });
  el.value = obj[key] ?? "";
  el.addEventListener("input", () => {
    if (el.value === "") delete obj[key]; else obj[key] = el.value;
    changed();
    if (onChange) onChange();
  });
  const f = field(label, el, hint);
  f.dataset.field = key;
  return f;
}

/** A number field bound to `obj[key]`. */
export function number(obj, key, label, { hint, min } = {}) {
  const el = h("input", { type: "number", name: key, min, step: "any" });
  el.value = obj[key] ?? "";
  el.addEventListener("input", () => {
    if (el.value === "" || Number.isNaN(Number(el.value))) delete obj[key]; else obj[key] = Number(el.value);
    changed();
  });
  const f = field(label, el, hint);
  f.dataset.field = key;
  return f;
}

/** A checkbox bound to `obj[key]` (unticked removes the key). */
export function toggle(obj, key, label, hint) {
  const el = h("input", { type: "checkbox", name: key, checked: obj[key] === true });
  el.addEventListener("change", () => {
    if (el.checked) obj[key] = true; else delete obj[key];
    changed();
  });
  if (!el.id) el.id = newId("t");
  return h("div", { class: "field check", dataset: { field: key } },
    h("label", { class: "inline", for: el.id }, el, label), hint ? h("span", { class: "hint" }, hint) : null,
    h("span", { class: "field-error", id: `${el.id}-error`, hidden: true }));
}

/** A `<select>` of [value, label] pairs bound to `obj[key]` ("" removes it). */
export function choose(obj, key, label, pairs, { hint, onChange } = {}) {
  const el = h("select", { name: key }, pairs.map(([v, l]) => h("option", { value: v }, l)));
  const cur = obj[key] ?? "";
  if (cur !== "" && !pairs.some(([v]) => v === String(cur))) el.append(h("option", { value: cur }, `${cur} (unknown)`));
  el.value = String(cur);
  el.addEventListener("change", () => {
    if (el.value === "") delete obj[key]; else obj[key] = el.value;
    changed();
    if (onChange) onChange(el.value);
  });
  const f = field(label, el, hint);
  f.dataset.field = key;
  return f;
}
