// Inbox: the account's conversations, most recently active first, kept
// live by polling (every few seconds while the page is open); one
// conversation's transcript with its events, memory and contact
// attributes; and, for a conversation handed off to a person, a reply box
// and a button that gives it back to the bot.

import { api, all, seg, plain } from "./api.js";
import { h, field, time, pageHead, pretty, showError, clearErrors, badge, select, toast, alert } from "./ui.js";

/** How often a page of the inbox asks for what changed. */
const POLL_MS = 3000;

const STATUS = {
  active: ["info", "Bot answering"],
  handoff: ["warn", "Waiting for a person"],
  completed: ["off", "Ended"],
};
const statusBadge = (s) => badge(...(STATUS[s] || ["off", s]));

/** Runs `tick` every POLL_MS while the route's path is still `path`. */
function everyFewSeconds(path, tick) {
  const timer = setInterval(() => {
    if (location.hash.split("?")[0] !== path) { clearInterval(timer); return; }
    if (document.visibilityState !== "hidden") tick();
  }, POLL_MS);
}

function row(c) {
  const href = `#/inbox/${seg(c.bot_id)}/${seg(c.id)}`;
  return h("tr", { dataset: { conversation: c.id, status: c.status } },
    h("td", { "data-label": "Conversation" }, h("a", { href }, c.id)),
    h("td", { "data-label": "Status" }, statusBadge(c.status)),
    h("td", { "data-label": "Bot" }, c.bot_id),
    h("td", { "data-label": "Channel" }, c.channel),
    h("td", { "data-label": "At node" }, c.node ? h("code", {}, c.node) : "—"),
    h("td", { "data-label": "Last activity" }, time(c.updated_at)));
}

export async function inbox(main, { query }) {
  main.append(pageHead("Inbox", {
    sub: "Conversations, most recently active first. The list updates by itself. A conversation waiting for a person can be answered and given back to the bot from its page.",
  }));
  let bots = [];
  try { bots = await all("/v1/bots"); } catch { /* a bot-scoped key lists no bots: the filter offers its own */ }
  const status = select("status", [["", "Any status"], ["handoff", "Waiting for a person"], ["active", "Bot answering"], ["completed", "Ended"]], query.get("status") || "");
  const bot = select("bot", [["", "Any bot"], ...bots.map((b) => [b.id, b.name])], query.get("bot") || "");
  const channel = select("channel", [["", "Any channel"], ...["api", "web", "whatsapp", "telegram", "twilio", "messenger"].map((c) => [c, c])], query.get("channel") || "");
  const form = h("form", { class: "panel row", "aria-label": "Filter conversations" },
    field("Status", status), field("Bot", bot), field("Channel", channel));
  const tableBody = h("tbody", {});
  const empty = h("p", { class: "muted", hidden: true }, "No conversations match.");
  const live = h("p", { class: "small muted" }, "");
  let shown = null;
  async function load() {
    clearErrors(form);
    const q = new URLSearchParams({ limit: "100" });
    for (const [k, el] of [["status", status], ["bot", bot], ["channel", channel]]) if (el.value) q.set(k, el.value);
    try {
      const page = await api("GET", `/v1/conversations?${q}`);
      // Rows are rebuilt only when something changed, so the keyboard
      // focus stays where it is between polls.
      const seen = JSON.stringify(page.data);
      if (seen !== shown) { shown = seen; tableBody.replaceChildren(...page.data.map(row)); }
      empty.hidden = page.data.length > 0;
      live.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (err.status === 401) return;
      showError(form, err);
    }
  }
  form.addEventListener("change", load);
  form.addEventListener("submit", (e) => { e.preventDefault(); load(); });
  main.append(form, h("div", { class: "panel" },
    h("h2", {}, "Conversations"), live, empty,
    h("div", { class: "table-wrap" }, h("table", { class: "responsive" },
      h("thead", {}, h("tr", {}, ["Conversation", "Status", "Bot", "Channel", "At node", "Last activity"].map((t) => h("th", { scope: "col" }, t)))),
      tableBody))));
  await load();
  everyFewSeconds("#/inbox", load);
}

/** One transcript line as a list item. */
function line(m) {
  const at = time(m.at);
  switch (m.direction) {
    case "in":
      return h("li", { class: "msg in" }, h("span", { class: "who" }, "Contact"), " ", at, h("p", {}, m.text));
    case "agent":
      return h("li", { class: "msg agent" }, h("span", { class: "who" }, "Person"), " ", at, h("p", {}, m.text));
    case "out":
      return h("li", { class: "msg out" }, h("span", { class: "who" }, "Bot"), " ", at,
        (m.replies || []).filter((r) => r).map((r) => h("p", {}, r)),
        (m.media || []).map((x) => h("p", { class: "small" }, `${x.kind}: ${x.url}`)),
        m.quick_replies && m.quick_replies.length ? h("p", { class: "small muted" }, `Buttons: ${m.quick_replies.join(" · ")}`) : null);
    default:
      return h("li", { class: "msg log small muted" }, "Log ", at, h("p", {}, m.log || pretty(m)));
  }
}

