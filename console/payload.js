// The Webhook tab of the interactions editor (seed 003's Webhook section):
// the bot's endpoints, and the exact payload each format sends for a node,
// rendered by the server (`POST /v1/bots/{bot}/payload-preview`).

import { api, all, plain, seg } from "./api.js";
import { h, field, alert, fieldError, parseObject, pretty, select } from "./ui.js";
import { sendResult } from "./webhooks.js";

const REDACTED = "••••";

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
  const load = async (pick) => {
    try {
      const eps = await all(`/v1/bots/${seg(bot)}/endpoints`);
      list.replaceChildren(...(eps.length ? endpointPicker(eps, pick) : newEndpoint(bot, load)));
    } catch (err) { list.replaceChildren(alert("error", plain(err))); }
  };
  load();

  const node = h("select", { name: "preview_node" }, allNodes(doc).map(([v, l]) => h("option", { value: v }, l)));
  const start = doc.start;
  if (start) node.value = start;
  const format = h("select", { name: "preview_format" }, [["flat", "flat (seed 003)"], ["standard", "standard"], ["bot9", "bot9"], ["template", "template (the body below is the payload)"]].map(([v, l]) => h("option", { value: v }, l)));
  const extra = h("textarea", { name: "preview_body", rows: 3, placeholder: "{\"source\": \"botwire\"}" });
  const out = h("div", { class: "stack", id: "payload-preview", "aria-live": "polite" });
  let bodyObj = null;
  const bodyField = field("Extra params to preview (JSON)", extra, "A JSON object; checked as you type. With the template format it is the whole payload, its string values holding merge tags: {{event.type}}, {{event.id}}, {{event.timestamp}}, {{data.contact.phone}}, {{data.response}} …");
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
      h("p", { class: "small muted" }, "Your endpoint must accept POST with a JSON body. A question's Redirect Type Webhook sends its answer (response.received); a menu option's webhook toggle sends the choice (option.selected) and the conversation goes on; a menu option's Redirect Type Webhook sends the choice and ends the conversation, handing it to your system."),
      list),
    h("section", { class: "panel stack", "aria-labelledby": "payload-h" }, h("h2", { id: "payload-h" }, "Payload"),
      h("div", { class: "row wrap-row" }, field("Node", node), field("Format", format)), bodyField, out));
}

/** No endpoint yet: a URL and a format, created here (POST is the method). */
function newEndpoint(bot, reload) {
  const url = h("input", { type: "url", name: "endpoint_url", autocomplete: "off", placeholder: "https://example.com/hooks/botwire" });
  const format = select("endpoint_format", [["flat", "Flat, seed 003 style (campaignId, label, …)"], ["standard", "Standard Webhooks"], ["bot9", "Bot9 style"]], "flat");
  const status = h("div", { "aria-live": "polite" });
  const create = h("button", { type: "submit", class: "primary" }, "Create endpoint");
  const form = h("form", { class: "stack", novalidate: true },
    h("p", { class: "muted" }, "No endpoint yet: events of this bot go nowhere. Add one here:"),
    field("URL (POST)", url, "Events are POSTed here as JSON. http or https."), field("Format", format),
    h("div", { class: "row" }, create, h("a", { class: "button", href: `#/webhooks/new?bot=${seg(bot)}` }, "More settings on the endpoint page")), status);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!url.value.trim()) { fieldError(url, "Enter the URL events should be sent to."); url.focus(); return; }
    fieldError(url, "");
    create.disabled = true;
    try {
      const ep = await api("POST", `/v1/bots/${seg(bot)}/endpoints`, { json: { url: url.value.trim(), format: format.value } });
      await reload(ep.id);
      document.querySelector("#bot-endpoints input, #bot-endpoints button")?.focus();
    } catch (err) { status.replaceChildren(alert("error", plain(err))); create.disabled = false; }
  });
  return [form];
}

