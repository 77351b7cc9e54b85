// Pages about webhooks: event endpoints (list, form, detail with secret,
// test, enable/disable, recover), deliveries and their attempts, story
// webhooks with a test bench, and the health charts.

import { api, all, plain, seg } from "./api.js";
import {
  h, field, alert, toast, button, badge, time, pageHead, facts, showError, clearErrors, select, pretty,
  healthBadge, statusBadge, pct, parseObject, headerEditor, localToIso, isoToLocal, fieldError,
} from "./ui.js";

const FORMATS = [
  ["standard", "Standard Webhooks (type, timestamp, data)"],
  ["bot9", "Bot9 style (event, data)"],
  ["flat", "Flat, seed 003 style (campaignId, label, …)"],
  ["template", "Template: your own JSON with merge tags"],
];

async function allEndpoints() {
  const bots = await all("/v1/bots");
  const lists = await Promise.all(bots.map((b) => all(`/v1/bots/${seg(b.id)}/endpoints`)));
  return { bots, endpoints: lists.flat() };
}

const health = (id) => api("GET", `/v1/endpoints/${seg(id)}/health`).catch(() => null);

async function eventTypes() {
  const r = await api("GET", "/v1/event-types");
  return (Array.isArray(r) ? r : r.data).map((t) => t.name);
}

let chartCount = 0;

/** Fetches an endpoint's 24 h chart (SVG text) and puts it into `el`. */
async function chartInto(el, id) {
  try {
    const svg = await api("GET", `/v1/endpoints/${seg(id)}/health/chart.svg`);
    const doc = new DOMParser().parseFromString(svg, "image/svg+xml");
    const root = doc.documentElement;
    if (root.nodeName !== "svg") throw new Error("not an SVG");
    root.querySelectorAll("script, foreignObject").forEach((n) => n.remove());
    root.querySelectorAll("*").forEach((n) => [...n.attributes].forEach((a) => { if (a.name.startsWith("on")) n.removeAttribute(a.name); }));
    // Several charts on one page: keep their ids (and the labels that use them) unique.
    const prefix = `c${++chartCount}-`;
    root.querySelectorAll("[id]").forEach((n) => { n.id = prefix + n.id; });
    for (const attr of ["aria-labelledby", "aria-describedby"]) {
      const v = root.getAttribute(attr);
      if (v) root.setAttribute(attr, v.split(/\s+/).map((x) => prefix + x).join(" "));
    }
    if (!root.getAttribute("role")) root.setAttribute("role", "img");
    if (!root.getAttribute("aria-label") && !root.querySelector("title")) root.setAttribute("aria-label", "Success rate and latency over the last 24 hours");
    el.replaceChildren(document.importNode(root, true));
    // On a narrow screen the chart scrolls sideways: show "now" once it is laid out.
    const ro = new ResizeObserver(() => {
      if (el.clientWidth > 0) { el.scrollLeft = el.scrollWidth; ro.disconnect(); }
    });
    ro.observe(el);
  } catch (err) {
    el.replaceChildren(h("p", { class: "small muted" }, err.status === 404 ? "No chart: this server does not draw health charts yet." : `No chart: ${plain(err)}`));
  }
}

function healthStats(hl) {
  if (!hl) return h("p", { class: "small muted" }, "Health unavailable.");
  return h("div", { class: "stats" },
    h("div", { class: "stat" }, h("span", { class: "small muted" }, "Success, 24 h"), h("b", {}, pct(hl.success_rate_24h))),
    h("div", { class: "stat" }, h("span", { class: "small muted" }, "Attempts, 24 h"), h("b", {}, String(hl.attempts_24h))),
    h("div", { class: "stat" }, h("span", { class: "small muted" }, "Latency p50 / p99"), h("b", {}, hl.latency ? `${hl.latency.p50_ms} / ${hl.latency.p99_ms} ms` : "—")),
    h("div", { class: "stat" }, h("span", { class: "small muted" }, "Failures in a row"), h("b", {}, String(hl.consecutive_failures))));
}

// ---------------------------------------------------------------- endpoints

