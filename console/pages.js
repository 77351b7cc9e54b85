// Pages about bots: sign-in, the bot list, creating a bot (from scratch or
// an example), a bot's outline with its chat preview, and the flow editor.

import { api, all, session, plain, seg, ApiError } from "./api.js";
import {
  h, field, alert, toast, button, badge, time, pageHead, facts, showError, clearErrors, select, pretty,
} from "./ui.js";
import { outline, summary, lineOf, STARTER } from "./flow.js";

const TYPES = [
  ["data_collection", "Data collection"], ["quote_generation", "Quote generation"],
  ["appointment", "Appointments"], ["support", "Support"],
];
const typeName = (t) => (TYPES.find(([v]) => v === t) || [t, t])[1];

// ------------------------------------------------------------------ sign-in

export function signIn(main, { notice } = {}) {
  const key = h("input", { type: "password", name: "key", autocomplete: "off", spellcheck: "false", required: true, placeholder: "bw_…" });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", { class: "stack panel", novalidate: true },
    notice ? alert("info", notice) : null,
    field("API key", key, "The admin key botwire printed on first start, or any key made with POST /v1/keys. It is kept in this browser tab only, until you sign out or close it."),
    h("div", {}, submit));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    const k = key.value.trim();
    if (!k) { showError(form, new ApiError(0, "empty", "Enter your API key to sign in."), submit.parentElement); key.focus(); return; }
    submit.disabled = true;
    try {
      await api("GET", "/v1/bots?limit=1", { key: k });
      session.set(k);
      location.hash = "#/bots";
    } catch (err) {
      const msg = err.status === 401
        ? "That key was not accepted. Check that you copied all of it (it starts with bw_) and that it has not been revoked."
        : plain(err);
      form.insertBefore(alert("error", msg), submit.parentElement);
      key.setAttribute("aria-invalid", "true");
      key.focus();
    } finally { submit.disabled = false; }
  });
  main.append(h("div", { class: "signin" },
    h("div", { class: "brand" }, h("img", { src: "/console/favicon.svg", alt: "", width: 28, height: 28 }), "botwire"),
    h("h1", { tabindex: "-1" }, "Sign in"),
    h("p", { class: "muted" }, "Manage your bots, their flows and the webhooks their events go to."),
    form));
  key.focus();
}

// --------------------------------------------------------------------- bots

export async function bots(main) {
  const list = await all("/v1/bots");
  main.append(pageHead("Bots", {
    sub: "Each bot runs a flow; what happens in a conversation becomes events, delivered to your webhooks.",
    actions: h("a", { class: "button primary", href: "#/bots/new" }, "New bot"),
  }));
  if (!list.length) {
    main.append(h("div", { class: "panel empty" },
      h("p", {}, "No bots yet."),
      h("a", { class: "button primary", href: "#/bots/new" }, "Create your first bot")));
    return;
  }
  main.append(h("div", { class: "grid" }, list.map((b) => h("article", { class: "card" },
    h("h3", {}, h("a", { href: `#/bots/${seg(b.id)}` }, b.name)),
    h("div", { class: "row" }, badge("info", typeName(b.type)), h("code", { class: "muted" }, b.id)),
    h("p", { class: "small muted" }, b.flow_version ? `Flow version ${b.flow_version}` : "No flow yet", " · updated ", time(b.updated_at)),
    h("div", { class: "row actions" },
      h("a", { class: "button small", href: `#/bots/${seg(b.id)}` }, "Open"),
      h("a", { class: "button small", href: `#/bots/${seg(b.id)}/edit` }, "Edit flow"))))));
}

// ------------------------------------------------------------------ new bot

