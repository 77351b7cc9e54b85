// Users page: a bot's contacts through a filter (CEL over `user` and
// `contact`), built from simple conditions or typed raw; save the filter
// as a segment (with its live count); open a contact to edit its
// attributes, opt it out, and see its conversations.

import { api, all, seg } from "./api.js";
import { h, field, button, time, pageHead, pretty, showError, clearErrors, toast, alert, select, parseObject } from "./ui.js";

/** A CEL literal for what was typed: numbers and true/false as such, else a string. */
function literal(v) {
  const t = v.trim();
  if (/^-?(0|[1-9]\d*)(\.\d+)?$/.test(t) || t === "true" || t === "false") return t;
  return JSON.stringify(t);
}

/** One condition of the builder as CEL. */
export function condition(fieldName, op, value) {
  const target = fieldName.startsWith("contact.") ? fieldName : `user.${fieldName}`;
  if (op === "has") return `has(${target})`;
  return `${target} ${op} ${literal(value)}`;
}

function contactRow(botId, c) {
  const who = c.phone || c.external_id || c.id;
  const attrs = Object.entries(c.attributes).map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join(", ");
  return h("tr", { dataset: { contact: c.id } },
    h("td", { "data-label": "Contact" }, h("a", { href: `#/users/${seg(botId)}/${seg(c.id)}` }, who)),
    h("td", { "data-label": "Channel" }, c.channel, c.opted_out ? h("span", { class: "badge off" }, " opted out") : null),
    h("td", { "data-label": "Attributes", class: "small" }, attrs || h("span", { class: "muted" }, "—")),
    h("td", { "data-label": "Last seen" }, c.last_seen ? time(c.last_seen) : h("span", { class: "muted" }, "never")));
}

export async function users(main, params) {
  const bots = await all("/v1/bots", 200);
  main.append(pageHead("Users", {
    sub: "The people your bots talk to. Filter them with conditions or a CEL expression over user (attributes) and contact (channel, phone, first_seen, last_seen, opted_out), save a filter as a segment, open one to edit it.",
  }));
  if (!bots.length) {
    main.append(alert("info", "There are no bots yet. ", h("a", { href: "#/bots/new" }, "Create one")));
    return;
  }
  const botId = params.query.get("bot") || bots[0].id;
  const botSelect = select("bot", bots.map((b) => [b.id, b.name || b.id]), botId);
  botSelect.addEventListener("change", () => { location.hash = `#/users?bot=${seg(botSelect.value)}`; });

  // The builder: field, operator, value → appended to the raw filter.
  const bField = h("input", { name: "attribute", type: "text", placeholder: "plan, or contact.channel", autocomplete: "off" });
  const bOp = select("op", [["==", "is"], ["!=", "is not"], [">=", "at least"], ["<=", "at most"], [">", "more than"], ["<", "less than"], ["has", "is set"]], "==");
  const bValue = h("input", { name: "value", type: "text", placeholder: "vip", autocomplete: "off" });
  const raw = h("textarea", { name: "filter", rows: "2", spellcheck: "false", placeholder: 'user.plan == "vip" && contact.channel == "whatsapp"' });
  raw.value = params.query.get("filter") || "";
  const add = button("Add condition", () => {
    clearErrors(form);
    if (!bField.value.trim()) { showError(form, new Error("Type an attribute name first.")); bField.focus(); return; }
    const c = condition(bField.value.trim(), bOp.value, bValue.value);
    raw.value = raw.value.trim() ? `${raw.value.trim()} && ${c}` : c;
    bValue.value = "";
  }, "small");
  add.dataset.action = "add-condition";
  const q = h("input", { name: "q", type: "search", placeholder: "phone, id or text", autocomplete: "off" });
  const form = h("form", { class: "panel", novalidate: true },
    h("div", { class: "row" }, field("Bot", botSelect)),
    h("fieldset", {}, h("legend", {}, "Add a condition"),
      h("div", { class: "row" }, field("Attribute", bField), field("Operator", bOp), field("Value", bValue), add)),
    field("Filter (CEL)", raw, "Conditions are joined with &&; edit freely."),
    h("div", { class: "row" }, field("Search", q),
      h("button", { type: "submit", class: "primary", dataset: { action: "show" } }, "Show users")));

  const segName = h("input", { name: "name", type: "text", placeholder: "VIP on WhatsApp", autocomplete: "off" });
  const saveForm = h("form", { class: "panel row", novalidate: true },
    field("Segment name", segName),
    h("button", { type: "submit", dataset: { action: "save-segment" } }, "Save filter as segment"));
  const segList = h("ul", { class: "plain", id: "segments" });

  const tableBody = h("tbody", {});
  const empty = h("p", { class: "muted", hidden: true }, "No users match.");
  const shown = h("p", { id: "user-count", class: "muted", role: "status" });
  let cursor = null;
  const more = button("Load more", () => load(false), "small");

  async function load(fresh) {
    clearErrors(form);
    if (fresh) { cursor = null; tableBody.replaceChildren(); }
    const qs = new URLSearchParams({ limit: "50" });
    if (raw.value.trim()) qs.set("filter", raw.value.trim());
    if (q.value.trim()) qs.set("q", q.value.trim());
    if (cursor) qs.set("cursor", cursor);
    try {
      const page = await api("GET", `/v1/bots/${seg(botId)}/contacts?${qs}`);
      tableBody.append(...page.data.map((c) => contactRow(botId, c)));
      cursor = page.next_cursor;
      more.style.display = cursor ? "" : "none";
      empty.hidden = tableBody.children.length > 0;
      shown.textContent = `${tableBody.children.length} users shown${cursor ? " (more to load)" : ""}`;
    } catch (err) { showFilterError(err); }
  }
  function showFilterError(err) {
    const col = err.details && err.details.column;
    showError(form, err);
    if (col) { raw.focus(); raw.setSelectionRange(col - 1, col); }
  }
  async function loadSegments() {
    const list = await api("GET", `/v1/bots/${seg(botId)}/segments?limit=200`);
    segList.replaceChildren(...list.data.map((s) => h("li", { dataset: { segment: s.id } },
      h("strong", {}, s.name), ` — ${s.count} users — `, h("code", {}, s.filter), " ",
      button("Use", () => { raw.value = s.filter; load(true); }, "small"),
      button("Delete", async () => {
        await api("DELETE", `/v1/bots/${seg(botId)}/segments/${seg(s.id)}`);
        toast(`Segment ${s.name} deleted`);
        loadSegments();
      }, "small danger"))));
    if (!list.data.length) segList.append(h("li", { class: "muted" }, "No segments yet."));
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); load(true); });
  saveForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(saveForm);
    try {
      const s = await api("POST", `/v1/bots/${seg(botId)}/segments`, { json: { name: segName.value, filter: raw.value } });
      toast(`Segment ${s.name} saved: ${s.count} users`);
      segName.value = "";
      await loadSegments();
    } catch (err) { showError(saveForm, err); }
  });
  main.append(form, saveForm,
    h("div", { class: "panel" }, h("h2", {}, "Segments"), segList),
    h("div", { class: "panel" },
      h("h2", {}, "Users"), empty, shown,
      h("div", { class: "table-wrap" }, h("table", { class: "responsive" },
        h("thead", {}, h("tr", {}, ["Contact", "Channel", "Attributes", "Last seen"].map((t) => h("th", { scope: "col" }, t)))),
        tableBody)),
      h("div", { class: "row" }, more)));
  await Promise.all([load(true), loadSegments()]);
}