export async function endpoints(main) {
  const { bots, endpoints: eps } = await allEndpoints();
  main.append(pageHead("Webhooks", {
    sub: "Endpoints receive your bots' events as signed HTTP POSTs, retried until they succeed.",
    actions: bots.length ? h("a", { class: "button primary", href: "#/webhooks/new" }, "New Webhook") : null,
  }));
  if (!bots.length) {
    main.append(h("div", { class: "panel empty" }, h("p", {}, "Create a bot first: endpoints receive a bot's events."), h("a", { class: "button primary", href: "#/bots/new" }, "New bot")));
    return;
  }
  if (!eps.length) {
    main.append(h("div", { class: "panel empty" }, h("p", {}, "No endpoints yet."), h("a", { class: "button primary", href: "#/webhooks/new" }, "Add your first webhook")));
    return;
  }
  const healths = await Promise.all(eps.map((e) => health(e.id)));
  const rows = eps.map((e, i) => {
    const hl = healths[i];
    const tr = h("tr", { class: "clickable" },
      h("td", { "data-label": "Endpoint", class: "wrap" }, h("a", { href: `#/webhooks/${seg(e.id)}` }, e.url), e.description ? h("div", { class: "small muted" }, e.description) : null),
      h("td", { "data-label": "Bot" }, h("code", {}, e.bot_id)),
      h("td", { "data-label": "Health" }, healthBadge(hl ? hl.state : e.enabled ? "healthy" : "disabled")),
      h("td", { "data-label": "Success 24 h" }, pct(hl && hl.success_rate_24h)),
      h("td", { "data-label": "Events", class: "small" }, e.events ? e.events.join(", ") : "All events"),
      h("td", { "data-label": "Format" }, e.format));
    tr.addEventListener("click", (ev) => { if (ev.target.tagName !== "A") location.hash = `#/webhooks/${seg(e.id)}`; });
    return tr;
  });
  main.append(h("div", { class: "panel table-wrap" }, h("table", { class: "responsive", id: "endpoints" },
    h("thead", {}, h("tr", {}, ["Endpoint", "Bot", "Health", "Success 24 h", "Events", "Format"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows))));
}

/** The create/edit form. `ep` is the endpoint being edited, or null. */
export async function endpointForm(main, { id, query }) {
  const ep = id ? await api("GET", `/v1/endpoints/${seg(id)}`) : null;
  const [bots, types] = await Promise.all([all("/v1/bots"), eventTypes()]);
  main.append(pageHead(ep ? "Edit webhook" : "New Webhook", {
    crumbs: [h("a", { href: "#/webhooks" }, "Webhooks"), ep ? [" / ", h("a", { href: `#/webhooks/${seg(ep.id)}` }, ep.url)] : null],
    sub: ep ? null : "Where a bot's events are sent, which ones, and how.",
  }));
  if (!bots.length) { main.append(alert("info", "Create a bot first.")); return; }

  const bot = select("bot", bots.map((b) => [b.id, `${b.name} (${b.id})`]), ep ? ep.bot_id : query.get("bot") || bots[0].id);
  if (ep) bot.disabled = true;
  const url = h("input", { type: "url", name: "url", required: true, value: ep ? ep.url : "", placeholder: "https://example.com/hooks/botwire", autocomplete: "off" });
  const description = h("input", { type: "text", name: "description", value: ep ? ep.description : "", autocomplete: "off" });
  const everything = h("input", { type: "radio", name: "which", value: "all", id: "ev-all", checked: !ep || !ep.events });
  const some = h("input", { type: "radio", name: "which", value: "some", id: "ev-some", checked: !!(ep && ep.events) });
  const chosen = new Set(ep && ep.events ? ep.events : []);
  const boxes = types.map((t) => h("label", {}, h("input", { type: "checkbox", name: "event", value: t, checked: chosen.has(t) }), h("code", {}, t)));
  const checks = h("div", { class: "checks" }, boxes);
  const syncChecks = () => checks.querySelectorAll("input").forEach((c) => { c.disabled = everything.checked; });
  everything.addEventListener("change", syncChecks);
  some.addEventListener("change", syncChecks);
  syncChecks();
  const events = h("fieldset", {}, h("legend", {}, "Events"),
    h("div", { class: "row" }, h("label", { class: "inline", for: "ev-all" }, everything, "All events"), h("label", { class: "inline", for: "ev-some" }, some, "Only these:")),
    checks);
  const format = select("format", FORMATS, ep ? ep.format : "standard");
  const headers = headerEditor("Custom headers", ep ? ep.headers : {});
  const body = h("textarea", { name: "body", rows: 4, placeholder: "{\"campaignId\": \"13010\"}" });
  body.value = ep && ep.body && Object.keys(ep.body).length ? pretty(ep.body) : "";
  // Checked as it is typed, so a mistake shows before saving.
  body.addEventListener("input", () => {
    try { parseObject(body.value, "Extra body params"); fieldError(body, ""); } catch (err) { fieldError(body, err.message); }
  });
  const rate = h("input", { type: "number", name: "rate_limit", min: 1, max: 100000, value: ep && ep.rate_limit ? ep.rate_limit : "", inputmode: "numeric" });
  const submit = h("button", { type: "submit", class: "primary" }, ep ? "Save changes" : "Create webhook");
  const form = h("form", { class: "stack panel narrow", novalidate: true },
    field("Bot", bot, ep ? "An endpoint belongs to one bot." : "Whose events this endpoint receives."),
    field("URL", url, "Events are POSTed here. http or https."),
    field("Description (optional)", description),
    events,
    field("Payload format", format),
    headers.el,
    field("Extra body params (JSON, optional)", body, "A JSON object merged into every payload, e.g. your own ids. With the Template format it is the whole payload: string values may hold {{event.type}}, {{event.id}}, {{event.timestamp}}, {{data.contact.phone}}, {{data.response}} …"),
    field("Rate limit (requests per second, optional)", rate, "Leave empty for no limit."),
    h("div", { class: "row" }, submit, h("a", { class: "button", href: ep ? `#/webhooks/${seg(ep.id)}` : "#/webhooks" }, "Cancel")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    let extra;
    try { extra = parseObject(body.value, "Extra body params"); } catch (err) { fieldError(body, err.message); body.focus(); return; }
    if (!url.value.trim()) { fieldError(url, "Enter the URL events should be sent to."); url.focus(); return; }
    const picked = [...checks.querySelectorAll("input:checked")].map((c) => c.value);
    if (some.checked && !picked.length) { const a = alert("error", "Pick at least one event, or choose All events."); events.append(a); a.focus(); return; }
    const payload = {
      url: url.value.trim(),
      description: description.value,
      events: everything.checked ? null : picked,
      format: format.value,
      headers: headers.read(),
      body: extra,
      rate_limit: rate.value ? Number(rate.value) : null,
    };
    submit.disabled = true;
    try {
      let saved;
      if (ep) saved = await api("PATCH", `/v1/endpoints/${seg(ep.id)}`, { json: payload });
      else {
        if (payload.rate_limit === null) delete payload.rate_limit;
        saved = await api("POST", `/v1/bots/${seg(bot.value)}/endpoints`, { json: payload });
      }
      toast(ep ? "Webhook saved" : "Webhook created");
      location.hash = `#/webhooks/${seg(saved.id)}`;
    } catch (err) { showError(form, err, submit.parentElement); } finally { submit.disabled = false; }
  });
  main.append(form);
  url.focus();
}

export async function endpointDetail(main, { id }) {
  const ep = await api("GET", `/v1/endpoints/${seg(id)}`);
  const hl = await health(id);
  main.append(pageHead(ep.url, {
    crumbs: h("a", { href: "#/webhooks" }, "Webhooks"),
    sub: h("span", {}, healthBadge(hl ? hl.state : ep.enabled ? "healthy" : "disabled"), " ", h("code", {}, ep.id), " · bot ", h("a", { href: `#/bots/${seg(ep.bot_id)}` }, ep.bot_id)),
    actions: [
      h("a", { class: "button", href: `#/webhooks/${seg(id)}/edit` }, "Edit"),
      h("a", { class: "button", href: `#/deliveries?endpoint_id=${seg(id)}` }, "Deliveries"),
      button(ep.enabled ? "Disable" : "Enable", async () => {
        try {
          await api("PATCH", `/v1/endpoints/${seg(id)}`, { json: { enabled: !ep.enabled } });
          toast(ep.enabled ? "Endpoint disabled" : "Endpoint enabled");
          window.dispatchEvent(new HashChangeEvent("hashchange"));
        } catch (err) { toast(plain(err)); }
      }, ep.enabled ? "" : "primary"),
      button("Delete", async () => {
        if (!confirm(`Delete the endpoint ${ep.url}? Its deliveries stop.`)) return;
        try { await api("DELETE", `/v1/endpoints/${seg(id)}`); toast("Endpoint deleted"); location.hash = "#/webhooks"; } catch (err) { toast(plain(err)); }
      }, "danger"),
    ],
  }));
  if (!ep.enabled) main.append(alert("info", `Disabled${ep.disabled_reason ? `: ${ep.disabled_reason}` : ""}${ep.disabled_at ? ` (since ${new Date(ep.disabled_at).toLocaleString()})` : ""}. Events are not delivered to it until you enable it.`));

  // Settings.
  const settings = h("section", { class: "panel", "aria-labelledby": "set-h" }, h("h2", { id: "set-h" }, "Settings"),
    facts([
      ["Events", ep.events ? ep.events.join(", ") : "All events"],
      ["Format", ep.format],
      ["Headers", Object.keys(ep.headers).length ? h("div", {}, Object.entries(ep.headers).map(([k, v]) => h("div", { class: "header-line" }, h("code", {}, `${k}: ${v.value}`), v.sensitive ? [" ", badge("off", "secret")] : null))) : "None"],
      ["Extra body", ep.body && Object.keys(ep.body).length ? h("pre", {}, pretty(ep.body)) : "None"],
      ["Rate limit", ep.rate_limit ? `${ep.rate_limit} per second` : "None"],
      ["Description", ep.description || "—"],
      ["Created", time(ep.created_at)],
    ]));

  // Secret.
  const secretOut = h("div", { "aria-live": "polite" });
  const secret = h("section", { class: "panel", "aria-labelledby": "sec-h" }, h("h2", { id: "sec-h" }, "Signing secret"),
    h("p", { class: "small muted" }, "Requests are signed with it (Standard Webhooks). Verify the webhook-signature header with it; after a rotation the old secret keeps signing for 24 hours."),
    h("div", { class: "row" },
      button("Reveal secret", async () => {
        try { const s = await api("GET", `/v1/endpoints/${seg(id)}/secret`); secretOut.replaceChildren(h("p", { class: "secret", id: "secret-value" }, s.secret)); } catch (err) { secretOut.replaceChildren(alert("error", plain(err))); }
      }),
      button("Rotate secret", async () => {
        try {
          const s = await api("POST", `/v1/endpoints/${seg(id)}/secret/rotate`);
          secretOut.replaceChildren(alert("ok", "New secret made. ", s.previous_expires_at ? `The previous one keeps signing until ${new Date(s.previous_expires_at).toLocaleString()}.` : ""), h("p", { class: "secret", id: "secret-value" }, s.secret));
        } catch (err) { secretOut.replaceChildren(alert("error", plain(err))); }
      })),
    secretOut);

  // Health (filled below; the test refreshes it).
  const stats = h("div", {}, healthStats(hl));
  const chart = h("div", { class: "chart", id: "chart" }, h("p", { class: "muted small" }, "Loading chart…"));

  // Test.
  const testOut = h("div", { "aria-live": "polite", id: "test-result" });
  const test = h("section", { class: "panel", "aria-labelledby": "test-h" }, h("h2", { id: "test-h" }, "Test"),
    h("p", { class: "small muted" }, "Sends a signed webhook.test event now and shows what the endpoint answered."),
    button("Send test event", async () => {
      testOut.replaceChildren(h("p", { class: "muted" }, "Sending…"));
      try {
        const r = await api("POST", `/v1/endpoints/${seg(id)}/test`);
        testOut.replaceChildren(sendResult(r));
        const fresh = await health(id);
        stats.replaceChildren(healthStats(fresh));
        chartInto(chart, id);
      } catch (err) { testOut.replaceChildren(alert("error", plain(err))); }
    }, "primary"),
    testOut);

  // Recover.
  const since = h("input", { type: "datetime-local", name: "since", value: isoToLocal(new Date(Date.now() - 86400000).toISOString()) });
  const recoverOut = h("div", { "aria-live": "polite" });
  const recoverBtn = h("button", { type: "submit" }, "Resend failed deliveries");
  const recoverForm = h("form", { class: "stack" }, field("Failed or dead deliveries since", since, "In your local time."), h("div", {}, recoverBtn), recoverOut);
  recoverForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    recoverOut.replaceChildren();
    const iso = localToIso(since.value);
    if (!iso) { fieldError(since, "Pick a date and time."); return; }
    recoverBtn.disabled = true;
    try {
      const r = await api("POST", `/v1/endpoints/${seg(id)}/recover`, { json: { since: iso } });
      recoverOut.append(alert("ok", r.requeued ? `${r.requeued} deliver${r.requeued === 1 ? "y is" : "ies are"} due again now.` : "Nothing to resend: no failed or dead deliveries since then."));
    } catch (err) { recoverOut.append(alert("error", plain(err))); } finally { recoverBtn.disabled = false; }
  });
  const recover = h("section", { class: "panel", "aria-labelledby": "rec-h" }, h("h2", { id: "rec-h" }, "Recover"),
    h("p", { class: "small muted" }, "After an outage on your side: queue again every failed or dead delivery since a time."), recoverForm);

  const healthPanel = h("section", { class: "panel", "aria-labelledby": "hl-h" }, h("h2", { id: "hl-h" }, "Health, last 24 hours"),
    stats,
    hl && hl.last_error ? alert("error", `Last failure ${new Date(hl.last_error.at).toLocaleString()}: ${hl.last_error.message || hl.last_error.kind || ""}${hl.last_error.status ? ` (HTTP ${hl.last_error.status})` : ""}`) : null,
    chart);
  main.append(h("div", { class: "split-even" }, h("div", {}, healthPanel, test, secret), h("div", {}, settings, recover)));
  chartInto(chart, id);
}

