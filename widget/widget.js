// botwire chat widget: one <script> tag puts a chat bubble on any page.
//
//   <script src="https://botwire.example.com/widget.js"
//           data-bot="BOT_ID" data-key="PUBLISHABLE_KEY" defer></script>
//
// Optional: data-title (panel heading), data-color (accent, CSS colour),
// data-api (botwire's base URL; defaults to where this script came from).
// The key must be a publishable key of the bot that lists this page's origin.
(() => {
  "use strict";
  const script = document.currentScript;
  if (!script) return;
  const bot = script.dataset.bot;
  const key = script.dataset.key;
  const api = (script.dataset.api || new URL(script.src).origin).replace(/\/$/, "");
  const title = script.dataset.title || "Chat with us";
  const accent = script.dataset.color || "#1c64f2";
  if (!bot || !key) {
    console.warn("botwire widget: set data-bot and data-key on the script tag");
    return;
  }

  // A random visitor id per bot, kept in this browser so a returning visitor
  // continues the same conversation.
  const storageKey = `botwire:visitor:${bot}`;
  const visitorId = (() => {
    try {
      const known = localStorage.getItem(storageKey);
      if (known && /^[A-Za-z0-9_-]{16,64}$/.test(known)) return known;
    } catch (_) { /* storage blocked: a fresh id per page load */ }
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    const id = "v_" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    try { localStorage.setItem(storageKey, id); } catch (_) { /* ignore */ }
    return id;
  })();

  const css = `
    :host { all: initial; }
    * { box-sizing: border-box; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
    .bubble { position: fixed; right: 16px; bottom: 16px; width: 56px; height: 56px;
      border-radius: 50%; border: none; background: ${accent}; color: #fff; cursor: pointer;
      box-shadow: 0 4px 14px rgba(0,0,0,.25); display: grid; place-items: center; z-index: 2147483000; }
    .bubble:focus-visible, button:focus-visible, input:focus-visible {
      outline: 3px solid #f59f00; outline-offset: 2px; }
    .bubble svg { width: 28px; height: 28px; }
    .panel { position: fixed; right: 16px; bottom: 84px; width: min(360px, calc(100vw - 32px));
      height: min(520px, calc(100vh - 110px)); background: #fff; color: #1f2933; border-radius: 12px;
      box-shadow: 0 10px 30px rgba(0,0,0,.25); display: flex; flex-direction: column; overflow: hidden;
      z-index: 2147483000; font-size: 15px; }
    .panel[hidden] { display: none; }
    header { background: ${accent}; color: #fff; padding: 12px 14px; display: flex;
      align-items: center; justify-content: space-between; }
    header h2 { margin: 0; font-size: 16px; font-weight: 600; }
    header button { background: transparent; border: none; color: #fff; font-size: 22px;
      line-height: 1; cursor: pointer; padding: 4px 8px; border-radius: 6px; }
    .log { flex: 1; overflow-y: auto; padding: 12px; display: flex; flex-direction: column; gap: 8px;
      background: #f5f7fa; }
    .msg { margin: 0; max-width: 85%; padding: 8px 12px; border-radius: 12px; white-space: pre-wrap;
      overflow-wrap: anywhere; line-height: 1.4; }
    .bot { align-self: flex-start; background: #fff; border: 1px solid #e4e7eb; }
    .me { align-self: flex-end; background: ${accent}; color: #fff; }
    .agent { border-color: ${accent}; }
    .media img { display: block; max-width: 100%; max-height: 240px; border-radius: 8px; }
    .media figcaption { margin-top: 4px; font-size: 13px; color: #52606d; }
    .media a { color: ${accent}; }
    .note { align-self: center; color: #52606d; font-size: 13px; text-align: center; }
    .error { align-self: stretch; color: #a61b1b; background: #fde8e8; border-radius: 8px;
      padding: 8px 10px; font-size: 13px; }
    .quick { display: flex; flex-wrap: wrap; gap: 6px; padding: 0 12px 8px; background: #f5f7fa; }
    .quick:empty { display: none; }
    .quick button { border: 1px solid ${accent}; color: ${accent}; background: #fff; border-radius: 16px;
      padding: 6px 12px; cursor: pointer; font-size: 14px; }
    form { display: flex; gap: 8px; padding: 10px; border-top: 1px solid #e4e7eb; background: #fff; }
    label { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); }
    input { flex: 1; min-width: 0; padding: 9px 10px; border: 1px solid #9aa5b1; border-radius: 8px;
      font-size: 15px; color: #1f2933; }
    form button { background: ${accent}; color: #fff; border: none; border-radius: 8px; padding: 0 14px;
      font-size: 15px; cursor: pointer; }
    form button:disabled { opacity: .6; cursor: progress; }
  `;

  const host = document.createElement("div");
  host.setAttribute("data-botwire-widget", bot);
  const root = host.attachShadow({ mode: "open" });
  if ("adoptedStyleSheets" in root && typeof CSSStyleSheet === "function") {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(css);
    root.adoptedStyleSheets = [sheet];
  } else {
    const style = document.createElement("style");
    style.textContent = css;
    root.append(style);
  }

  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };

  const bubble = el("button", { class: "bubble", type: "button", "aria-label": `Open chat: ${title}`,
    "aria-expanded": "false", "aria-controls": "botwire-panel" });
  bubble.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true" fill="currentColor">' +
    '<path d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z"/></svg>';
  const panel = el("section", { class: "panel", id: "botwire-panel", role: "dialog",
    "aria-label": title, hidden: "" });
  const header = el("header");
  const heading = el("h2", {}, title);
  const close = el("button", { type: "button", "aria-label": "Close chat" }, "×");
  header.append(heading, close);
  const log = el("div", { class: "log", role: "log", "aria-live": "polite", "aria-label": "Conversation" });
  log.append(el("p", { class: "msg note" }, "Send a message to start."));
  const quick = el("div", { class: "quick", role: "group", "aria-label": "Suggested replies" });
  const form = el("form");
  const label = el("label", { for: "botwire-input" }, "Your message");
  const input = el("input", { id: "botwire-input", name: "message", autocomplete: "off",
    placeholder: "Type a message…", maxlength: "2000" });
  const send = el("button", { type: "submit" }, "Send");
  form.append(label, input, send);
  panel.append(header, log, quick, form);
  root.append(bubble, panel);

  const scrollDown = () => { log.scrollTop = log.scrollHeight; };
  const say = (cls, text) => { log.append(el("p", { class: `msg ${cls}` }, text)); scrollDown(); };
  // Only http(s) URLs become images or links; anything else is shown as text.
  const safeUrl = (u) => { try { const x = new URL(u); return /^https?:$/.test(x.protocol) ? x.href : null; }
    catch (_) { return null; } };
  const media = (part) => {
    const url = safeUrl(part.url || "");
    const fig = el("figure", { class: "msg bot media" });
    if (url && part.type === "image") {
      fig.append(el("img", { src: url, alt: part.caption || "Image" }));
    } else if (url) {
      const a = el("a", { href: url, target: "_blank", rel: "noopener noreferrer" },
        part.caption || `Open ${part.type}`);
      fig.append(a);
    } else {
      fig.append(el("span", {}, part.caption || part.url || ""));
    }
    if (url && part.caption && part.type === "image") fig.append(el("figcaption", {}, part.caption));
    log.append(fig);
    scrollDown();
  };

  const open = (show) => {
    panel.hidden = !show;
    bubble.setAttribute("aria-expanded", String(show));
    bubble.setAttribute("aria-label", show ? "Close chat" : `Open chat: ${title}`);
    (show ? input : bubble).focus();
  };
  bubble.addEventListener("click", () => open(panel.hidden));
  close.addEventListener("click", () => open(false));
  panel.addEventListener("keydown", (e) => { if (e.key === "Escape") open(false); });

  let busy = false;
  const post = async (text) => {
    if (busy || !text.trim()) return;
    busy = true;
    send.disabled = true;
    quick.replaceChildren();
    say("me", text);
    try {
      const resp = await fetch(`${api}/v1/bots/${encodeURIComponent(bot)}/chat`, {
        method: "POST",
        headers: { "Authorization": `Bearer ${key}`, "Content-Type": "application/json" },
        body: JSON.stringify({ contact: { id: visitorId }, text }),
      });
      const body = await resp.json().catch(() => null);
      if (!resp.ok) {
        const why = body && body.error ? body.error.message : `the server answered ${resp.status}`;
        log.append(el("p", { class: "error", role: "alert" }, `Message not sent: ${why}`));
        scrollDown();
        return;
      }
      for (const r of body.replies) {
        if (r.type === "text") say("bot", r.text); else media(r);
      }
      for (const q of body.quick_replies) {
        const b = el("button", { type: "button" }, q);
        b.addEventListener("click", () => post(q));
        quick.append(b);
      }
      if (body.ended) say("note", "Conversation ended. Write again to start over.");
    } catch (_) {
      log.append(el("p", { class: "error", role: "alert" },
        "Message not sent: the chat server could not be reached. Check your connection and try again."));
      scrollDown();
    } finally {
      busy = false;
      send.disabled = false;
      input.focus();
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = input.value;
    input.value = "";
    post(text);
  });

  // What is said without the visitor writing (a person answering after a
  // handoff, the bot taking over again) arrives by polling
  // GET /v1/bots/{bot}/chat/messages every few seconds while the page is
  // visible; the first poll only learns where to start.
  const POLL_MS = 3000;
  let cursor = null;
  let polling = false;
  const showPushed = (m) => {
    for (const r of m.replies) {
      if (r.type === "text") say(m.from === "agent" ? "bot agent" : "bot", r.text); else media(r);
    }
    if (m.quick_replies.length) {
      quick.replaceChildren();
      for (const q of m.quick_replies) {
        const b = el("button", { type: "button" }, q);
        b.addEventListener("click", () => post(q));
        quick.append(b);
      }
    }
  };
  const poll = async () => {
    if (polling || busy || document.visibilityState === "hidden") return;
    polling = true;
    try {
      const q = new URLSearchParams({ contact: visitorId });
      if (cursor !== null) q.set("after", cursor);
      const resp = await fetch(`${api}/v1/bots/${encodeURIComponent(bot)}/chat/messages?${q}`, {
        headers: { "Authorization": `Bearer ${key}` },
      });
      if (!resp.ok) return;
      const body = await resp.json();
      if (cursor !== null) body.messages.forEach(showPushed);
      cursor = body.cursor;
    } catch (_) {
      /* offline for now: the next poll tries again */
    } finally {
      polling = false;
    }
  };
  setInterval(poll, POLL_MS);
  poll();

  const mount = () => document.body.append(host);
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);
})();
