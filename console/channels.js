// The Channels tab of a bot: its messaging channels (WhatsApp, Telegram,
// Twilio, Messenger), the inbound URL and verify token to paste into each
// platform, the last inbound and outbound traffic with their errors, a
// test-message form, and a form to add a channel with its kind's fields.
// Secrets are typed once and never shown again: the API does not return them.

import { api, seg } from "./api.js";
import {
  h, field, button, badge, time, pageHead, alert, toast, showError, clearErrors, select, facts, pretty,
} from "./ui.js";

/** The fields each kind takes: [name, label, hint, secret]. */
const KINDS = {
  whatsapp: {
    title: "WhatsApp",
    fields: [
      ["phone_number_id", "Phone number id", "WhatsApp Manager → API setup.", false],
      ["access_token", "Access token", "A system-user token; never shown again.", true],
      ["app_secret", "App secret", "Meta app → Settings → Basic; signs the webhooks.", true],
      ["verify_token", "Verify token", "Any string; type the same in Meta's webhook settings.", false],
    ],
  },
  telegram: {
    title: "Telegram",
    fields: [
      ["bot_token", "Bot token", "From BotFather; never shown again.", true],
      ["secret_token", "Secret token", "1–256 of A–Z, a–z, 0–9, _ and -; Telegram sends it with every update.", true],
    ],
  },
  twilio: {
    title: "Twilio (SMS)",
    fields: [
      ["account_sid", "Account SID", "AC followed by 32 hexadecimal digits.", false],
      ["auth_token", "Auth token", "Signs the webhooks; never shown again.", true],
      ["from", "From", "+14155550100, or whatsapp:+14155550100 for WhatsApp through Twilio.", false],
    ],
  },
  messenger: {
    title: "Messenger",
    fields: [
      ["page_id", "Page id", "The Facebook page's numeric id.", false],
      ["page_access_token", "Page access token", "Never shown again.", true],
      ["app_secret", "App secret", "Meta app → Settings → Basic; signs the webhooks.", true],
      ["verify_token", "Verify token", "Any string; type the same in Meta's webhook settings.", false],
    ],
  },
};

/** `#/bots/:id/channels` */
export async function channels(main, { id }) {
  const bot = await api("GET", `/v1/bots/${seg(id)}`);
  const list = await api("GET", `/v1/bots/${seg(id)}/channels?limit=200`);
  main.append(pageHead(`${bot.name}: channels`, {
    crumbs: [h("a", { href: "#/bots" }, "Bots"), " / ", h("a", { href: `#/bots/${seg(id)}` }, bot.name)],
    sub: "Put this bot on WhatsApp, Telegram, SMS and Messenger. Paste each channel's inbound URL into the platform.",
  }));
  const cards = h("div", { class: "stack", id: "channel-list" });
  if (!list.data.length) cards.append(h("p", { class: "muted" }, "No channels yet: add one below."));
  for (const c of list.data) cards.append(await channelCard(c));
  main.append(cards, addForm(id));
}

async function channelCard(c) {
  const kind = KINDS[c.kind] || { title: c.kind };
  const url = h("code", { class: "copy" }, c.inbound_url);
  const rows = [
    ["Inbound URL", url],
    c.settings.verify_token ? ["Verify token", h("code", {}, c.settings.verify_token)] : null,
    ...Object.entries(c.settings)
      .filter(([k]) => k !== "verify_token")
      .map(([k, v]) => [k.replaceAll("_", " "), h("code", {}, String(v))]),
    ["Secrets set", c.secrets.join(", ") || "—"],
    ["Last inbound", c.last_inbound_at ? time(c.last_inbound_at) : "never"],
    c.last_inbound_error ? ["Last refused request", h("span", { class: "bad-text" }, c.last_inbound_error)] : null,
    ["Last outbound", c.last_outbound_at ? time(c.last_outbound_at) : "never"],
    c.last_outbound_error ? ["Last send error", h("span", { class: "bad-text" }, c.last_outbound_error)] : null,
  ];
  const card = h("section", { class: "panel channel", dataset: { channel: c.id, kind: c.kind }, "aria-labelledby": `${c.id}-h` },
    h("h2", { id: `${c.id}-h` }, badge("info", kind.title), " ", c.name || c.id),
    facts(rows));
  card.append(testForm(c), await recent(c));
  const del = button("Delete channel", async (b) => {
    if (!confirm(`Delete this ${kind.title} channel? People writing to it will get no answer.`)) return;
    try {
      await api("DELETE", `/v1/channels/${seg(c.id)}`);
      toast("Channel deleted");
      card.remove();
    } catch (err) { showError(b.parentElement, err); }
  }, "danger");
  card.append(h("div", { class: "row" }, del));
  return card;
}