/** What an endpoint answered a test: delivered or not, status, latency, body. */
export function sendResult(r) {
  return h("div", {},
    r.success ? alert("ok", "Delivered.") : alert("error", `Not delivered: ${r.error || (r.status ? `HTTP ${r.status}` : r.error_kind || "failed")}`),
    facts([
      ["Status", r.status ? String(r.status) : "No answer"],
      ["Latency", `${r.latency_ms} ms`],
      r.error_kind ? ["Error", `${r.error_kind}${r.error ? `: ${r.error}` : ""}`] : null,
      ["Delivery", h("a", { href: `#/deliveries/${seg(r.delivery_id)}` }, r.delivery_id)],
      ["Response", h("pre", { class: "response-body" }, r.body || "(empty)")],
    ]));
}

// --------------------------------------------------------------- deliveries

const STATUSES = [["", "Any status"], ["succeeded", "Succeeded"], ["failed", "Failed, will retry"], ["dead", "Dead"], ["pending", "Pending"]];

export async function deliveries(main, { query }) {
  const [{ endpoints: eps }, types] = await Promise.all([allEndpoints(), eventTypes()]);
  main.append(pageHead("Deliveries", {
    sub: "Every event sent to every endpoint, newest first. Open one to see its attempts.",
    actions: button("Refresh", () => window.dispatchEvent(new HashChangeEvent("hashchange"))),
  }));
  const endpoint = select("endpoint_id", [["", "Any endpoint"], ...eps.map((e) => [e.id, `${e.url} (${e.bot_id})`])], query.get("endpoint_id") || "");
  const type = select("event_type", [["", "Any event type"], ...types.map((t) => [t, t])], query.get("event_type") || "");
  const status = select("status", STATUSES, query.get("status") || "");
  const since = h("input", { type: "datetime-local", name: "since", value: isoToLocal(query.get("since")) });
  const until = h("input", { type: "datetime-local", name: "until", value: isoToLocal(query.get("until")) });
  const apply = h("button", { type: "submit", class: "primary" }, "Filter");
  const form = h("form", { class: "panel filters", id: "delivery-filters" },
    field("Endpoint", endpoint), field("Event type", type), field("Status", status), field("From", since), field("Until", until),
    h("div", { class: "row" }, apply, h("a", { class: "button", href: "#/deliveries" }, "Clear")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (endpoint.value) q.set("endpoint_id", endpoint.value);
    if (type.value) q.set("event_type", type.value);
    if (status.value) q.set("status", status.value);
    if (since.value) q.set("since", localToIso(since.value));
    if (until.value) q.set("until", localToIso(until.value));
    const s = q.toString();
    location.hash = `#/deliveries${s ? `?${s}` : ""}`;
  });
  main.append(form);

  const byId = Object.fromEntries(eps.map((e) => [e.id, e]));
  const body = h("tbody", {});
  const table = h("div", { class: "panel table-wrap" }, h("table", { class: "responsive", id: "deliveries" },
    h("thead", {}, h("tr", {}, ["When", "Status", "Event", "Endpoint", "Attempts", "Last error"].map((t) => h("th", { scope: "col" }, t)))),
    body));
  const more = h("div", { class: "row" });
  main.append(table, more);

  const q = new URLSearchParams();
  for (const k of ["endpoint_id", "event_type", "status", "since", "until"]) if (query.get(k)) q.set(k, query.get(k));
  q.set("limit", "50");
  const load = async (cursor) => {
    const page = await api("GET", `/v1/deliveries?${q}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    for (const d of page.data) {
      const e = byId[d.endpoint_id];
      const tr = h("tr", { class: "clickable" },
        h("td", { "data-label": "When" }, h("a", { href: `#/deliveries/${seg(d.id)}` }, time(d.created_at))),
        h("td", { "data-label": "Status" }, statusBadge(d.status)),
        h("td", { "data-label": "Event" }, h("code", {}, d.event_type || d.event_id)),
        h("td", { "data-label": "Endpoint", class: "wrap small" }, e ? e.url : d.endpoint_id),
        h("td", { "data-label": "Attempts" }, String(d.attempts)),
        h("td", { "data-label": "Last error", class: "wrap small" }, d.last_error || "—"));
      tr.addEventListener("click", (ev) => { if (!ev.target.closest("a")) location.hash = `#/deliveries/${seg(d.id)}`; });
      body.append(tr);
    }
    if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "No deliveries match.")));
    more.replaceChildren(page.next_cursor ? button("Load more", () => load(page.next_cursor)) : []);
  };
  try { await load(null); } catch (err) { table.replaceChildren(alert("error", plain(err))); }
}