export async function userDetail(main, params) {
  const c = await api("GET", `/v1/contacts/${seg(params.id)}`);
  const who = c.phone || c.external_id || c.id;
  main.append(pageHead(who, {
    crumbs: [h("a", { href: `#/users?bot=${seg(c.bot_id)}` }, "Users"), " / "],
    sub: `Channel ${c.channel}; first seen ${new Date(c.first_seen).toLocaleString()}.`,
  }));
  const attrs = h("textarea", { name: "attributes", rows: "8", spellcheck: "false" });
  attrs.value = pretty(c.attributes);
  const opted = h("input", { name: "opted_out", type: "checkbox", checked: c.opted_out ? "checked" : null });
  const form = h("form", { class: "panel", novalidate: true },
    field("Attributes (JSON)", attrs, "Keys you remove are deleted; the others are set."),
    h("div", { class: "field" }, h("label", {}, opted, " Opted out of broadcasts")),
    h("button", { type: "submit", class: "primary", dataset: { action: "save-contact" } }, "Save"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    try {
      const next = parseObject(attrs.value, "Attributes");
      const patch = { ...next };
      for (const k of Object.keys(c.attributes)) if (!(k in next)) patch[k] = null;
      const saved = await api("PATCH", `/v1/contacts/${seg(c.id)}`, { json: { attributes: patch, opted_out: opted.checked } });
      c.attributes = saved.attributes;
      attrs.value = pretty(saved.attributes);
      toast("Saved");
    } catch (err) { showError(form, err); }
  });
  const convs = await api("GET", `/v1/contacts/${seg(c.id)}/conversations?limit=50`);
  const list = h("ul", { class: "plain" }, convs.data.map((v) => h("li", {},
    h("code", {}, v.id), ` — ${v.status}, `, time(v.updated_at))));
  if (!convs.data.length) list.append(h("li", { class: "muted" }, "No conversations yet."));
  main.append(form, h("div", { class: "panel" }, h("h2", {}, "Conversations"), list));
}