/** The chosen endpoint (a picker when the bot has several) and its editor. */
function endpointPicker(eps, pick) {
  const box = h("div", { class: "stack" });
  const show = (id) => box.replaceChildren(endpointEditor(eps.find((e) => e.id === id) || eps[0]));
  const out = [];
  if (eps.length > 1) {
    const which = select("endpoint", eps.map((e) => [e.id, `${e.url} (${e.format})`]), pick || eps[0].id);
    which.addEventListener("change", () => show(which.value));
    out.push(field("Endpoint", which, "This bot has several endpoints; the one edited below."));
  }
  show(pick || eps[0].id);
  out.push(box);
  return out;
}

/**
 * Seed 003's Webhook configuration for one endpoint: POST and the URL, the
 * Headers as a key-value table (edit, delete, add), the Body (extra params,
 * JSON checked as you type), Save (`PATCH /v1/endpoints/{id}`; a secret
 * header comes back redacted and, left as it is, keeps its stored value)
 * and the test button with the endpoint's answer.
 */
function endpointEditor(ep) {
  const headers = Object.fromEntries(Object.entries(ep.headers || {}).map(([k, v]) => [k, { value: v.value, sensitive: v.sensitive !== false }]));
  const rows = h("tbody", {});
  const addBtn = h("button", { type: "button", class: "small", dataset: { action: "add-header" } }, "Add header");
  const draw = (editing, focusSel) => {
    rows.replaceChildren(...Object.entries(headers).map(([k, v], i) => (k === editing ? editRow(k, v, i) : viewRow(k, v, i))));
    if (!Object.keys(headers).length) rows.append(h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No headers.")));
    if (focusSel) rows.querySelector(focusSel)?.focus();
  };
  const viewRow = (k, v, i) => {
    const edit = h("button", { type: "button", class: "small", dataset: { action: "edit-header" }, "aria-label": `Edit header ${k}` }, "✎ Edit");
    edit.addEventListener("click", () => { delete headers[""]; draw(k, "input[name=header_key]"); });
    const del = h("button", { type: "button", class: "small danger", dataset: { action: "delete-header" }, "aria-label": `Delete header ${k}` }, "✕ Delete");
    del.addEventListener("click", () => { delete headers[k]; changedHere(); draw(undefined); addBtn.focus(); });
    return h("tr", { dataset: { header: k } },
      h("td", { "data-label": "Key" }, h("code", {}, k)),
      h("td", { "data-label": "Value" }, h("code", {}, v.value), v.sensitive ? h("span", { class: "small muted" }, " (secret)") : null),
      h("td", { "data-label": "Actions", class: "row" }, edit, del));
  };
  const editRow = (k, v, i) => {
    const ki = h("input", { type: "text", name: "header_key", value: k, autocomplete: "off", "aria-label": `Key of header ${i + 1}` });
    const vi = h("input", { type: "text", name: "header_value", value: v.value, autocomplete: "off", spellcheck: "false", "aria-label": `Value of header ${i + 1}` });
    const secret = h("input", { type: "checkbox", name: "header_secret", checked: v.sensitive, "aria-label": `Header ${i + 1} is a secret (shown redacted once saved)` });
    secret.addEventListener("change", () => {
      if (!secret.checked && vi.value.startsWith(REDACTED)) { vi.value = ""; vi.placeholder = "Type the value again to show it in clear"; vi.focus(); }
    });
    const done = h("button", { type: "button", class: "small", dataset: { action: "done-header" }, "aria-label": `Keep header ${i + 1}` }, "✓ Done");
    const finish = () => {
      const nk = ki.value.trim();
      if (!nk) { saved.replaceChildren(alert("error", "Give the header a name, like X-Api-Key.")); ki.focus(); return; }
      if (nk !== k && headers[nk] !== undefined) { saved.replaceChildren(alert("error", `There is already a header ${nk}.`)); ki.focus(); return; }
      const entries = Object.entries(headers).map(([ok, ov]) => (ok === k ? [nk, { value: vi.value, sensitive: secret.checked }] : [ok, ov]));
      for (const key of Object.keys(headers)) delete headers[key];
      for (const [ek, ev] of entries) headers[ek] = ev;
      changedHere();
      draw(undefined, `tr[data-header="${CSS.escape(nk)}"] button[data-action=edit-header]`);
    };
    done.addEventListener("click", finish);
    const cancel = h("button", { type: "button", class: "small", "aria-label": `Cancel editing header ${i + 1}` }, "Cancel");
    cancel.addEventListener("click", () => { if (k === "") delete headers[""]; draw(undefined); addBtn.focus(); });
    for (const inp of [ki, vi]) inp.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); finish(); } if (e.key === "Escape") cancel.click(); });
    return h("tr", { class: "editing" },
      h("td", { "data-label": "Key" }, ki),
      h("td", { "data-label": "Value" }, vi, h("label", { class: "inline small" }, secret, "Secret")),
      h("td", { "data-label": "Actions", class: "row" }, done, cancel));
  };
  addBtn.addEventListener("click", () => { if (headers[""] === undefined) headers[""] = { value: "", sensitive: true }; draw("", "input[name=header_key]"); });
  draw();

  const body = h("textarea", { name: "endpoint_body", rows: 3, placeholder: "{\"campaignId\": \"13010\"}" });
  body.value = ep.body && Object.keys(ep.body).length ? pretty(ep.body) : "";
  const bodyOk = () => {
    try { parseObject(body.value, "The body"); fieldError(body, ""); return true; } catch (err) { fieldError(body, err.message); return false; }
  };
  body.addEventListener("input", () => { bodyOk(); changedHere(); });

  const saved = h("div", { "aria-live": "polite", id: "endpoint-saved" });
  const changedHere = () => saved.replaceChildren(h("p", { class: "small muted" }, "Unsaved endpoint changes."));
  const save = h("button", { type: "button", class: "primary", dataset: { action: "save-endpoint" } }, "Save endpoint");
  save.addEventListener("click", async () => {
    if (!bodyOk()) { body.focus(); return; }
    if (headers[""] !== undefined) { saved.replaceChildren(alert("error", "Finish the header being added (Done) or cancel it.")); return; }
    save.disabled = true;
    try {
      const r = await api("PATCH", `/v1/endpoints/${seg(ep.id)}`, { json: { headers, body: parseObject(body.value, "The body") } });
      for (const key of Object.keys(headers)) delete headers[key];
      for (const [k, v] of Object.entries(r.headers || {})) headers[k] = { value: v.value, sensitive: v.sensitive !== false };
      draw();
      saved.replaceChildren(alert("ok", "Endpoint saved."));
    } catch (err) { saved.replaceChildren(alert("error", plain(err))); } finally { save.disabled = false; }
  });
  const testOut = h("div", { "aria-live": "polite", id: "tab-test-result" });
  const test = h("button", { type: "button", dataset: { action: "test-endpoint" } }, "Send test event");
  test.addEventListener("click", async () => {
    testOut.replaceChildren(h("p", { class: "muted" }, "Sending…"));
    try { testOut.replaceChildren(sendResult(await api("POST", `/v1/endpoints/${seg(ep.id)}/test`))); } catch (err) { testOut.replaceChildren(alert("error", plain(err))); }
  });
  return h("article", { class: "card stack", dataset: { endpoint: ep.id } },
    h("p", {}, h("strong", {}, "POST "), h("code", {}, ep.url), h("span", { class: "small muted" }, ` · format ${ep.format}`)),
    h("fieldset", {}, h("legend", {}, "Headers"),
      h("div", { class: "table-wrap" }, h("table", { class: "responsive hook-headers" },
        h("thead", {}, h("tr", {}, ["Key", "Value", "Actions"].map((t) => h("th", { scope: "col" }, t)))), rows)),
      h("div", {}, addBtn)),
    field("Body (extra params, JSON)", body, "A JSON object merged into every payload; checked as you type."),
    h("div", { class: "row" }, save, test, h("a", { class: "button", href: `#/webhooks/${seg(ep.id)}` }, "Endpoint page")),
    saved, testOut);
}