export async function deliveryDetail(main, { id }) {
  const d = await api("GET", `/v1/deliveries/${seg(id)}`);
  const [ep, ev, attempts] = await Promise.all([
    api("GET", `/v1/endpoints/${seg(d.endpoint_id)}`).catch(() => null),
    api("GET", `/v1/events/${seg(d.event_id)}`).catch(() => null),
    all(`/v1/deliveries/${seg(id)}/attempts`),
  ]);
  const retryOut = h("div", { "aria-live": "polite" });
  main.append(pageHead(ev ? `Delivery of ${ev.type}` : "Delivery", {
    crumbs: [h("a", { href: "#/deliveries" }, "Deliveries"), ep ? [" / ", h("a", { href: `#/deliveries?endpoint_id=${seg(ep.id)}` }, ep.url)] : null],
    sub: h("span", {}, statusBadge(d.status), " ", h("code", {}, d.id)),
    actions: button("Retry now", async () => {
      try {
        const r = await api("POST", `/v1/deliveries/${seg(id)}/retry`);
        retryOut.replaceChildren(sendResult(r));
        toast(r.success ? "Delivered" : "The retry failed");
      } catch (err) { retryOut.replaceChildren(alert("error", plain(err))); }
    }, "primary"),
  }));
  main.append(retryOut);
  main.append(h("div", { class: "split" },
    h("section", { class: "panel", "aria-labelledby": "att-h" }, h("h2", { id: "att-h" }, `Attempts (${attempts.length})`),
      attempts.length ? h("div", { class: "stack", id: "attempts" }, attempts.map((a, i) => attemptView(a, i === attempts.length - 1 || i === 0))) : h("p", { class: "muted" }, "No attempts yet.")),
    h("div", {},
      h("section", { class: "panel", "aria-labelledby": "dl-h" }, h("h2", { id: "dl-h" }, "Delivery"),
        facts([
          ["Status", statusBadge(d.status)],
          ["Endpoint", ep ? h("a", { href: `#/webhooks/${seg(ep.id)}` }, ep.url) : d.endpoint_id],
          ["Attempts", String(d.attempts)],
          ["Next attempt", d.next_attempt_at ? time(d.next_attempt_at) : "—"],
          ["Last error", d.last_error || "—"],
          ["Created", time(d.created_at)],
        ])),
      ev ? h("section", { class: "panel", "aria-labelledby": "ev-h" }, h("h2", { id: "ev-h" }, "Event"),
        facts([["Type", h("code", {}, ev.type)], ["Id", h("code", {}, ev.id)], ["At", time(ev.timestamp)]]),
        h("pre", {}, pretty(ev.data))) : null)));
}

