// The interactions editor (`#/bots/{bot}/build`): the bot's flow as forms in
// seed 003's words — the Welcome Message (the start node), then the
// Interactions, each a card — with campaigns as their own tabs and a map.
// It edits the same flow document as the YAML editor: a save from either is
// a new version, checked by the server, sent with the version it was based
// on (If-Match) so two people cannot save over each other unknowingly.
//
// Fields write into the document as they are typed; a field left alone
// leaves its key untouched, so loading and saving without edits gives the
// same flow back.
//
// Beside it: fields.js (the bound fields), conditions.js (next / branches),
// payload.js (the Webhook tab), flowmap.js (the Map tab), problems.js (the
// server's problems placed beside their fields).

import { api, plain, seg } from "./api.js";
import { h, field, alert, toast, button, badge, pageHead, leaveGuard } from "./ui.js";
import { conditionEditor } from "./conditions.js";
import { flowMap } from "./flowmap.js";
import { webhookSection } from "./payload.js";
import { text, number, toggle, choose, fieldHooks } from "./fields.js";
import { placeErrors } from "./problems.js";

// ------------------------------------------------------------ node kinds

/** [value, label] pairs of the current graph's nodes, after a "none" entry. */
const nodePairs = (none = "— none —", graph = ctx.graph) => [["", none], ...Object.keys(graph.nodes || {}).map((id) => [id, nodeName(graph.nodes[id], id)])];
const nodeName = (n, id) => (n && n.label && n.label !== id ? `${n.label} (${id})` : id);
const storyPairs = () => [["", "— choose a story webhook —"], ...ctx.stories.map((s) => [s, s])];
const campaignPairs = () => [["", "— choose a campaign —"], ...Object.keys(ctx.doc.campaigns || {}).map((c) => [c, c])];

const VALIDATIONS = [["", "Anything"], ["text", "Text (length)"], ["number", "Number"], ["email", "Email"], ["phone", "Phone (E.164)"], ["date", "Date"], ["regex", "Pattern (regex)"], ["choice", "One of a list"]];

function validationFields(node) {
  const box = h("div", { class: "stack" });
  const draw = () => {
    const v = node.validate || {};
    const extra = [];
    if (v.kind === "text" || v.kind === "number") {
      extra.push(number(v, "min", v.kind === "text" ? "Shortest (characters)" : "Smallest"), number(v, "max", v.kind === "text" ? "Longest (characters)" : "Largest"));
      if (v.kind === "number") extra.push(toggle(v, "integer", "Whole numbers only"));
    }
    if (v.kind === "regex") extra.push(text(v, "pattern", "Pattern", { hint: "The whole answer must match." }));
    if (v.kind === "choice") {
      const el = h("input", { type: "text", name: "options", autocomplete: "off" });
      el.value = (v.options || []).join(", ");
      el.addEventListener("input", () => { v.options = el.value.split(",").map((s) => s.trim()).filter(Boolean); changed(); });
      extra.push(field("Choices (comma separated)", el));
    }
    const kind = choose({ validate_kind: v.kind || "" }, "validate_kind", "Validation", VALIDATIONS, {
      onChange: (k) => {
        if (!k) delete node.validate;
        else node.validate = k === "choice" ? { kind: k, options: [] } : { kind: k };
        draw();
      },
    });
    kind.dataset.field = "validate";
    box.replaceChildren(kind, ...(extra.length ? [h("div", { class: "row wrap-row" }, extra)] : []));
  };
  draw();
  return box;
}

/** What goes next: one node, or conditions (CEL branches). */
function nextField(node, key = "next", label = "Redirect To") {
  const wrap = h("div", { class: "stack", dataset: { field: key } });
  wrap.append(conditionEditor(node, key, label, { nodePairs, changed }));
  return wrap;
}

const MEDIA = ["image", "video", "audio", "file"];
function mediaFields(node) {
  const box = h("div", { class: "stack" });
  const draw = () => {
    const kind = MEDIA.find((m) => node[m] !== undefined) || "";
    const pick = choose({ media_kind: kind }, "media_kind", "Media", [["", "None"], ...MEDIA.map((m) => [m, m[0].toUpperCase() + m.slice(1)])], {
      onChange: (k) => {
        const old = kind ? node[kind] : "";
        MEDIA.forEach((m) => delete node[m]);
        if (k) node[k] = old || "";
        draw();
      },
    });
    pick.dataset.field = "media";
    const parts = [pick];
    if (kind) {
      if (typeof node[kind] !== "object") node[kind] = node[kind] === "" ? { url: "" } : node[kind];
      const m = typeof node[kind] === "object" ? node[kind] : null;
      if (m) parts.push(text(m, "url", "Media URL", { name: "media_url" }), text(m, "caption", "Caption"));
      else parts.push(text(node, kind, "Media URL", { name: "media_url" }));
    }
    box.replaceChildren(...parts);
  };
  draw();
  return box;
}