export async function conversation(main, { bot, id }) {
  const path = `/v1/bots/${seg(bot)}/conversations/${seg(id)}`;
  let nodes = [];
  try {
    const flow = await api("GET", `/v1/bots/${seg(bot)}/flow`);
    nodes = Object.keys((flow && flow.nodes) || {});
  } catch { /* no flow: release goes to the start */ }
  main.append(pageHead(`Conversation ${id}`, {
    crumbs: [h("a", { href: "#/inbox" }, "Inbox"), " / ", bot],
  }));
  const state = h("div", { class: "row", role: "status" });
  const transcript = h("ol", { class: "transcript", "aria-label": "Transcript" });
  const events = h("tbody", {});
  const memory = h("pre", { class: "code" });
  const attributes = h("pre", { class: "code" });

  const text = h("textarea", { name: "text", rows: "3", maxlength: "4096", required: true });
  const reply = h("form", { class: "panel", "aria-label": "Answer as a person" },
    h("h2", {}, "Answer"),
    field("Message to the contact", text, "Sent on the conversation's channel. Ctrl+Enter sends."),
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Send")));
  const node = select("node", [["", "The start of the flow"], ...nodes.map((n) => [n, n])], "");
  const releaseBox = h("form", { class: "panel", "aria-label": "Give back to the bot" },
    h("h2", {}, "Give back to the bot"),
    field("Go on from", node),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Release to the bot")));
  const actions = h("div", {}, reply, releaseBox);

  let seen = -1;
  async function load() {
    let c;
    try {
      c = await api("GET", path);
    } catch (err) {
      if (err.status === 401) return;
      state.replaceChildren(alert("error", plain(err)));
      return;
    }
    state.replaceChildren(statusBadge(c.status), h("span", {}, ` at ${c.flow} / ${c.node || "—"} · contact `), h("code", {}, c.contact.external_id || c.contact.phone || c.contact.id));
    actions.hidden = c.status !== "handoff";
    if (c.messages.length !== seen) {
      seen = c.messages.length;
      transcript.replaceChildren(...c.messages.map(line));
    }
    memory.textContent = pretty(c.memory);
    attributes.textContent = pretty(c.contact.attributes);
    try {
      const ev = await api("GET", `/v1/events?conversation=${seg(id)}&limit=200`);
      events.replaceChildren(...ev.data.map((e) => h("tr", {},
        h("td", { "data-label": "When" }, time(e.timestamp)),
        h("td", { "data-label": "Type" }, h("code", {}, e.type)),
        h("td", { "data-label": "Node" }, (e.data && e.data.node) || "—"))));
    } catch { /* events stay as they were */ }
  }

  reply.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(reply);
    if (!text.value.trim()) { showError(reply, new Error("Write a message first.")); text.focus(); return; }
    const b = reply.querySelector("button[type=submit]");
    b.disabled = true;
    try {
      await api("POST", `/v1/conversations/${seg(id)}/messages`, { json: { text: text.value } });
      text.value = "";
      toast("Sent");
      await load();
      text.focus();
    } catch (err) { showError(reply, err); } finally { b.disabled = false; }
  });
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); reply.requestSubmit(); }
  });
  releaseBox.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(releaseBox);
    try {
      await api("POST", `/v1/conversations/${seg(id)}/release`, { json: node.value ? { node: node.value } : {} });
      toast("Given back to the bot");
      await load();
    } catch (err) { showError(releaseBox, err); }
  });

  main.append(h("div", { class: "panel" }, state),
    actions,
    h("div", { class: "panel" }, h("h2", {}, "Transcript"), transcript),
    h("div", { class: "panel" }, h("h2", {}, "Events"),
      h("div", { class: "table-wrap" }, h("table", { class: "responsive" },
        h("thead", {}, h("tr", {}, ["When", "Type", "Node"].map((t) => h("th", { scope: "col" }, t)))), events))),
    h("div", { class: "panel" }, h("h2", {}, "Memory"), memory),
    h("div", { class: "panel" }, h("h2", {}, "Contact attributes"), attributes));
  await load();
  everyFewSeconds(`#/inbox/${seg(bot)}/${seg(id)}`, load);
}