function attemptView(a, open) {
  const ok = a.response_status && a.response_status >= 200 && a.response_status < 300;
  const headers = a.request_headers && typeof a.request_headers === "object" ? Object.entries(a.request_headers) : [];
  return h("details", { class: "panel attempt", open },
    h("summary", {}, h("span", { class: "row" },
      ok ? badge("ok", `HTTP ${a.response_status}`) : badge("bad", a.response_status ? `HTTP ${a.response_status}` : a.error_kind || "failed"),
      time(a.started_at), h("span", { class: "muted small" }, `${a.duration_ms} ms`))),
    a.error_message ? alert("error", `${a.error_kind ? `${a.error_kind}: ` : ""}${a.error_message}`) : null,
    h("h3", {}, "Request headers"),
    h("div", { class: "table-wrap" }, h("table", { class: "request-headers" }, h("tbody", {}, headers.map(([k, v]) => h("tr", {}, h("th", { scope: "row" }, k), h("td", { class: "wrap mono small" }, Array.isArray(v) ? v.join(", ") : String(v))))))),
    h("h3", {}, "Response body"),
    h("pre", { class: "response-body" }, a.response_body || "(empty)"));
}

// ---------------------------------------------------------- story webhooks

export async function stories(main, { query }) {
  const bots = await all("/v1/bots");
  main.append(pageHead("Story webhooks", { sub: "Calls from a bot's flow to your API; the JSON answer flows back into the chat (responses, memory, user attributes, quick replies)." }));
  if (!bots.length) { main.append(h("div", { class: "panel empty" }, h("p", {}, "Create a bot first."), h("a", { class: "button primary", href: "#/bots/new" }, "New bot"))); return; }
  const current = query.get("bot") || bots[0].id;
  const pick = select("bot", bots.map((b) => [b.id, `${b.name} (${b.id})`]), current);
  pick.addEventListener("change", () => { location.hash = `#/stories?bot=${seg(pick.value)}`; });
  const list = await all(`/v1/bots/${seg(current)}/webhooks`).catch((err) => { main.append(alert("error", plain(err))); return []; });
  main.append(h("div", { class: "panel row spread" }, field("Bot", pick), h("a", { class: "button primary", href: `#/stories/${seg(current)}/new` }, "New story webhook")));
  if (!list.length) { main.append(h("div", { class: "panel empty" }, h("p", {}, "This bot has no story webhooks. The stories example defines three."))); return; }
  main.append(h("div", { class: "grid", id: "stories" }, list.map((w) => h("article", { class: "card" },
    h("h3", {}, h("a", { href: `#/stories/${seg(current)}/${seg(w.name)}` }, w.name)),
    h("div", { class: "row" }, badge("info", w.method || "POST"), w.sign === false ? badge("off", "unsigned") : badge("ok", "signed")),
    h("p", { class: "small wrap mono" }, w.url),
    h("div", { class: "actions" }, h("a", { class: "button small", href: `#/stories/${seg(current)}/${seg(w.name)}` }, "Edit and test"))))));
}