function testForm(c) {
  const to = h("input", { name: "to", type: "text", autocomplete: "off", required: true });
  const text = h("textarea", { name: "text", rows: 2, required: true });
  const hint = {
    whatsapp: "The person's WhatsApp id (digits, e.g. 525500000000). Only within 24 h of their last message.",
    telegram: "The chat id.",
    twilio: "Their number, +E164 (or whatsapp:+E164).",
    messenger: "Their page-scoped id (PSID).",
  }[c.kind];
  const form = h("form", { class: "stack test-message", novalidate: true },
    h("h3", {}, "Send a test message"),
    field("To", to, hint), field("Text", text),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Send")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    try {
      const r = await api("POST", `/v1/channels/${seg(c.id)}/messages`, { json: { to: to.value.trim(), text: text.value } });
      form.append(alert("ok", `Queued ${r.messages.length} message${r.messages.length === 1 ? "" : "s"}; its outcome shows below after a reload.`));
    } catch (err) { showError(form, err); }
  });
  return form;
}

async function recent(c) {
  const msgs = await api("GET", `/v1/channels/${seg(c.id)}/messages?limit=10`);
  const box = h("div", { class: "stack" }, h("h3", {}, "Recent replies"));
  if (!msgs.data.length) {
    box.append(h("p", { class: "muted small" }, "Nothing sent yet."));
    return box;
  }
  const tone = { sent: "ok", delivered: "ok", read: "ok", pending: "info", retrying: "warn", failed: "bad" };
  box.append(h("div", { class: "table-wrap" }, h("table", { class: "responsive" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "When"), h("th", { scope: "col" }, "To"),
      h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Error"), h("th", { scope: "col" }, "Request"))),
    h("tbody", {}, msgs.data.map((m) => h("tr", { dataset: { status: m.status } },
      h("td", { "data-label": "When" }, time(m.created_at)),
      h("td", { "data-label": "To" }, h("code", {}, m.recipient)),
      h("td", { "data-label": "Status" }, badge(tone[m.status] || "info", m.status)),
      h("td", { "data-label": "Error" }, m.last_error || ""),
      h("td", { "data-label": "Request" }, h("details", {}, h("summary", {}, m.op), h("pre", {}, pretty(m.body))))))))));
  return box;
}

function addForm(bot) {
  const kind = select("kind", Object.entries(KINDS).map(([k, v]) => [k, v.title]), "whatsapp");
  const name = h("input", { name: "name", type: "text", autocomplete: "off" });
  const apiBase = h("input", { name: "api_base", type: "url", autocomplete: "off", placeholder: "the platform's own" });
  const register = h("input", { name: "register", type: "checkbox", checked: true, id: "channel-register" });
  const fields = h("div", { class: "stack" });
  const registerRow = h("div", { class: "field check" }, register,
    h("label", { for: "channel-register" }, "Register the webhook with Telegram now (setWebhook)"));
  const draw = () => {
    fields.replaceChildren(...KINDS[kind.value].fields.map(([n, label, hint, secret]) =>
      field(label, h("input", { name: n, type: secret ? "password" : "text", autocomplete: "off", required: true }), hint)));
    registerRow.hidden = kind.value !== "telegram";
  };
  kind.addEventListener("change", draw);
  draw();
  const form = h("form", { class: "stack panel", novalidate: true, id: "add-channel" },
    h("h2", {}, "Add a channel"),
    field("Platform", kind), field("Name", name, "For you; optional."),
    fields, registerRow,
    field("API base URL", apiBase, "Leave empty for the platform's real API; set it for a proxy or a sandbox."),
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Add channel")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    const body = { kind: kind.value };
    if (name.value.trim()) body.name = name.value.trim();
    if (apiBase.value.trim()) body.api_base = apiBase.value.trim();
    for (const input of fields.querySelectorAll("input")) body[input.name] = input.value.trim();
    if (kind.value === "telegram" && register.checked) body.register = true;
    try {
      const c = await api("POST", `/v1/bots/${seg(bot)}/channels`, { json: body });
      toast(`Added ${KINDS[c.kind].title} channel`);
      const list = document.getElementById("channel-list");
      list.querySelector("p.muted")?.remove();
      list.append(await channelCard(c));
      form.reset();
      draw();
      list.lastElementChild.querySelector("h2").scrollIntoView();
    } catch (err) { showError(form, err); }
  });
  return form;
}
