// Where the server's problems with a flow go in the interactions editor:
// beside the field they name, else on the node's card, else at the top.

import { h, alert } from "./ui.js";

/** `options[2].next` → `options[2].next`, `options[2]`, `options`. */
function prefixes(f) {
  const out = [];
  let k = f;
  while (k) {
    out.push(k);
    const m = /(\.[^.[\]]+|\[\d+\])$/.exec(k);
    if (!m) break;
    k = k.slice(0, m.index);
  }
  return out;
}

/**
 * Places the server's problems (`{node, field, message}`) beside what they
 * concern: the field inside the node's card, else the card, else the top.
 */
export function placeErrors(details, body, result, { setGraph, opened }) {
  result.replaceChildren(alert("error", `The flow was not saved: ${details.length} problem${details.length > 1 ? "s" : ""} to fix (shown beside each). The previous version stays current.`));
  // Show the graph of the first problem.
  const first = details.find((d) => d.node) || {};
  const firstGraph = first.node && first.node.includes("/") ? first.node.split("/")[0] : "main";
  if (first.node) setGraph(firstGraph);
  let focus = null;
  const top = [];
  for (const d of details) {
    const [g, nid] = d.node && d.node.includes("/") ? d.node.split("/", 2) : ["main", d.node];
    const card = nid && g === firstGraph ? body.querySelector(`[data-node="${CSS.escape(nid)}"]`) : null;
    if (!card) { top.push(h("li", {}, d.node ? `${d.node}: ` : "", d.field ? `${d.field}: ` : "", d.message)); continue; }
    card.querySelector("details").open = true;
    opened(`${g}/${nid}`);
    const fieldKey = d.field || "";
    let target = null;
    for (const k of prefixes(fieldKey)) {
      target = card.querySelector(`[data-field="${CSS.escape(k)}"]`);
      if (target) break;
    }
    const line = h("li", { dataset: { field: fieldKey } }, d.field ? h("code", {}, d.field) : null, d.field ? " " : "", d.message);
    if (target) {
      let list = target.querySelector(":scope > .here-errors");
      if (!list) { list = h("ul", { class: "here-errors field-error", role: "alert" }); target.append(list); }
      list.append(line);
      const control = target.querySelector("input, select, textarea");
      if (control) control.setAttribute("aria-invalid", "true");
      focus = focus || control;
    } else {
      card.querySelector(".node-errors").append(line);
      focus = focus || card.querySelector("summary");
    }
  }
  if (top.length) result.append(h("ul", { class: "alert error" }, top));
  if (focus) focus.focus(); else result.querySelector(".alert")?.focus();
}
