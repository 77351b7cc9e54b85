// A flow as people read it (seed 003's picture): each node in order, what
// it says, where each menu option goes, and which steps notify the bot's
// endpoints or call a story webhook. Plus the editor's error-to-line mapping.

import { h, badge } from "./ui.js";

// `end` first: an end node may also carry a closing `message`.
const KINDS = [
  ["end", "End"], ["ask", "Question"], ["menu", "Menu"], ["message", "Message"], ["webhook", "Story webhook"],
  ["quote", "Quote"], ["booking", "Booking"],
];

function kindOf(node) {
  for (const [k, label] of KINDS) if (node[k] !== undefined && node[k] !== false) return [k, label];
  return ["unknown", "Node"];
}

const anchor = (graph, id) => `node-${graph}-${id}`.replace(/[^A-Za-z0-9_-]/g, "_");

function goTo(graph, id, prefix = "then") {
  if (!id) return null;
  const a = h("a", { href: `#${anchor(graph, id)}` }, id);
  a.addEventListener("click", (e) => {
    e.preventDefault();
    const t = document.getElementById(anchor(graph, id));
    if (t) { t.scrollIntoView({ behavior: "smooth", block: "center" }); t.focus(); }
  });
  return h("span", { class: "goes" }, `${prefix} → `, a);
}

function validation(v) {
  if (!v) return null;
  const range = v.min !== undefined || v.max !== undefined ? ` ${v.min ?? ""}–${v.max ?? ""}` : "";
  const extra = v.kind === "choice" && v.options ? `: ${v.options.join(", ")}` : v.kind === "regex" ? ` /${v.pattern}/` : "";
  return badge("off", `validates ${v.kind}${range}${extra}`);
}

let botId = "";
const storyLink = (name) => h("a", { href: `#/stories/${encodeURIComponent(botId)}/${encodeURIComponent(name)}`, class: "badge hook" }, `calls story webhook ${name}`);

function nodeCard(graphName, graph, id, node) {
  const [kind, label] = kindOf(node);
  const isStart = graph.start === id;
  const isError = graph.error === id;
  const text = node[kind];
  const card = h("article", { class: `node kind-${kind}`, id: anchor(graphName, id), tabindex: "-1", "aria-label": `${label} ${node.label || id}` },
    h("div", { class: "node-head" },
      h("strong", {}, node.label || id),
      badge("info", label),
      isStart ? badge("ok", "start") : null,
      isError ? badge("warn", "error handler") : null,
      node.label ? h("code", { class: "muted" }, id) : null),
    typeof text === "string" && kind !== "webhook" ? h("p", { class: "node-text" }, text) : null,
    kind === "end" && node.message ? h("p", { class: "node-text" }, node.message) : null);
  const meta = h("div", { class: "node-meta" });
  if (node.save_as) meta.append(badge("off", `saves memory.${node.save_as}`));
  const v = validation(node.validate);
  if (v) meta.append(v);
  if (node.notify) meta.append(badge("hook", "notifies endpoints: response.received", "Sent to the bot's webhook endpoints after a valid answer"));
  if (node.datapoint) meta.append(badge("hook", "notifies endpoints: datapoint.collected"));
  if (kind === "webhook") meta.append(storyLink(node.webhook));
  if (kind === "quote") meta.append(badge("hook", "notifies endpoints: quote.generated"));
  if (kind === "booking") meta.append(badge("off", `offers ${node.offer || 3} slots`), badge("hook", "notifies endpoints: appointment.booked"));
  if (node.on_error) meta.append(goTo(graphName, node.on_error, "on error"));
  if (node.next) meta.append(goTo(graphName, node.next));
  if (meta.childNodes.length) card.append(meta);
  if (kind === "menu" && Array.isArray(node.options)) {
    const rows = node.options.map((o) => h("tr", {},
      h("td", { "data-label": "Keyword" }, h("b", {}, String(o.keyword ?? ""))),
      h("td", { "data-label": "Option" }, o.label || ""),
      h("td", { "data-label": "Goes to" }, o.campaign ? badge("campaign", `campaign ${o.campaign}`, "Starts another flow of the bot")
        : o.next === undefined && o.notify ? badge("hook", "your endpoint; the conversation ends", "Redirect Type Webhook: the choice goes to the bot's endpoints and your system takes it from there")
        : goTo(graphName, o.next, "")),
      h("td", { "data-label": "Webhooks" },
        o.notify ? badge("hook", "notifies: option.selected", "Sent to the bot's endpoints as soon as the option is chosen") : null, " ",
        o.webhook ? storyLink(o.webhook) : null)));
    // No webhook column when no option notifies or calls one.
    if (!node.options.some((o) => o.notify || o.webhook)) rows.forEach((r) => r.lastChild.remove());
    const heads = ["Keyword", "Option", "Goes to", ...(node.options.some((o) => o.notify || o.webhook) ? ["Webhooks"] : [])];
    card.append(h("div", { class: "table-wrap" }, h("table", { class: "options responsive" },
      h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))));
    if (node.retry) card.append(h("p", { class: "small muted" }, `If the answer is not an option: “${node.retry}”`));
  } else if (node.retry) {
    card.append(h("p", { class: "small muted" }, `If the answer is not valid: “${node.retry}”`));
  }
  return card;
}