export async function newBot(main) {
  main.append(pageHead("New bot", { crumbs: h("a", { href: "#/bots" }, "Bots"), actions: h("a", { class: "button", href: "#/bots/new/wizard" }, "Step by step") }));
  const examples = await api("GET", "/console/examples.json");

  // From an example.
  const exList = h("div", { class: "grid" }, examples.map((ex) => {
    const b = button(`Create ${ex.title}`, async () => {
      clearErrors(card);
      try {
        const r = await api("POST", "/v1/bots/import", { text: ex.yaml, contentType: "application/yaml" });
        toast(r.created ? `Created bot ${r.bot_id}` : `Updated bot ${r.bot_id} from the example`);
        location.hash = `#/bots/${seg(r.bot_id)}`;
      } catch (err) { showError(card, err, b.parentElement); }
    }, "primary small");
    b.dataset.example = ex.name;
    const card = h("article", { class: "card" },
      h("h3", {}, ex.title),
      h("p", { class: "small muted" }, h("code", {}, `examples/${ex.name}.yaml`)),
      h("p", { class: "small" }, ex.summary),
      h("div", { class: "actions" }, b));
    return card;
  }));

  // From scratch.
  const id = h("input", { type: "text", name: "id", autocomplete: "off", pattern: "[A-Za-z0-9_-]+" });
  const name = h("input", { type: "text", name: "name", required: true, autocomplete: "off" });
  const type = select("type", TYPES, "data_collection");
  const submit = h("button", { type: "submit", class: "primary" }, "Create bot");
  const form = h("form", { class: "stack", novalidate: true },
    field("Name", name, "Shown to you in the console."),
    field("Id (optional)", id, "Letters, digits, - and _; used in URLs. Generated when empty."),
    field("Type", type),
    h("div", {}, submit));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    submit.disabled = true;
    try {
      const body = { name: name.value.trim(), type: type.value };
      if (id.value.trim()) body.id = id.value.trim();
      const b = await api("POST", "/v1/bots", { json: body });
      toast(`Created bot ${b.id}; now write its flow`);
      location.hash = `#/bots/${seg(b.id)}/edit`;
    } catch (err) { showError(form, err, submit.parentElement); } finally { submit.disabled = false; }
  });

  main.append(h("div", { class: "split" },
    h("section", { class: "panel", "aria-labelledby": "ex-h" }, h("h2", { id: "ex-h" }, "From an example"),
      h("p", { class: "muted small" }, "Each example is a whole bot: its flow, and any price table, calendar or story webhooks. Importing one again updates the bot."),
      exList),
    h("section", { class: "panel", "aria-labelledby": "scratch-h" }, h("h2", { id: "scratch-h" }, "From scratch"),
      h("p", { class: "muted small" }, "Creates an empty bot and opens the flow editor with a starter flow."),
      form)));
}

// ---------------------------------------------------------------- bot detail

async function loadFlow(bot) {
  try { return await api("GET", `/v1/bots/${seg(bot)}/flow`); } catch (err) {
    if (err.status === 404) return null;
    throw err;
  }
}

export async function botDetail(main, { id }) {
  const bot = await api("GET", `/v1/bots/${seg(id)}`);
  const flow = bot.flow_version ? await loadFlow(id) : null;
  main.append(pageHead(bot.name, {
    crumbs: h("a", { href: "#/bots" }, "Bots"),
    sub: h("span", {}, badge("info", typeName(bot.type)), " ", h("code", {}, bot.id), bot.flow_version ? ` · flow version ${bot.flow_version}` : ""),
    actions: [
      h("a", { class: "button primary", href: `#/bots/${seg(id)}/build` }, "Build"),
      h("a", { class: "button", href: `#/bots/${seg(id)}/edit` }, "Edit flow"),
      h("a", { class: "button", href: `#/webhooks/new?bot=${seg(id)}` }, "Add webhook"),
      h("a", { class: "button", href: `#/stories?bot=${seg(id)}` }, "Story webhooks"),
      h("a", { class: "button", href: `#/bots/${seg(id)}/channels` }, "Channels"),
    ],
  }));
  if (!flow) {
    main.append(h("div", { class: "panel empty" }, h("p", {}, "This bot has no flow yet, so it cannot chat."),
      h("a", { class: "button primary", href: `#/bots/${seg(id)}/edit` }, "Write its flow")));
    main.append(botSettings(bot));
    return;
  }
  const s = summary(flow);
  main.append(h("div", { class: "split" },
    h("section", { class: "panel", "aria-labelledby": "outline-h" },
      h("h2", { id: "outline-h" }, "Flow"),
      h("p", { class: "small muted" }, `${s.nodes} steps, ${s.options} menu options, ${s.notify} that notify your endpoints, ${s.hooks} story-webhook calls, ${s.campaigns} campaign${s.campaigns === 1 ? "" : "s"}.`),
      outline(flow, id)),
    chatPreview(id)));
  main.append(botSettings(bot));
}

