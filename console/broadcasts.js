// Broadcasts page (`#/bots/{bot}/broadcasts`): a bot's broadcasts with
// their state and a progress bar (polled while one runs), Pause / Resume /
// Cancel on each, and a form to send one: a segment (its live count), then
// a message (previewed for a sample recipient with the server's merge-tag
// code) or a campaign of the bot's flow, an optional time and rate.

import { api, all, seg } from "./api.js";
import { h, field, fieldError, button, time, pageHead, showError, clearErrors, toast, alert, select, localToIso, badge } from "./ui.js";

/** How often the list is read again while a broadcast runs (ms). */
const POLL_MS = 1000;
/** How long typing pauses before the preview is asked for (ms). */
const PREVIEW_DELAY_MS = 300;
/** The form fields a server message may start with. */
const FIELDS = ["segment", "message", "campaign", "schedule_at", "rate"];

/** `#/broadcasts` (the navigation's link): the first bot's page. */
export async function broadcastsHome(main) {
  const bots = await all("/v1/bots", 200);
  if (!bots.length) {
    main.append(pageHead("Broadcasts"), alert("info", "There are no bots yet. ", h("a", { href: "#/bots/new" }, "Create one")));
    return;
  }
  location.replace(`#/bots/${seg(bots[0].id)}/broadcasts`);
}

/** The badge for a broadcast's state. */
function stateBadge(state) {
  const map = { scheduled: "info", running: "warn", paused: "off", completed: "ok", cancelled: "bad" };
  return badge(map[state] || "off", state);
}

/** Shows a server error beside the field it names, else above the form. */
function showFieldError(form, err) {
  const msg = (err && err.message) || "";
  const name = FIELDS.find((f) => msg.startsWith(`${f} `) || msg.startsWith(`${f}:`) || msg.startsWith(`${f}.`));
  const control = name && form.querySelector(`[name="${name}"]`);
  if (control && !control.closest("[hidden]")) {
    fieldError(control, msg);
    control.focus();
    return;
  }
  showError(form, err);
}

function progress(b) {
  const c = b.counts;
  const done = c.sent + c.failed + c.skipped;
  const total = done + c.pending;
  if (!total) {
    return h("span", { class: "muted" }, b.started_at ? "No recipients" : "Not started");
  }
  const pct = Math.round((done / total) * 100);
  return h("div", { class: "bc-progress" },
    h("progress", { max: String(total), value: String(done), "aria-label": `Progress of broadcast ${b.id}` }),
    h("span", { class: "small", dataset: { pct: String(pct) } },
      `${pct} % — ${c.sent} sent, ${c.skipped} skipped, ${c.failed} failed, ${c.pending} pending`));
}

function what(b) {
  if (b.campaign) return [badge("campaign", "campaign"), " ", h("code", {}, b.campaign)];
  return h("span", { class: "wrap" }, b.message.length > 80 ? `${b.message.slice(0, 80)}…` : b.message);
}