function graphOutline(name, graph) {
  const nodes = Object.entries(graph.nodes || {});
  return h("div", { class: "outline" }, nodes.map(([id, n]) => nodeCard(name, graph, id, n)));
}

/** The outline of a whole flow document (JSON authoring format) of `bot`. */
export function outline(flow, bot = "") {
  botId = bot;
  const parts = [graphOutline("main", flow)];
  for (const [name, g] of Object.entries(flow.campaigns || {})) {
    parts.push(h("h3", { class: "campaign-title", id: anchor("campaign", name) }, "Campaign ", badge("campaign", name)));
    parts.push(graphOutline(name, g));
  }
  return h("div", {}, parts);
}

/** Counts for a summary line: nodes, menu options, notifying steps. */
export function summary(flow) {
  let nodes = 0, options = 0, notify = 0, hooks = 0;
  const graphs = [flow, ...Object.values(flow.campaigns || {})];
  for (const g of graphs) for (const n of Object.values(g.nodes || {})) {
    nodes++;
    if (n.notify || n.datapoint || n.quote || n.booking) notify++;
    if (n.webhook) hooks++;
    for (const o of n.options || []) { options++; if (o.notify) notify++; if (o.webhook) hooks++; }
  }
  return { nodes, options, notify, hooks, campaigns: Object.keys(flow.campaigns || {}).length };
}

const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const indent = (l) => l.length - l.trimStart().length;

/**
 * The 1-based line a validation error concerns in `text`, or null: the
 * line a YAML/JSON syntax error names, else the node's line (inside its
 * campaign for `campaign/node`), else the field's line inside the node.
 */
export function lineOf(text, err) {
  const m = /line (\d+)/.exec(err.message || "");
  if (m) return Number(m[1]);
  if (!err.node) {
    if (err.field) return findKey(text.split("\n"), err.field.split(/[.[]/)[0], 0, Infinity) ?? null;
    return null;
  }
  const lines = text.split("\n");
  let from = 0;
  let node = err.node;
  if (node.includes("/")) {
    const [campaign, rest] = node.split("/", 2);
    const c = lines.findIndex((l) => /^\s*"?campaigns"?\s*:/.test(l));
    const at = findKey(lines, campaign, c < 0 ? 0 : c, Infinity);
    if (at) from = at - 1;
    node = rest;
  }
  const start = findKey(lines, node, from, Infinity);
  if (!start) return null;
  if (!err.field) return start;
  // The field inside the node: lines until the indentation returns to the node's.
  const base = indent(lines[start - 1]);
  let end = lines.length;
  for (let i = start; i < lines.length; i++) {
    if (lines[i].trim() && indent(lines[i]) <= base && !/^\s*[}\]]/.test(lines[i])) { end = i; break; }
  }
  const opt = /^options\[(\d+)\]/.exec(err.field);
  if (opt) {
    const o = findKey(lines, "options", start - 1, end);
    if (o) {
      let seen = -1;
      for (let i = o; i < end; i++) {
        if (/^\s*(-|\{)/.test(lines[i])) seen++;
        if (seen !== Number(opt[1])) continue;
        // The option's own field (`options[2].next`): on its line or below it.
        const sub = err.field.slice(opt[0].length).replace(/^\./, "").split(/[.[]/)[0];
        if (!sub || new RegExp(`["\\s{,-]${esc(sub)}"?\\s*:`).test(lines[i])) return i + 1;
        const dash = indent(lines[i]);
        for (let j = i + 1; j < end; j++) {
          if (lines[j].trim() && (indent(lines[j]) < dash || /^\s*-/.test(lines[j]) && indent(lines[j]) <= dash)) break;
          if (new RegExp(`^\\s*["']?${esc(sub)}["']?\\s*:`).test(lines[j])) return j + 1;
        }
        return i + 1;
      }
      return o;
    }
  }
  const key = err.field.split(/[.[]/)[0];
  if (new RegExp(`["\\s{,]${esc(key)}"?\\s*:`).test(lines[start - 1])) return start;
  return findKey(lines, key, start, end) ?? start;
}

function findKey(lines, key, from, to) {
  const re = new RegExp(`^\\s*(-\\s*)?["']?${esc(key)}["']?\\s*:`);
  for (let i = Math.max(0, from); i < Math.min(lines.length, to); i++) if (re.test(lines[i])) return i + 1;
  return null;
}

/** A starter flow for a bot made from scratch. */
export const STARTER = `start: welcome
nodes:
  welcome:
    label: Welcome Message
    ask: "Welcome! Can you enter your name, please?"
    save_as: name
    validate: { kind: text, min: 2, max: 80 }
    retry: "Please enter your name (2-80 characters)."
    notify: true
    next: menu
  menu:
    label: Menu
    menu: "{{memory.name}}, what can we do for you?"
    options:
      - { keyword: 1, label: Talk to sales, notify: true, next: thanks }
      - { keyword: 2, label: Opening hours, next: hours }
    retry: "Please answer 1 or 2."
  hours: { message: "We are open 9:00-17:00, Monday to Friday.", next: done }
  thanks: { message: "Thank you, {{memory.name}}! We will be in touch.", next: done }
  done: { end: true }
`;