export async function storyDetail(main, { bot, name }) {
  const isNew = name === undefined;
  const w = isNew ? { name: "", method: "POST", url: "", params: {}, headers: {}, timeout_ms: 10000, sign: true } : await api("GET", `/v1/bots/${seg(bot)}/webhooks/${seg(name)}`);
  main.append(pageHead(isNew ? "New story webhook" : `Story webhook ${w.name}`, {
    crumbs: [h("a", { href: `#/stories?bot=${seg(bot)}` }, "Story webhooks"), " / ", h("code", {}, bot)],
  }));
  const nameIn = h("input", { type: "text", name: "name", value: w.name, autocomplete: "off", readonly: isNew ? null : true });
  const method = select("method", ["GET", "POST", "PUT", "PATCH", "DELETE"].map((m) => [m, m]), w.method || "POST");
  const url = h("input", { type: "url", name: "url", value: w.url, autocomplete: "off" });
  const params = h("textarea", { name: "params", rows: 4 });
  params.value = w.params && Object.keys(w.params).length ? pretty(w.params) : "";
  const headers = headerEditor("Headers", w.headers);
  const timeout = h("input", { type: "number", name: "timeout_ms", min: 1, max: 30000, value: w.timeout_ms ?? 10000 });
  const sign = h("input", { type: "checkbox", name: "sign", checked: w.sign !== false, id: "sign" });
  const save = h("button", { type: "submit", class: "primary" }, isNew ? "Create" : "Save");
  const form = h("form", { class: "stack", novalidate: true },
    field("Name", nameIn, isNew ? "Flows call it by this name." : "Names cannot change; flows call it by name."),
    field("Method", method),
    field("URL", url, "Merge tags like {{memory.city}} are allowed in the path and query, not in the host."),
    field("Params (JSON object)", params, "The query string for GET and DELETE, the JSON body otherwise."),
    headers.el,
    field("Timeout (ms)", timeout),
    h("label", { class: "inline", for: "sign" }, sign, "Sign requests (Standard Webhooks headers)"),
    h("div", { class: "row" }, save, isNew ? null : button("Delete", async () => {
      if (!confirm(`Delete the story webhook ${w.name}?`)) return;
      try { await api("DELETE", `/v1/bots/${seg(bot)}/webhooks/${seg(w.name)}`); toast("Deleted"); location.hash = `#/stories?bot=${seg(bot)}`; } catch (err) { showError(form, err, save.parentElement); }
    }, "danger")));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    let p;
    try { p = parseObject(params.value, "Params"); } catch (err) { fieldError(params, err.message); params.focus(); return; }
    const body = { method: method.value, url: url.value.trim(), params: p, headers: headers.read(), timeout_ms: Number(timeout.value) || 10000, sign: sign.checked };
    save.disabled = true;
    try {
      if (isNew) {
        await api("POST", `/v1/bots/${seg(bot)}/webhooks`, { json: { name: nameIn.value.trim(), ...body } });
        toast("Story webhook created");
        location.hash = `#/stories/${seg(bot)}/${seg(nameIn.value.trim())}`;
      } else {
        await api("PATCH", `/v1/bots/${seg(bot)}/webhooks/${seg(w.name)}`, { json: body });
        toast("Saved");
      }
    } catch (err) { showError(form, err, save.parentElement); } finally { save.disabled = false; }
  });
  const editPanel = h("section", { class: "panel", "aria-labelledby": "sw-edit-h" }, h("h2", { id: "sw-edit-h" }, "Definition"), form);
  if (isNew) { main.append(editPanel); nameIn.focus(); return; }

  const memory = h("textarea", { name: "memory", rows: 4 });
  memory.value = "{\n  \"name\": \"John Doe\"\n}";
  const user = h("textarea", { name: "user", rows: 3 });
  user.value = "{}";
  const run = h("button", { type: "submit", class: "primary" }, "Run test");
  const out = h("div", { "aria-live": "polite", id: "story-test-result" });
  const testForm = h("form", { class: "stack", novalidate: true },
    field("Sample memory (JSON)", memory, "What {{memory.…}} merge tags render with."),
    field("Sample user attributes (JSON)", user, "What {{user.…}} merge tags render with."),
    h("div", {}, run), out);
  testForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(testForm);
    out.replaceChildren();
    let m, u;
    try { m = parseObject(memory.value, "Sample memory"); } catch (err) { fieldError(memory, err.message); memory.focus(); return; }
    try { u = parseObject(user.value, "Sample user attributes"); } catch (err) { fieldError(user, err.message); user.focus(); return; }
    run.disabled = true;
    try {
      const r = await api("POST", `/v1/bots/${seg(bot)}/webhooks/${seg(w.name)}/test`, { json: { memory: m, user: u } });
      out.append(
        r.error ? alert("error", `Outcome: ${r.outcome}. ${r.error}`) : alert("ok", `Outcome: ${r.outcome}.`),
        h("h3", {}, "Request"), h("pre", {}, [r.request.line, ...headerLines(r.request.headers), "", r.request.body || ""].join("\n")),
        h("h3", {}, "Response"), facts([["Status", r.response.status ? String(r.response.status) : "No answer"], ["Took", `${r.response.duration_ms ?? "—"} ms`]]),
        h("pre", {}, r.response.body || "(empty)"),
        h("div", {}, r.would_merge ? [h("h3", {}, "What the conversation would get"), h("pre", {}, pretty(r.would_merge))] : null));
    } catch (err) { out.append(alert("error", plain(err))); } finally { run.disabled = false; loadCalls(); }
  });
  const calls = h("div", {});
  const loadCalls = async () => {
    try {
      const page = await api("GET", `/v1/bots/${seg(bot)}/webhooks/${seg(w.name)}/calls?limit=10`);
      calls.replaceChildren(page.data.length ? h("div", { class: "table-wrap" }, h("table", { class: "responsive" },
        h("thead", {}, h("tr", {}, ["When", "Outcome", "Status", "Conversation"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, page.data.map((c) => h("tr", {},
          h("td", { "data-label": "When" }, time(c.at)),
          h("td", { "data-label": "Outcome" }, c.outcome === "ok" ? badge("ok", "ok") : badge("bad", c.outcome)),
          h("td", { "data-label": "Status" }, c.record && c.record.status ? String(c.record.status) : (c.record && c.record.error) || "—"),
          h("td", { "data-label": "Conversation", class: "wrap small" }, c.conversation_id || "test")))))) : h("p", { class: "muted small" }, "No calls yet."));
    } catch (err) { calls.replaceChildren(alert("error", plain(err))); }
  };
  main.append(h("div", { class: "split-even" }, editPanel,
    h("div", {},
      h("section", { class: "panel", "aria-labelledby": "sw-test-h" }, h("h2", { id: "sw-test-h" }, "Test"),
        h("p", { class: "small muted" }, "Calls the webhook now, outside any conversation, with sample data."), testForm),
      h("section", { class: "panel", "aria-labelledby": "sw-calls-h" }, h("h2", { id: "sw-calls-h" }, "Recent calls"), calls))));
  loadCalls();
}

/** Header lines from `[[name, value], …]` or `{name: value}`. */
function headerLines(headers) {
  if (!headers) return [];
  const pairs = Array.isArray(headers) ? headers : Object.entries(headers);
  return pairs.map((p) => (Array.isArray(p) ? `${p[0]}: ${p[1]}` : String(p)));
}

// ------------------------------------------------------------------ health

export async function healthPage(main) {
  const { endpoints: eps } = await allEndpoints();
  main.append(pageHead("Health", { sub: "Success rate and latency per endpoint over the last 24 hours." }));
  if (!eps.length) { main.append(h("div", { class: "panel empty" }, h("p", {}, "No endpoints yet."), h("a", { class: "button primary", href: "#/webhooks/new" }, "New Webhook"))); return; }
  const healths = await Promise.all(eps.map((e) => health(e.id)));
  const charts = [];
  main.append(h("div", { class: "split-even", id: "health" }, eps.map((e, i) => {
    const chart = h("div", { class: "chart" }, h("p", { class: "muted small" }, "Loading chart…"));
    charts.push([chart, e.id]);
    return h("section", { class: "panel", "aria-label": `Health of ${e.url}` },
      h("div", { class: "row spread" }, h("h2", { class: "wrap" }, h("a", { href: `#/webhooks/${seg(e.id)}` }, e.url)), healthBadge(healths[i] ? healths[i].state : "unknown")),
      h("p", { class: "small muted" }, "Bot ", h("code", {}, e.bot_id)),
      healthStats(healths[i]),
      chart);
  })));
  await Promise.all(charts.map(([el, id]) => chartInto(el, id)));
}