export async function broadcasts(main, { id: botId }) {
  const bot = await api("GET", `/v1/bots/${seg(botId)}`);
  let campaigns = [];
  try {
    const flow = await api("GET", `/v1/bots/${seg(botId)}/flow`);
    campaigns = Object.keys((flow && flow.campaigns) || {});
  } catch { /* no flow yet: no campaigns */ }
  const segments = (await api("GET", `/v1/bots/${seg(botId)}/segments?limit=200`)).data;
  main.append(pageHead("Broadcasts", {
    crumbs: [h("a", { href: "#/bots" }, "Bots"), " / ", h("a", { href: `#/bots/${seg(botId)}` }, bot.name || botId), " / "],
    sub: "Send one message, or start one campaign of the flow, to every contact of a segment over each contact's channel. On WhatsApp only contacts who wrote in the last 24 hours get a text or a campaign.",
  }));

  // ---- compose
  const segSelect = select("segment", segments.map((s) => [s.id, s.name]), segments[0] && segments[0].id);
  const segCount = h("p", { id: "segment-count", class: "small muted", role: "status" });
  const showCount = async () => {
    const s = segments.find((x) => x.id === segSelect.value);
    if (!s) { segCount.textContent = ""; return; }
    try {
      const fresh = await api("GET", `/v1/bots/${seg(botId)}/segments/${seg(s.id)}`);
      segCount.textContent = `${fresh.count} contacts now (${fresh.filter})`;
    } catch (err) { segCount.textContent = ""; showFieldError(form, err); }
  };
  const kindMessage = h("input", { type: "radio", name: "kind", value: "message", checked: true });
  const kindCampaign = h("input", { type: "radio", name: "kind", value: "campaign", disabled: campaigns.length ? null : "disabled" });
  const message = h("textarea", { name: "message", rows: "3", placeholder: "Hi {{user.first_name}}, our sale starts today." });
  const preview = h("div", { id: "broadcast-preview", class: "alert info", role: "status", "aria-live": "polite" }, "Type a message to preview it.");
  const messageBox = h("div", {},
    field("Message", message, "Merge tags: {{user.ATTRIBUTE}}, {{contact.phone}}, {{contact.id}}, {{contact.external_id}}, {{contact.channel}}."),
    preview);
  const campaign = select("campaign", campaigns.length ? campaigns.map((c) => [c, c]) : [["", "This bot's flow has no campaigns"]], campaigns[0]);
  const campaignBox = h("div", { hidden: true }, field("Campaign", campaign, "Each recipient's conversation starts (or restarts) at this campaign of the flow."));
  const schedule = h("input", { name: "schedule_at", type: "datetime-local" });
  const rate = h("input", { name: "rate", type: "number", min: "1", max: "1000", step: "1", inputmode: "numeric" });
  const form = h("form", { class: "panel", novalidate: true, "aria-labelledby": "compose-h" },
    h("h2", { id: "compose-h" }, "New broadcast"),
    segments.length ? null : alert("info", "This bot has no segments yet. ", h("a", { href: `#/users?bot=${seg(botId)}` }, "Save a filter as a segment"), " first."),
    field("Segment", segSelect), segCount,
    h("fieldset", {}, h("legend", {}, "What to send"),
      h("div", { class: "row" },
        h("label", { class: "inline" }, kindMessage, "A message"),
        h("label", { class: "inline" }, kindCampaign, "A campaign of the flow"))),
    messageBox, campaignBox,
    h("div", { class: "row" },
      field("Send at (optional)", schedule, "Empty: now."),
      field("Messages per second (optional)", rate, "1 to 1000; the server's default when empty.")),
    h("button", { type: "submit", class: "primary", dataset: { action: "send" } }, "Send broadcast"));

  const useCampaign = () => kindCampaign.checked;
  const showKind = () => {
    messageBox.hidden = useCampaign();
    campaignBox.hidden = !useCampaign();
  };
  kindMessage.addEventListener("change", showKind);
  kindCampaign.addEventListener("change", showKind);

  let previewTimer;
  let previewGen = 0;
  const renderPreview = async () => {
    const gen = ++previewGen;
    fieldError(message, "");
    if (!message.value.trim() || !segSelect.value) {
      preview.textContent = "Type a message to preview it.";
      return;
    }
    try {
      const p = await api("POST", `/v1/bots/${seg(botId)}/broadcasts/preview`, { json: { segment: segSelect.value, message: message.value } });
      if (gen !== previewGen) return;
      if (!p.sample) { preview.textContent = `The segment matches nobody now (${p.count} contacts).`; return; }
      const who = p.sample.contact.phone || p.sample.contact.external_id || p.sample.contact.id;
      preview.replaceChildren(
        h("span", { class: "small muted" }, `Preview for ${who}, 1 of ${p.count}:`),
        h("p", { class: "wrap", dataset: { preview: "text" } }, p.sample.text));
    } catch (err) {
      if (gen !== previewGen) return;
      preview.textContent = "No preview: fix the message.";
      showFieldError(form, err);
    }
  };
  message.addEventListener("input", () => {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(renderPreview, PREVIEW_DELAY_MS);
  });
  segSelect.addEventListener("change", () => { showCount(); renderPreview(); });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    const body = { segment: segSelect.value };
    if (useCampaign()) body.campaign = campaign.value;
    else body.message = message.value;
    if (schedule.value) {
      const iso = localToIso(schedule.value);
      if (!iso) { fieldError(schedule, "Pick a date and time, or leave it empty to send now."); schedule.focus(); return; }
      body.schedule_at = iso;
    }
    if (rate.value.trim()) {
      const n = Number(rate.value);
      if (!Number.isInteger(n)) { fieldError(rate, "rate must be a whole number from 1 to 1000."); rate.focus(); return; }
      body.rate = n;
    }
    try {
      const b = await api("POST", `/v1/bots/${seg(botId)}/broadcasts`, { json: body });
      toast(b.state === "scheduled" && body.schedule_at ? "Broadcast scheduled" : "Broadcast created");
      schedule.value = "";
      await load();
    } catch (err) { showFieldError(form, err); }
  });

  // ---- list
  const rows = h("tbody", {});
  const empty = h("p", { class: "muted", hidden: true }, "No broadcasts yet.");
  const listBox = h("div", { class: "panel", id: "broadcasts" },
    h("h2", {}, "Broadcasts"), empty,
    h("div", { class: "table-wrap" }, h("table", { class: "responsive" },
      h("thead", {}, h("tr", {}, ["Created", "Sends", "State", "Progress", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      rows)));
  let pollTimer;

  async function act(b, action) {
    try {
      await api("POST", `/v1/broadcasts/${seg(b.id)}/${action}`);
      toast(`Broadcast ${action === "cancel" ? "cancelled" : action === "pause" ? "paused" : "resumed"}`);
    } catch (err) { showError(listBox, err); }
    await load();
  }

  function row(b) {
    const actions = [];
    if (b.state === "scheduled" || b.state === "running") actions.push(button("Pause", () => act(b, "pause"), "small"));
    if (b.state === "paused") actions.push(button("Resume", () => act(b, "resume"), "small"));
    if (["scheduled", "running", "paused"].includes(b.state)) actions.push(button("Cancel", () => act(b, "cancel"), "small danger"));
    actions.forEach((a) => a.setAttribute("aria-label", `${a.textContent} broadcast ${b.id}`));
    return h("tr", { dataset: { broadcast: b.id, state: b.state } },
      h("td", { "data-label": "Created" }, time(b.created_at),
        b.state === "scheduled" ? h("div", { class: "small muted" }, "starts ", time(b.schedule_at)) : null),
      h("td", { "data-label": "Sends" }, what(b)),
      h("td", { "data-label": "State" }, stateBadge(b.state)),
      h("td", { "data-label": "Progress" }, progress(b)),
      h("td", { "data-label": "Actions" }, h("div", { class: "row" }, actions.length ? actions : h("span", { class: "muted" }, "—"))));
  }

  async function load() {
    clearTimeout(pollTimer);
    const list = await api("GET", `/v1/bots/${seg(botId)}/broadcasts?limit=50`);
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("tr[data-broadcast]");
    const focusKey = focused ? [focused.dataset.broadcast, document.activeElement.textContent] : null;
    rows.replaceChildren(...list.data.map(row));
    empty.hidden = list.data.length > 0;
    if (focusKey) {
      // Keep the keyboard where it was across a refresh.
      const again = [...rows.querySelectorAll(`tr[data-broadcast="${focusKey[0]}"] button`)].find((x) => x.textContent === focusKey[1]);
      if (again) again.focus();
    }
    if (list.data.some((b) => b.state === "running" || (b.state === "scheduled" && Date.parse(b.schedule_at) - Date.now() < 60_000))) {
      pollTimer = setTimeout(() => { if (listBox.isConnected) load().catch(() => {}); }, POLL_MS);
    }
  }

  main.append(form, listBox);
  showKind();
  await Promise.all([load(), showCount()]);
  // Leaving the page stops the polling.
  window.addEventListener("hashchange", () => clearTimeout(pollTimer), { once: true });
}
