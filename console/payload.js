// The Webhook tab of the interactions editor (seed 003's Webhook section):
// the bot's endpoints, and the exact payload each format sends for a node,
// rendered by the server (`POST /v1/bots/{bot}/payload-preview`).

import { api, all, plain, seg } from "./api.js";
import { h, field, alert } from "./ui.js";

const nodeName = (n, id) => (n && n.label && n.label !== id ? `${n.label} (${id})` : id);

/** Every node of the document as [ref, label]: `node`, or `campaign/node`. */
function allNodes(doc) {
  const out = Object.entries(doc.nodes || {}).map(([id, n]) => [id, nodeName(n, id)]);
  for (const [c, g] of Object.entries(doc.campaigns || {})) {
    for (const [id, n] of Object.entries(g.nodes || {})) out.push([`${c}/${id}`, `${c}: ${nodeName(n, id)}`]);
  }
  return out;
}

/**
 * Seed 003's Webhook section: the bot's endpoints (POST and their URL,
 * headers, body, test), and the Payload: the exact JSON an endpoint of each
 * format receives for a node, rendered by the server's formatter from the
 * saved flow, with extra body params typed here (checked as you type).
 * `dirty()` says whether the editor holds unsaved changes.
 */
export function webhookSection(bot, doc, dirty) {
  const list = h("div", { class: "stack", id: "bot-endpoints" }, h("p", { class: "muted" }, "Loading endpoints…"));
  all(`/v1/bots/${seg(bot)}/endpoints`).then((eps) => {
    list.replaceChildren(...(eps.length ? eps.map((e) => h("article", { class: "card" },
      h("p", {}, h("strong", {}, "POST "), h("code", {}, e.url)),
      h("p", { class: "small muted" }, `Format ${e.format} · headers: ${Object.keys(e.headers || {}).join(", ") || "none"} · body: ${JSON.stringify(e.body || {})}`),
      h("div", { class: "row" }, h("a", { class: "button small", href: `#/webhooks/${seg(e.id)}/edit` }, "Edit headers and body"),
        h("a", { class: "button small", href: `#/webhooks/${seg(e.id)}` }, "Test it")))) : [h("p", { class: "muted" }, "No endpoint yet: events of this bot go nowhere.")]),
    h("div", {}, h("a", { class: "button primary", href: `#/webhooks/new?bot=${seg(bot)}` }, "Add an endpoint")));
  }).catch((err) => list.replaceChildren(alert("error", plain(err))));

  const node = h("select", { name: "preview_node" }, allNodes(doc).map(([v, l]) => h("option", { value: v }, l)));
  const start = doc.start;
  if (start) node.value = start;
  const format = h("select", { name: "preview_format" }, [["flat", "flat (seed 003)"], ["standard", "standard"], ["bot9", "bot9"], ["template", "template (the body below is the payload)"]].map(([v, l]) => h("option", { value: v }, l)));
  const extra = h("textarea", { name: "preview_body", rows: 3, placeholder: "{\"source\": \"botwire\"}" });
  const out = h("div", { class: "stack", id: "payload-preview", "aria-live": "polite" });
  let bodyObj = null;
  const bodyField = field("Body (extra params, JSON)", extra, "A JSON object; checked as you type. With the template format it is the whole payload, its string values holding merge tags: {{event.type}}, {{event.id}}, {{event.timestamp}}, {{data.contact.phone}}, {{data.response}} …");
  const check = () => {
    const t = extra.value.trim();
    let msg = "";
    bodyObj = null;
    if (t) {
      try {
        const v = JSON.parse(t);
        if (v === null || typeof v !== "object" || Array.isArray(v)) msg = "The body must be a JSON object, like {\"key\": \"value\"}."; else bodyObj = v;
      } catch (e) { msg = `Not valid JSON yet: ${e.message}`; }
    }
    const err = bodyField.querySelector(".field-error");
    err.textContent = msg;
    err.hidden = !msg;
    if (msg) extra.setAttribute("aria-invalid", "true"); else extra.removeAttribute("aria-invalid");
    return !msg;
  };
  const show = async () => {
    if (!check() || !node.value) return;
    if (dirty()) { out.replaceChildren(alert("info", "Save the flow to preview it: the preview is rendered from the saved version.")); return; }
    try {
      const req = { node: node.value, format: format.value };
      if (bodyObj) req.extra_body = bodyObj;
      const r = await api("POST", `/v1/bots/${seg(bot)}/payload-preview`, { json: req });
      out.replaceChildren(...(r.payloads.length ? r.payloads.map((p) => h("div", {},
        h("p", { class: "small" }, h("code", {}, p.event_type), p.option ? ` — option “${p.option}”` : ""),
        h("pre", { class: "payload" }, JSON.stringify(p.body, null, 2)))) : [h("p", { class: "muted" }, r.note || "This node sends nothing.")]));
    } catch (err) { out.replaceChildren(alert("error", plain(err))); }
  };
  node.addEventListener("change", show);
  format.addEventListener("change", show);
  extra.addEventListener("input", () => { if (check()) show(); });
  show();
  return h("div", { class: "stack" },
    h("section", { class: "panel stack", "aria-labelledby": "hook-h" }, h("h2", { id: "hook-h" }, "Webhook"),
      h("p", { class: "small muted" }, "Your endpoint must accept POST with a JSON body. A question's Redirect Type Webhook sends its answer (response.received); a menu option's webhook toggle sends the choice (option.selected)."),
      list),
    h("section", { class: "panel stack", "aria-labelledby": "payload-h" }, h("h2", { id: "payload-h" }, "Payload"),
      h("div", { class: "row wrap-row" }, field("Node", node), field("Format", format)), bodyField, out));
}