/** Rename or delete a bot. */
function botSettings(bot) {
  let current = bot.name;
  const name = h("input", { name: "name", type: "text", value: bot.name, autocomplete: "off", required: true });
  const form = h("form", { class: "stack", novalidate: true },
    field("Name", name, "Shown in lists; the id stays the same."),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Rename")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    try {
      const b = await api("PATCH", `/v1/bots/${seg(bot.id)}`, { json: { name: name.value.trim() } });
      current = b.name;
      toast(`Renamed to ${b.name}`);
      const h1 = document.querySelector("main h1");
      if (h1) h1.textContent = b.name;
    } catch (err) { showError(form, err); }
  });
  const del = button("Delete bot", async (b) => {
    if (!confirm(`Delete the bot “${current}” (${bot.id})? Its flow, conversations and webhooks go with it.`)) return;
    try {
      await api("DELETE", `/v1/bots/${seg(bot.id)}`);
      toast(`Deleted bot ${bot.id}`);
      location.hash = "#/bots";
    } catch (err) { showError(b.parentElement, err); }
  }, "danger");
  del.dataset.action = "delete-bot";
  return h("section", { class: "panel", "aria-labelledby": "settings-h" },
    h("h2", { id: "settings-h" }, "Bot settings"),
    form,
    h("div", { class: "row" }, del));
}

// --------------------------------------------------------------- chat preview

function chatPreview(bot) {
  let contact = `console-${Math.random().toString(36).slice(2, 10)}`;
  let turn = 0;
  const log = h("div", { class: "chat-log", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  const quick = h("div", { class: "quick", "aria-label": "Quick replies" });
  const input = h("input", { type: "text", name: "text", autocomplete: "off" });
  const send = h("button", { type: "submit", class: "primary" }, "Send");
  const events = h("ol", { class: "events", "aria-label": "Events produced" });
  const noEvents = h("p", { class: "small muted" }, "Events each turn produces appear here, newest first.");
  const status = h("div", {});

  const bubble = (who, text) => { log.append(h("div", { class: `bubble ${who}` }, text)); log.scrollTop = log.scrollHeight; };

  async function say(text) {
    status.replaceChildren();
    bubble("me", text);
    quick.replaceChildren();
    send.disabled = true;
    try {
      const r = await api("POST", `/v1/bots/${seg(bot)}/chat`, { json: { contact: { id: contact }, text } });
      // Texts as bubbles; media parts (image, video, audio, file) as a line
      // naming the kind and its URL, which the preview does not fetch.
      r.replies.forEach((m) => bubble("bot", m.type === "text" ? m.text
        : `[${m.type}] ${m.url}${m.caption ? ` — ${m.caption}` : ""}`));
      if (r.ended) bubble("note", "The conversation ended. Your next message starts a new one.");
      r.quick_replies.forEach((q) => {
        const b = h("button", { type: "button" }, q);
        b.addEventListener("click", () => say(q));
        quick.append(b);
      });
      turn++;
      await showEvents(r.events, turn, text);
    } catch (err) {
      status.replaceChildren(alert("error", plain(err)));
    } finally { send.disabled = false; input.focus(); }
  }

  async function showEvents(ids, n, text) {
    const got = await Promise.all(ids.map((e) => api("GET", `/v1/events/${seg(e)}`).catch(() => null)));
    noEvents.hidden = true;
    const items = got.filter(Boolean).map((ev) => h("li", { class: "event" },
      h("div", { class: "row spread" }, h("code", { class: "event-type" }, ev.type), h("time", { class: "small muted", datetime: ev.timestamp }, new Date(ev.timestamp).toLocaleTimeString())),
      h("details", {}, h("summary", { class: "small" }, "Data"), h("pre", {}, pretty(ev.data)))));
    const head = h("li", { class: "turn" }, `Turn ${n} (“${text.length > 30 ? `${text.slice(0, 30)}…` : text}”): ${items.length ? `${items.length} event${items.length > 1 ? "s" : ""}` : "no events"}`);
    events.prepend(head, ...items);
  }

  const form = h("form", { class: "chat-form" }, field("Message", input), send);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const t = input.value;
    if (!t.trim()) { input.focus(); return; }
    input.value = "";
    say(t);
  });
  const restart = button("Start over", () => {
    contact = `console-${Math.random().toString(36).slice(2, 10)}`;
    log.replaceChildren();
    quick.replaceChildren();
    bubble("note", "New conversation with a new test contact. Say hi.");
    input.focus();
  }, "small");
  bubble("note", "Say hi to start. This is a real conversation: its events go to the bot's endpoints.");
  return h("section", { class: "panel", "aria-labelledby": "chat-h" },
    h("div", { class: "row spread" }, h("h2", { id: "chat-h" }, "Chat preview"), restart),
    h("div", { class: "chat" }, log, quick, form),
    status,
    h("h3", { class: "campaign-title" }, "Events"),
    noEvents,
    events);
}