function timerFields(node) {
  return h("details", { class: "more" }, h("summary", {}, "Timeout and reminder"),
    h("div", { class: "row wrap-row" },
      text(node, "reminder", "Reminder text"), text(node, "remind_after", "Remind after", { hint: "e.g. 10m" }),
      text(node, "timeout", "Time out after", { hint: "e.g. 30m" }), choose(node, "on_timeout", "On timeout go to", nodePairs())));
}

function optionsTable(node) {
  node.options = node.options || [];
  const body = h("tbody", {});
  const table = h("table", { class: "options responsive build-options" },
    h("thead", {}, h("tr", {}, ["Keyword", "Option", "Redirect Type", "Redirect To", "Webhook", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
    body);
  const draw = (focusRow, focusSel) => {
    body.replaceChildren(...node.options.map((o, i) => optionRow(node, o, i, draw)));
    if (focusRow !== undefined) body.children[focusRow]?.querySelector(focusSel || "input")?.focus();
  };
  draw();
  const add = h("button", { type: "button", class: "small", dataset: { action: "add-option" } }, "Add option");
  add.addEventListener("click", () => {
    const n = node.options.length + 1;
    node.options.push({ keyword: n, label: "" });
    changed();
    draw(node.options.length - 1, "input[name=label]");
  });
  return h("div", { class: "stack", dataset: { field: "options" } }, h("div", { class: "table-wrap" }, table), h("div", {}, add));
}

function optionRow(node, o, i, redraw) {
  // Seed 003's Redirect Type Webhook: `notify: true` with neither `next` nor
  // `campaign` (see docs/FLOWS.md); the conversation ends after the event.
  const typeOf = () => (o.campaign !== undefined ? "campaign" : o.next === undefined && (o.notify === true || o.webhook !== undefined) ? "webhook" : "interaction");
  const kw = h("input", { type: "number", name: "keyword", min: 0, "aria-label": `Keyword of option ${i + 1}` });
  kw.value = o.keyword ?? "";
  kw.addEventListener("input", () => { if (kw.value === "") delete o.keyword; else o.keyword = Number(kw.value); changed(); });
  const lb = h("input", { type: "text", name: "label", autocomplete: "off", "aria-label": `Label of option ${i + 1}` });
  lb.value = o.label ?? "";
  lb.addEventListener("input", () => { if (lb.value === "") delete o.label; else o.label = lb.value; changed(); });
  const type = h("select", { name: "redirect_type", "aria-label": `Redirect Type of option ${i + 1}` },
    h("option", { value: "interaction" }, "Interaction"), h("option", { value: "campaign" }, "Campaign"), h("option", { value: "webhook" }, "Webhook"));
  type.value = typeOf();
  const toCell = h("td", { "data-label": "Redirect To" });
  const drawTo = () => {
    const t = type.value;
    let pick;
    if (t === "interaction") {
      pick = h("select", { name: "redirect_to", "aria-label": `Redirect To of option ${i + 1}` }, nodePairs().map(([v, l]) => h("option", { value: v }, l)));
      pick.value = o.next ?? "";
      pick.addEventListener("change", () => { if (pick.value) o.next = pick.value; else delete o.next; changed(); });
    } else if (t === "campaign") {
      pick = h("select", { name: "redirect_to", "aria-label": `Campaign of option ${i + 1}` }, campaignPairs().map(([v, l]) => h("option", { value: v }, l)));
      pick.value = o.campaign ?? "";
      pick.addEventListener("change", () => { o.campaign = pick.value; changed(); });
    } else {
      // No Redirect To: the option notifies the endpoints and the
      // conversation's next step belongs to the receiving system.
      pick = h("span", { class: "small", dataset: { redirect: "endpoint" } }, "Sent to the endpoint; the conversation ends");
    }
    toCell.replaceChildren(pick);
  };
  const notify = h("input", { type: "checkbox", name: "notify", checked: o.notify === true, "aria-label": `Webhook toggle of option ${i + 1}: notify the bot's endpoints when it is chosen` });
  notify.addEventListener("change", () => { if (notify.checked) o.notify = true; else delete o.notify; changed(); });
  const notifyLabel = h("label", { class: "inline" }, notify, h("span", { class: "small" }, "notify"));
  const drawNotify = () => { notifyLabel.hidden = type.value === "webhook"; notify.checked = o.notify === true; };
  type.addEventListener("change", () => {
    if (type.value === "interaction") { delete o.campaign; if (o.next === undefined) delete o.webhook; }
    if (type.value === "campaign") { delete o.next; o.campaign = o.campaign ?? ""; }
    if (type.value === "webhook") { delete o.next; delete o.campaign; delete o.webhook; o.notify = true; }
    changed();
    drawTo();
    drawNotify();
  });
  drawTo();
  drawNotify();
  const move = (d) => {
    const j = i + d;
    if (j < 0 || j >= node.options.length) return;
    [node.options[i], node.options[j]] = [node.options[j], node.options[i]];
    changed();
    redraw(j, d < 0 ? "button[data-move=up]" : "button[data-move=down]");
  };
  const up = h("button", { type: "button", class: "small", dataset: { move: "up" }, "aria-label": `Move option ${i + 1} up`, disabled: i === 0 }, "↑");
  up.addEventListener("click", () => move(-1));
  const down = h("button", { type: "button", class: "small", dataset: { move: "down" }, "aria-label": `Move option ${i + 1} down`, disabled: i === node.options.length - 1 }, "↓");
  down.addEventListener("click", () => move(1));
  const edit = h("button", { type: "button", class: "small", "aria-label": `Edit option ${i + 1}` }, "Edit");
  edit.addEventListener("click", () => lb.focus());
  const del = h("button", { type: "button", class: "small danger", "aria-label": `Delete option ${i + 1}` }, "Delete");
  del.addEventListener("click", () => { node.options.splice(i, 1); changed(); redraw(Math.max(0, i - 1), "input[name=label]"); });
  return h("tr", { dataset: { field: `options[${i}]` } },
    h("td", { "data-label": "Keyword" }, kw),
    h("td", { "data-label": "Option" }, lb),
    h("td", { "data-label": "Redirect Type" }, type),
    toCell,
    h("td", { "data-label": "Webhook" }, notifyLabel),
    h("td", { "data-label": "Actions", class: "row" }, edit, up, down, del));
}

function setTable(node) {
  node.set = node.set || {};
  const box = h("div", { class: "stack", dataset: { field: "set" } });
  const draw = () => {
    const rows = Object.entries(node.set).map(([k, v], i) => {
      const ki = h("input", { type: "text", name: "set_target", value: k, "aria-label": `Target ${i + 1} (memory.KEY or user.KEY)` });
      const vi = h("input", { type: "text", name: "set_value", value: typeof v === "string" ? v : JSON.stringify(v), "aria-label": `Value ${i + 1}` });
      const write = () => {
        const entries = Object.entries(node.set);
        let val = vi.value;
        if (/^(true|false|null|-?\d+(\.\d+)?)$/.test(val)) val = JSON.parse(val);
        entries[i] = [ki.value, val];
        node.set = Object.fromEntries(entries);
        changed();
      };
      ki.addEventListener("change", write);
      vi.addEventListener("input", write);
      const del = h("button", { type: "button", class: "small danger", "aria-label": `Delete assignment ${i + 1}` }, "Delete");
      del.addEventListener("click", () => { const e = Object.entries(node.set); e.splice(i, 1); node.set = Object.fromEntries(e); changed(); draw(); });
      return h("div", { class: "row" }, ki, vi, del);
    });
    const add = h("button", { type: "button", class: "small" }, "Add assignment");
    add.addEventListener("click", () => { node.set[`memory.key${Object.keys(node.set).length + 1}`] = ""; changed(); draw(); });
    box.replaceChildren(h("p", { class: "small muted" }, "Assign memory.KEY or user.KEY: a number, true/false, text with merge tags, or a CEL expression."), ...rows, h("div", {}, add));
  };
  draw();
  return box;
}

/** A question's Redirect Type: Webhook sends its answer to the endpoints (`notify`). */
function redirectType(n) {
  const f = choose({ redirect_type: n.notify ? "webhook" : "" }, "redirect_type", "Redirect Type", [["", "Interaction"], ["webhook", "Webhook"]], {
    hint: "Webhook: once answered, the answer is sent to the bot's endpoints (response.received).",
    onChange: (v) => { if (v) n.notify = true; else delete n.notify; },
  });
  f.dataset.field = "notify";
  return f;
}

/**
 * Node kinds, in the order offered. Each entry is what the editor needs to
 * know about one kind: its key in the flow document, its name, a colour
 * for the map, a fresh node, and its form. A new kind is one entry here.
 */
export const NODE_KINDS = [
  {
    key: "ask", label: "Question", colour: "#2563eb",
    make: () => ({ ask: "", save_as: "answer" }),
    form: (n) => [
      text(n, "ask", "Question", { area: true }),
      text(n, "save_as", "Saves the answer as", { hint: "memory.KEY: a name of letters, digits, - and _" }),
      validationFields(n),
      text(n, "retry", "Retry text", { hint: "Said when the answer is not valid." }),
      redirectType(n),
      toggle(n, "datapoint", "Datapoint (datapoint.collected)"),
      nextField(n), mediaFields(n), timerFields(n),
    ],
  },
  {
    key: "menu", label: "Menu", colour: "#7c3aed",
    make: () => ({ menu: "", options: [] }),
    form: (n) => [text(n, "menu", "Menu text", { area: true }), optionsTable(n),
      text(n, "retry", "Retry text", { hint: "Said when the answer is not an option." }), mediaFields(n), timerFields(n)],
  },
  { key: "message", label: "Message", colour: "#059669", make: () => ({ message: "" }), form: (n) => [text(n, "message", "Message", { area: true }), nextField(n), mediaFields(n)] },
  {
    key: "webhook", label: "Story webhook call", colour: "#d97706", make: () => ({ webhook: "" }),
    form: (n) => [choose(n, "webhook", "Story webhook", storyPairs()), nextField(n), choose(n, "on_error", "On error go to", nodePairs())],
  },
  { key: "quote", label: "Quote", colour: "#0891b2", make: () => ({ quote: true }), form: (n) => [nextField(n), choose(n, "on_error", "On error go to", nodePairs())] },
  {
    key: "booking", label: "Booking", colour: "#db2777", make: () => ({ booking: "" }),
    form: (n) => [text(n, "booking", "Booking text", { area: true }), number(n, "offer", "Slots offered", { min: 1 }), text(n, "cancel_keyword", "Cancel keyword"),
      text(n, "retry", "Retry text"), nextField(n), choose(n, "on_error", "On error go to", nodePairs()), timerFields(n)],
  },
  { key: "set", label: "Set variables", colour: "#4b5563", make: () => ({ set: {} }), form: (n) => [setTable(n), nextField(n)] },
  { key: "end", label: "End", colour: "#991b1b", make: () => ({ end: true }), form: (n) => [text(n, "message", "Closing message", { area: true })] },
  {
    key: "handoff", label: "Hand-off to a person", colour: "#b45309", make: () => ({ handoff: true }),
    form: (n) => [text(n, "message", "What the contact is told", { area: true, hint: "Empty: \"Thank you. A person will answer you here shortly.\"" })],
  },
];

/** The kind entry of a node (`end` and `handoff` first: they may carry a `message`). */
export function kindOf(node) {
  if (node && node.end !== undefined) return NODE_KINDS.find((k) => k.key === "end");
  if (node && node.handoff !== undefined) return NODE_KINDS.find((k) => k.key === "handoff");
  return NODE_KINDS.find((k) => node && node[k.key] !== undefined) || { key: "unknown", label: "Node", colour: "#6b7280", form: () => [] };
}

// ------------------------------------------------------------ editor state

/** The page's state: the document, the graph on show, the saved version. */
const ctx = { doc: null, graphName: "main", graph: null, stories: [], dirty: false, version: null, bot: "", onDirty: () => {} };

function changed() {
  if (!ctx.dirty) { ctx.dirty = true; ctx.onDirty(); }
}
fieldHooks.changed = changed;

const graphOf = (doc, name) => (name === "main" ? doc : (doc.campaigns || {})[name]);

/** Re-keys `nodes` in the given order (objects keep insertion order). */
function reorder(graph, ids) {
  const old = graph.nodes;
  graph.nodes = {};
  ids.forEach((id) => { graph.nodes[id] = old[id]; });
}

const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

// ------------------------------------------------------------ the page

export async function buildBot(main, { id }) {
  const bot = await api("GET", `/v1/bots/${seg(id)}`);
  ctx.bot = id;
  ctx.dirty = false;
  ctx.graphName = "main";
  ctx.version = null;
  ctx.doc = { nodes: {} };
  if (bot.flow_version) {
    const resp = await api("GET", `/v1/bots/${seg(id)}/flow`, { raw: true });
    ctx.doc = await resp.json();
    ctx.version = resp.headers.get("x-flow-version");
  }
  // Unsaved changes carried over from the YAML editor (checked there by the server).
  const draftKey = `botwire.draft.${id}`;
  const carried = JSON.parse(sessionStorage.getItem(draftKey) || "null");
  sessionStorage.removeItem(draftKey);
  const fromYaml = carried && carried.from === "yaml";
  if (fromYaml) {
    ctx.doc = carried.doc;
    ctx.version = carried.version ? String(carried.version) : null;
    ctx.dirty = true;
  }
  try {
    const settings = await api("GET", `/v1/bots/${seg(id)}/settings`);
    ctx.stories = (settings.webhooks || []).map((w) => w.name);
  } catch { ctx.stories = []; }

  const state = h("p", { class: "small muted", id: "build-state", "aria-live": "polite" });
  const showState = () => {
    state.textContent = ctx.dirty ? "Unsaved changes." : ctx.version ? `Saved: version ${ctx.version}.` : "Not saved yet.";
  };
  ctx.onDirty = showState;
  showState();
  // The YAML editor: unsaved changes go along (as JSON, which it reads too).
  const toYaml = h("a", { class: "button", href: `#/bots/${seg(id)}/edit` }, "Edit as YAML");
  toYaml.addEventListener("click", () => {
    if (!ctx.dirty) return;
    sessionStorage.setItem(draftKey, JSON.stringify({ from: "forms", version: ctx.version, doc: ctx.doc }));
    ctx.dirty = false;
  });
  const here = location.hash;
  leaveGuard.current = { hash: here, dirty: () => ctx.dirty };

  main.append(pageHead(`Build: ${bot.name}`, {
    crumbs: [h("a", { href: "#/bots" }, "Bots"), " / ", h("a", { href: `#/bots/${seg(id)}` }, bot.name)],
    sub: "The flow as forms. The YAML editor edits the same flow; a save from either makes a new version.",
    actions: [toYaml, h("a", { class: "button", href: `#/bots/${seg(id)}` }, "Chat preview")],
  }));

  const result = h("div", { "aria-live": "polite", id: "build-result" });
  const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": "Flows of this bot" });
  const body = h("div", { class: "stack", id: "build-body" });

  const drawTabs = () => {
    const names = ["main", ...Object.keys(ctx.doc.campaigns || {})];
    tabs.replaceChildren(...names.map((n) => {
      const b = h("button", { type: "button", role: "tab", class: "tab", "aria-selected": String(n === ctx.graphName), dataset: { graph: n } },
        n === "main" ? "Main flow" : `Campaign ${n}`);
      b.addEventListener("click", () => { ctx.graphName = n; drawTabs(); draw(); tabs.querySelector(`[data-graph="${n}"]`)?.focus(); });
      return b;
    }), hookTab, mapTab);
    mapTab.setAttribute("aria-selected", String(ctx.graphName === "#map"));
    hookTab.setAttribute("aria-selected", String(ctx.graphName === "#webhook"));
  };
  const hookTab = h("button", { type: "button", role: "tab", class: "tab", dataset: { graph: "#webhook" } }, "Webhook");
  hookTab.addEventListener("click", () => { ctx.graphName = "#webhook"; drawTabs(); draw(); hookTab.focus(); });
  const mapTab = h("button", { type: "button", role: "tab", class: "tab", dataset: { graph: "#map" } }, "Map");
  mapTab.addEventListener("click", () => { ctx.graphName = "#map"; drawTabs(); draw(); mapTab.focus(); });

  function draw() {
    if (ctx.graphName === "#webhook") {
      body.replaceChildren(webhookSection(id, ctx.doc, () => ctx.dirty));
      return;
    }
    if (ctx.graphName === "#map") {
      body.replaceChildren(flowMap(ctx.doc, (graph, node) => {
        ctx.graphName = graph;
        drawTabs();
        draw();
        const card = body.querySelector(`[data-node="${CSS.escape(node)}"]`);
        if (card) { card.querySelector("details").open = true; card.scrollIntoView({ block: "center" }); card.querySelector("summary").focus(); }
      }, kindOf));
      return;
    }
    const graph = graphOf(ctx.doc, ctx.graphName);
    if (!graph) { ctx.graphName = "main"; drawTabs(); draw(); return; }
    graph.nodes = graph.nodes || {};
    ctx.graph = graph;
    body.replaceChildren(...graphEditor(graph, ctx.graphName, draw, drawTabs));
  }

  // Save: a new version, based on the one loaded (If-Match).
  const save = h("button", { type: "button", class: "primary", id: "build-save" }, "Save flow");
  save.addEventListener("click", async () => {
    result.replaceChildren();
    body.querySelectorAll(".node-errors").forEach((e) => e.replaceChildren());
    body.querySelectorAll("[aria-invalid]").forEach((e) => e.removeAttribute("aria-invalid"));
    save.disabled = true;
    try {
      const headers = ctx.version ? { "If-Match": `"${ctx.version}"` } : {};
      const r = await api("PUT", `/v1/bots/${seg(id)}/flow`, { json: ctx.doc, headers });
      ctx.version = String(r.version);
      ctx.dirty = false;
      showState();
      toast(`Saved as version ${r.version}`);
      result.replaceChildren(alert("ok", `Saved as version ${r.version}. `, h("a", { href: `#/bots/${seg(id)}` }, "Chat with it")));
    } catch (err) {
      if (err.status === 409) {
        const reload = h("button", { type: "button" }, "Reload");
        reload.addEventListener("click", () => { ctx.dirty = false; render(); });
        result.replaceChildren(alert("error", `${err.message} `, reload, " (reloading drops your unsaved changes here).")); 
        result.querySelector(".alert").focus();
      } else if (err.code === "invalid_flow" && Array.isArray(err.details)) {
        placeErrors(err.details, body, result, {
          setGraph: (g) => { ctx.graphName = g; drawTabs(); draw(); },
          opened: (key) => ctx.openNodes.add(key),
        });
      } else {
        result.replaceChildren(alert("error", plain(err)));
        result.querySelector(".alert").focus();
      }
    } finally { save.disabled = false; }
  });

  const render = () => { window.dispatchEvent(new HashChangeEvent("hashchange")); };

  main.append(h("div", { class: "build" },
    flowSettings(),
    h("div", { class: "row spread build-bar" }, h("div", {}, save, " ", state), h("p", { class: "small muted" }, "Switching to the YAML editor and back keeps unsaved changes; only YAML comments are lost.")),
    fromYaml ? alert("info", "Your unsaved changes from the YAML editor are here (its comments are not). Save to keep them.") : null,
    result, tabs, body));
  drawTabs();
  draw();
}

/** Start, error handler, expiry and global keywords of the main flow. */
function flowSettings() {
  const box = h("details", { class: "panel more", id: "flow-settings" }, h("summary", {}, "Flow settings: keywords, expiry, error handler"));
  const fill = () => {
    ctx.doc.nodes = ctx.doc.nodes || {};
    const kw = h("div", { class: "stack", dataset: { field: "keywords" } });
    const drawKw = () => {
      const entries = Object.entries(ctx.doc.keywords || {});
      const rows = entries.map(([word, target], i) => {
        const wi = h("input", { type: "text", name: "keyword_word", value: word, "aria-label": `Keyword ${i + 1}` });
        const full = typeof target === "object" ? target : { next: target };
        const ti = h("select", { name: "keyword_next", "aria-label": `Node of keyword ${i + 1}` }, nodePairs(undefined, ctx.doc).map(([v, l]) => h("option", { value: v }, l)));
        ti.value = full.next || "";
        const flag = h("select", { name: "keyword_flag", "aria-label": `Opt-out or opt-in of keyword ${i + 1}` },
          h("option", { value: "" }, "Go to node"), h("option", { value: "opt_out" }, "Opt out"), h("option", { value: "opt_in" }, "Opt in"));
        flag.value = full.opt_out ? "opt_out" : full.opt_in ? "opt_in" : "";
        const write = () => {
          const e = Object.entries(ctx.doc.keywords || {});
          const v = flag.value ? { next: ti.value, [flag.value]: true } : ti.value;
          e[i] = [wi.value, v];
          ctx.doc.keywords = Object.fromEntries(e);
          changed();
        };
        [wi, ti, flag].forEach((x) => x.addEventListener("change", write));
        const del = h("button", { type: "button", class: "small danger", "aria-label": `Delete keyword ${i + 1}` }, "Delete");
        del.addEventListener("click", () => {
          const e = Object.entries(ctx.doc.keywords || {}); e.splice(i, 1);
          if (e.length) ctx.doc.keywords = Object.fromEntries(e); else delete ctx.doc.keywords;
          changed(); drawKw();
        });
        return h("div", { class: "row" }, wi, ti, flag, del);
      });
      const add = h("button", { type: "button", class: "small" }, "Add keyword");
      add.addEventListener("click", () => { ctx.doc.keywords = { ...(ctx.doc.keywords || {}), [`word${entries.length + 1}`]: ctx.doc.start || "" }; changed(); drawKw(); });
      kw.replaceChildren(h("h3", {}, "Keywords"), h("p", { class: "small muted" }, "Typed at any waiting step, they go to their node."), ...rows, h("div", {}, add));
    };
    drawKw();
    box.replaceChildren(box.firstChild,
      h("div", { class: "row wrap-row" }, choose(ctx.doc, "error", "Error handler", nodePairs(undefined, ctx.doc)), text(ctx.doc, "expire_after", "Close idle conversations after", { hint: "e.g. 24h" })),
      kw);
  };
  box.addEventListener("toggle", () => { if (box.open) fill(); });
  return box;
}

/** The Welcome Message, the Interactions and the add form of one graph. */
function graphEditor(graph, graphName, redraw, redrawTabs) {
  const ids = Object.keys(graph.nodes);
  const out = [];
  if (graphName !== "main") {
    const del = h("button", { type: "button", class: "danger small" }, `Delete campaign ${graphName}`);
    del.addEventListener("click", () => {
      if (!confirm(`Delete the campaign “${graphName}” and its nodes?`)) return;
      delete ctx.doc.campaigns[graphName];
      if (!Object.keys(ctx.doc.campaigns).length) delete ctx.doc.campaigns;
      ctx.graphName = "main"; changed(); redrawTabs(); redraw();
    });
    out.push(h("div", { class: "row" }, del));
  }
  out.push(h("div", { class: "row wrap-row" }, choose(graph, "start", "Welcome Message (start)", nodePairs("— choose the first node —"), { onChange: () => redraw() })));
  const start = graph.start;
  const cards = (list) => list.map((nid) => nodeCard(graph, graphName, nid, redraw));
  out.push(h("section", { class: "stack", "aria-labelledby": "wm-h" }, h("h2", { id: "wm-h" }, "Welcome Message"),
    start && graph.nodes[start] ? cards([start]) : h("p", { class: "muted" }, "Add a node and choose it as the start.")));
  out.push(h("section", { class: "stack", "aria-labelledby": "int-h" }, h("h2", { id: "int-h" }, "Interactions"),
    ...cards(ids.filter((x) => x !== start))));
  out.push(addNodeForm(graph, redraw));
  if (graphName === "main") out.push(addCampaignForm(redraw, redrawTabs));
  return out;
}

function nodeCard(graph, graphName, nid, redraw) {
  const node = graph.nodes[nid];
  const kind = kindOf(node);
  const isStart = graph.start === nid;
  const errors = h("ul", { class: "node-errors field-error", role: "alert" });
  const ids = Object.keys(graph.nodes);
  const i = ids.indexOf(nid);
  const act = (label, name, fn, cls = "small") => {
    const b = h("button", { type: "button", class: cls, dataset: { action: name }, "aria-label": `${label} ${nid}` }, label);
    b.addEventListener("click", fn);
    return b;
  };
  const move = (d) => {
    const j = i + d;
    if (j < 0 || j >= ids.length) return;
    [ids[i], ids[j]] = [ids[j], ids[i]];
    reorder(graph, ids);
    changed();
    redraw();
    document.querySelector(`[data-node="${CSS.escape(nid)}"] [data-action=${d < 0 ? "up" : "down"}]`)?.focus();
  };
  const dup = () => {
    let n = 2;
    while (graph.nodes[`${nid}_${n}`]) n++;
    const copy = `${nid}_${n}`.slice(0, 64);
    const at = ids.indexOf(nid) + 1;
    graph.nodes[copy] = JSON.parse(JSON.stringify(node));
    if (graph.nodes[copy].label) graph.nodes[copy].label = `${graph.nodes[copy].label} (copy)`;
    ids.splice(at, 0, copy);
    reorder(graph, ids);
    changed();
    redraw();
  };
  const del = () => {
    if (!confirm(`Delete the node “${nid}”? Steps that lead to it must then go elsewhere.`)) return;
    delete graph.nodes[nid];
    if (graph.start === nid) delete graph.start;
    changed();
    redraw();
  };
  const details = h("details", { open: ctx.openNodes.has(`${graphName}/${nid}`) || undefined },
    h("summary", {}, h("strong", {}, node.label || nid), " ", badge("info", kind.label), isStart ? [" ", badge("ok", "start")] : null,
      node.label ? [" ", h("code", { class: "muted" }, nid)] : null),
    h("div", { class: "stack node-form" }, text(node, "label", "Label", { hint: "The “label” of flat payloads; the node id when empty." }), ...kind.form(node)),
    h("div", { class: "row actions" }, act("Up", "up", () => move(-1)), act("Down", "down", () => move(1)), act("Duplicate", "duplicate", dup), act("Delete", "delete", del, "small danger")));
  // Escape inside an open card closes it and puts the focus on its title.
  details.addEventListener("keydown", (e) => {
    if (e.key !== "Escape" || !details.open) return;
    e.stopPropagation();
    details.open = false;
    details.querySelector("summary").focus();
  });
  details.addEventListener("toggle", () => { if (details.open) ctx.openNodes.add(`${graphName}/${nid}`); else ctx.openNodes.delete(`${graphName}/${nid}`); });
  const article = h("article", { class: "node bnode", dataset: { node: nid, graph: graphName } }, details, errors);
  // Through the CSSOM: the console's CSP refuses style attributes.
  article.style.borderLeftColor = kind.colour;
  return article;
}
ctx.openNodes = new Set();

function addNodeForm(graph, redraw) {
  const kind = h("select", { name: "new_kind" }, NODE_KINDS.map((k) => h("option", { value: k.key }, k.label)));
  const nid = h("input", { type: "text", name: "new_id", autocomplete: "off", pattern: "[A-Za-z0-9_-]+" });
  const msg = h("p", { class: "field-error", hidden: true, role: "alert" });
  const form = h("form", { class: "panel stack", id: "add-node" }, h("h2", {}, "Add an interaction"),
    h("div", { class: "row wrap-row" }, field("Kind", kind), field("Id", nid, "Letters, digits, - and _ (used by Redirect To)")),
    msg, h("div", {}, h("button", { type: "submit", class: "primary" }, "Add interaction")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const id = nid.value.trim();
    const problem = !ID_RE.test(id) ? "The id must be 1-64 letters, digits, - or _." : graph.nodes[id] ? `There is already a node “${id}”.` : "";
    msg.textContent = problem;
    msg.hidden = !problem;
    if (problem) { nid.focus(); return; }
    graph.nodes[id] = NODE_KINDS.find((k) => k.key === kind.value).make();
    if (!graph.start) graph.start = id;
    ctx.openNodes.add(`${ctx.graphName}/${id}`);
    changed();
    redraw();
    const card = document.querySelector(`[data-node="${CSS.escape(id)}"]`);
    card?.querySelector("textarea, input")?.focus();
  });
  return form;
}

function addCampaignForm(redraw, redrawTabs) {
  const name = h("input", { type: "text", name: "new_campaign", autocomplete: "off" });
  const msg = h("p", { class: "field-error", hidden: true, role: "alert" });
  const form = h("form", { class: "panel stack", id: "add-campaign" }, h("h2", {}, "Add a campaign"),
    field("Campaign name", name, "Another flow of the bot, which a menu option can start."), msg,
    h("div", {}, h("button", { type: "submit" }, "Add campaign")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const n = name.value.trim();
    const problem = !ID_RE.test(n) || n === "main" ? "The name must be 1-64 letters, digits, - or _, and not “main”." : (ctx.doc.campaigns || {})[n] ? `There is already a campaign “${n}”.` : "";
    msg.textContent = problem;
    msg.hidden = !problem;
    if (problem) { name.focus(); return; }
    ctx.doc.campaigns = { ...(ctx.doc.campaigns || {}), [n]: { nodes: {} } };
    changed();
    ctx.graphName = n;
    redrawTabs();
    redraw();
    document.querySelector(`.tabs [data-graph="${CSS.escape(n)}"]`)?.focus();
  });
  return form;
}
