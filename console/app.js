// The console's shell: hash routes → pages, the navigation, sign-in state.
// Every page is a function that fills <main>; a 401 anywhere returns to sign-in.

import { session, setUnauthorizedHandler, plain } from "./api.js";
import { h, alert, leaveGuard } from "./ui.js";
import { signIn, bots, newBot, botDetail, editFlow } from "./pages.js";
import {
  endpoints, endpointForm, endpointDetail, deliveries, deliveryDetail, stories, storyDetail, healthPage,
} from "./webhooks.js";
import { keys } from "./keys.js";
import { audit } from "./audit.js";
import { channels } from "./channels.js";
import { inbox, conversation } from "./inbox.js";
import { buildBot } from "./build.js";
import { newBotWizard } from "./wizard.js";
import { users, userDetail } from "./users.js";
import { broadcasts, broadcastsHome } from "./broadcasts.js";

/** [pattern, page, section, title]; `:name` captures a path segment. */
const ROUTES = [
  ["/bots", bots, "bots", "Bots"],
  ["/bots/new", newBot, "bots", "New bot"],
  ["/bots/new/wizard", newBotWizard, "bots", "New bot"],
  ["/bots/:id", botDetail, "bots", "Bot"],
  ["/bots/:id/edit", editFlow, "bots", "Edit flow"],
  ["/bots/:id/build", buildBot, "bots", "Build"],
  ["/bots/:id/channels", channels, "bots", "Channels"],
  ["/bots/:id/broadcasts", broadcasts, "broadcasts", "Broadcasts"],
  ["/broadcasts", broadcastsHome, "broadcasts", "Broadcasts"],
  ["/inbox", inbox, "inbox", "Inbox"],
  ["/inbox/:bot/:id", conversation, "inbox", "Conversation"],
  ["/webhooks", endpoints, "webhooks", "Webhooks"],
  ["/webhooks/new", endpointForm, "webhooks", "New Webhook"],
  ["/webhooks/:id", endpointDetail, "webhooks", "Webhook"],
  ["/webhooks/:id/edit", endpointForm, "webhooks", "Edit webhook"],
  ["/deliveries", deliveries, "deliveries", "Deliveries"],
  ["/deliveries/:id", deliveryDetail, "deliveries", "Delivery"],
  ["/stories", stories, "stories", "Story webhooks"],
  ["/stories/:bot/new", storyDetail, "stories", "New story webhook"],
  ["/stories/:bot/:name", storyDetail, "stories", "Story webhook"],
  ["/health", healthPage, "health", "Health"],
  ["/keys", keys, "keys", "Keys"],
  ["/audit", audit, "audit", "Audit log"],
  ["/users", users, "users", "Users"],
  ["/users/:bot/:id", userDetail, "users", "User"],
];

function match(path) {
  const parts = path.split("/").filter(Boolean);
  for (const [pattern, page, section, title] of ROUTES) {
    const want = pattern.split("/").filter(Boolean);
    if (want.length !== parts.length) continue;
    const params = {};
    let ok = true;
    want.forEach((w, i) => {
      if (w.startsWith(":")) params[w.slice(1)] = decodeURIComponent(parts[i]);
      else if (w !== parts[i]) ok = false;
    });
    if (ok) return { page, section, title, params };
  }
  return null;
}

const main = document.getElementById("main");
const top = document.getElementById("top");
const nav = document.getElementById("nav");
const toggle = document.getElementById("menu-toggle");
let generation = 0;
let notice = null;

setUnauthorizedHandler(() => {
  notice = "Your key is no longer accepted (revoked, or the server was reset). Please sign in again.";
  location.hash = "#/sign-in";
});

// The skip link must not change the route (routes live in the hash).
document.querySelector(".skip").addEventListener("click", (e) => {
  e.preventDefault();
  (main.querySelector("h1") || main).focus();
});

toggle.addEventListener("click", () => {
  const open = nav.classList.toggle("open");
  toggle.setAttribute("aria-expanded", String(open));
});

document.getElementById("sign-out").addEventListener("click", () => {
  session.clear();
  notice = "You are signed out. The key was removed from this browser.";
  location.hash = "#/sign-in";
});

async function render() {
  // A page with unsaved work asks first; staying puts its address back.
  const guard = leaveGuard.current;
  if (guard && guard.hash !== location.hash) {
    if (guard.dirty() && !confirm("Leave this page? Your unsaved changes will be lost.")) {
      history.replaceState(null, "", guard.hash);
      return;
    }
    leaveGuard.current = null;
  }
  const gen = ++generation;
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, qs] = raw.split("?");
  const query = new URLSearchParams(qs || "");
  nav.classList.remove("open");
  toggle.setAttribute("aria-expanded", "false");
  main.replaceChildren();

  if (!session.key || path === "/sign-in") {
    if (session.key && path === "/sign-in") { location.hash = "#/bots"; return; }
    top.hidden = true;
    document.title = "Sign in · botwire";
    if (path !== "/sign-in") history.replaceState(null, "", "#/sign-in");
    signIn(main, { notice });
    notice = null;
    return;
  }
  top.hidden = false;
  if (path === "/" || path === "") { location.hash = "#/bots"; return; }
  const m = match(path);
  nav.querySelectorAll("a[data-section]").forEach((a) => {
    if (m && a.dataset.section === m.section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (!m) {
    main.append(h("h1", { tabindex: "-1" }, "Page not found"), h("p", {}, "There is no console page here. ", h("a", { href: "#/bots" }, "Go to your bots")));
    return;
  }
  document.title = `${m.title} · botwire`;
  const page = h("div", { class: "page" });
  try {
    await m.page(page, { ...m.params, query });
  } catch (err) {
    if (err.status === 401) return;
    page.append(alert("error", plain(err)));
  }
  if (gen !== generation) return;
  main.replaceChildren(page);
  const h1 = main.querySelector("h1");
  if (h1 && !main.contains(document.activeElement)) h1.focus({ preventScroll: true });
}

window.addEventListener("hashchange", render);
window.addEventListener("beforeunload", (e) => {
  if (leaveGuard.current && leaveGuard.current.dirty()) e.preventDefault();
});
render();