// -------------------------------------------------------------- flow editor

export async function editFlow(main, { id }) {
  const bot = await api("GET", `/v1/bots/${seg(id)}`);
  let text = STARTER;
  let fresh = true;
  // The version this edit starts from, sent as If-Match when saving.
  let version = bot.flow_version || null;
  if (bot.flow_version) {
    text = await api("GET", `/v1/bots/${seg(id)}/flow`, { accept: "application/yaml", asText: true });
    fresh = false;
  }
  // Unsaved changes carried over from the form editor (as JSON, which is YAML too).
  const draftKey = `botwire.draft.${id}`;
  const carried = JSON.parse(sessionStorage.getItem(draftKey) || "null");
  sessionStorage.removeItem(draftKey);
  const fromForms = carried && carried.from === "forms";
  if (fromForms) {
    text = JSON.stringify(carried.doc, null, 2);
    version = carried.version ? Number(carried.version) : null;
  }
  main.append(pageHead(`Edit flow: ${bot.name}`, {
    crumbs: [h("a", { href: "#/bots" }, "Bots"), " / ", h("a", { href: `#/bots/${seg(id)}` }, bot.name)],
    sub: fresh ? "A starter flow to adapt; nothing is saved until you save." : `Current version ${bot.flow_version}. Saving makes a new version; conversations in progress continue on it.`,
  }));

  const area = h("textarea", { id: "flow-text", name: "flow", spellcheck: "false", autocapitalize: "off", autocomplete: "off", wrap: "off", rows: 28 });
  area.value = text;
  const gutter = h("pre", { class: "gutter", "aria-hidden": "true" });
  const format = select("format", [["yaml", "YAML"], ["json", "JSON"]], fromForms ? "json" : "yaml");
  const save = h("button", { type: "submit", class: "primary" }, "Save flow");
  const result = h("div", { "aria-live": "polite" });
  const problems = h("ol", { class: "problems", id: "flow-problems" });
  let errorLines = new Set();

  const paint = () => {
    const n = area.value.split("\n").length;
    const out = [];
    for (let i = 1; i <= n; i++) {
      if (errorLines.has(i)) out.push(h("span", { class: "err" }, String(i)), "\n");
      else out.push(`${i}\n`);
    }
    gutter.replaceChildren(...out);
    gutter.scrollTop = area.scrollTop;
  };
  let dirty = fromForms;
  area.addEventListener("input", () => { dirty = true; paint(); });
  // The form editor: unsaved text goes along, checked by the server first.
  const toForms = button("Edit with forms", async () => {
    result.replaceChildren();
    if (!dirty) { location.hash = `#/bots/${seg(id)}/build`; return; }
    try {
      const doc = await api("POST", `/v1/bots/${seg(id)}/flow/check`, { text: area.value, contentType: format.value === "yaml" ? "application/yaml" : "application/json" });
      sessionStorage.setItem(draftKey, JSON.stringify({ from: "yaml", version, doc }));
      location.hash = `#/bots/${seg(id)}/build`;
    } catch (err) {
      const n = Array.isArray(err.details) ? err.details.length : 0;
      result.append(alert("error", n ? `The forms need a flow the server can read: ${n} problem${n > 1 ? "s" : ""} (Save flow lists them by line). ${err.details[0].message}` : plain(err)));
    }
  });
  // Switching the format of an unedited saved flow loads it in that format.
  format.addEventListener("change", async () => {
    if (dirty || fresh) return;
    try {
      const accept = format.value === "yaml" ? "application/yaml" : "application/json";
      area.value = await api("GET", `/v1/bots/${seg(id)}/flow`, { accept, asText: true });
      paint();
    } catch (err) { result.replaceChildren(alert("error", plain(err))); }
  });
  area.addEventListener("scroll", () => { gutter.scrollTop = area.scrollTop; });
  // Tab indents two spaces; Escape then Tab leaves the editor (keyboard users are not trapped).
  let escaped = false;
  area.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { escaped = true; return; }
    if (e.key === "Tab" && !e.shiftKey && !escaped) {
      e.preventDefault();
      const { selectionStart: s, selectionEnd: t } = area;
      area.setRangeText("  ", s, t, "end");
      paint();
    }
    escaped = false;
  });

  const jump = (line) => {
    const lines = area.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((a, l) => a + l.length + 1, 0);
    area.focus();
    area.setSelectionRange(start, start + (lines[line - 1] || "").length);
    const lh = parseFloat(getComputedStyle(area).lineHeight) || 20;
    area.scrollTop = Math.max(0, (line - 4) * lh);
  };

  const form = h("form", { class: "stack" },
    h("label", { for: "flow-text" }, "Flow (YAML or JSON)"),
    h("div", { class: "editor" }, gutter, area),
    h("div", { class: "row" }, field("Format", format), h("div", { class: "row" }, save, toForms)),
    fromForms ? alert("info", "Your unsaved changes from the form editor, as JSON (which this editor reads too). Save to keep them.") : null,
    result);
  area.setAttribute("aria-describedby", "flow-problems");

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    result.replaceChildren();
    problems.replaceChildren();
    errorLines = new Set();
    save.disabled = true;
    const yaml = format.value === "yaml";
    try {
      const headers = version ? { "If-Match": `"${version}"` } : {};
      const r = await api("PUT", `/v1/bots/${seg(id)}/flow`, { text: area.value, contentType: yaml ? "application/yaml" : "application/json", headers });
      version = r.version;
      dirty = false;
      fresh = false;
      result.append(alert("ok", `Saved as version ${r.version}. `, h("a", { href: `#/bots/${seg(id)}` }, "See the outline and chat with it")));
      problems.append(h("li", { class: "ok-note" }, "No problems."));
      problems.lastChild.className = "alert ok";
    } catch (err) {
      if (err.code === "invalid_flow" && Array.isArray(err.details)) {
        result.append(alert("error", `The flow was not saved: ${err.details.length} problem${err.details.length > 1 ? "s" : ""} to fix (listed beside the editor). The previous version stays current.`));
        const items = err.details.map((d) => ({ d, line: lineOf(area.value, d) })).sort((a, b) => (a.line ?? 1e9) - (b.line ?? 1e9));
        for (const { d, line } of items) {
          if (line) errorLines.add(line);
          const where = [d.node && `node ${d.node}`, d.field && `field ${d.field}`].filter(Boolean).join(", ");
          problems.append(h("li", {},
            h("div", { class: "row spread" }, h("strong", {}, line ? `Line ${line}` : "Whole flow"),
              line ? h("button", { type: "button", class: "small", onclick: () => jump(line) }, `Go to line ${line}`) : null),
            where ? h("div", { class: "small" }, h("code", {}, where)) : null,
            h("div", {}, d.message)));
        }
        paint();
        problems.querySelector("button")?.focus();
      } else {
        result.append(alert("error", plain(err)));
      }
    } finally { save.disabled = false; }
  });

  main.append(h("div", { class: "split" },
    h("section", { class: "panel", "aria-labelledby": "editor-h" }, h("h2", { id: "editor-h" }, "Flow document"),
      h("p", { class: "small muted" }, "The format is described in docs/FLOWS.md. Tab indents; press Escape, then Tab, to leave the editor."),
      form),
    h("section", { class: "panel", "aria-labelledby": "problems-h" }, h("h2", { id: "problems-h" }, "Problems"),
      h("p", { class: "small muted" }, "The server checks the whole flow when you save; each problem names its line."),
      problems)));
  paint();
}
