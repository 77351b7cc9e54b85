// Keys page: the account's API keys, a new secret or publishable key (shown
// once), the chat widget's snippet and demo link for a publishable key, and
// revocation.

import { api, all, seg } from "./api.js";
import { h, field, button, badge, time, pageHead, alert, toast, showError, clearErrors, select } from "./ui.js";

const kindBadge = (k) => (k.kind === "publishable" ? badge("info", "Publishable") : badge("off", "Secret"));

function keyRow(k, reload) {
  const state = k.revoked_at ? badge("bad", "Revoked") : badge("ok", "Live");
  const revoke = k.revoked_at ? null : button("Revoke", async (b) => {
    if (!confirm(`Revoke the key “${k.name}” (${k.prefix}…)? Anything using it stops at once.`)) return;
    try {
      await api("DELETE", `/v1/keys/${seg(k.id)}`);
      toast(`Revoked ${k.name}`);
      reload();
    } catch (err) { showError(b.closest("tr") || document.body, err); }
  }, "danger small");
  return h("tr", { dataset: { key: k.id } },
    h("td", { "data-label": "Name" }, h("strong", {}, k.name), h("br"), h("code", { class: "small muted" }, `${k.prefix}…`)),
    h("td", { "data-label": "Kind" }, kindBadge(k)),
    h("td", { "data-label": "Bot" }, k.bot_id ? h("a", { href: `#/bots/${seg(k.bot_id)}` }, k.bot_id) : h("span", { class: "muted" }, "whole account")),
    h("td", { "data-label": "Origins", class: "small" }, k.origins.length ? k.origins.join(", ") : h("span", { class: "muted" }, "—")),
    h("td", { "data-label": "Created" }, time(k.created_at)),
    h("td", { "data-label": "State" }, state),
    h("td", { "data-label": "" }, revoke));
}

/** What to do with a publishable key just made: the tag and the demo page. */
function widgetHelp(botId, key) {
  const base = location.origin;
  const tag = `<script src="${base}/widget.js" data-bot="${botId}" data-key="${key}" defer></script>`;
  const demo = `/widget/demo?bot=${encodeURIComponent(botId)}&key=${encodeURIComponent(key)}`;
  return h("div", { class: "stack" },
    h("p", {}, "Put the chat bubble on a page of a listed origin with this tag:"),
    h("pre", { class: "code" }, tag),
    h("p", {}, h("a", { href: demo, target: "_blank", rel: "noopener", class: "button small" }, "Open the widget demo page"),
      " ", h("span", { class: "small muted" }, `(works when ${base} is one of the key's origins)`)));
}

export async function keys(main) {
  const [list, bots] = await Promise.all([all("/v1/keys"), all("/v1/bots")]);
  main.append(pageHead("Keys", {
    sub: "Secret keys call the API (account-wide, or scoped to one bot). Publishable keys only chat with one bot, from the website origins listed on them — the key the chat widget puts in a page.",
  }));

  // New key.
  const name = h("input", { name: "name", type: "text", value: "website", autocomplete: "off", required: true });
  const kind = select("kind", [["publishable", "Publishable — chat widget on a website"], ["secret", "Secret — API access"]], "publishable");
  const bot = select("bot_id", [["", "— whole account (secret keys only) —"], ...bots.map((b) => [b.id, `${b.name} (${b.id})`])], bots.length ? bots[0].id : "");
  const origins = h("textarea", { name: "origins", rows: "3", spellcheck: "false" }, location.origin);
  const originsField = field("Website origins, one per line", origins, "Scheme and host, with the port if not the default: https://shop.example.com");
  const sync = () => { originsField.hidden = kind.value !== "publishable"; };
  kind.addEventListener("change", sync);
  sync();
  const result = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "panel stack", novalidate: true },
    h("h2", {}, "New key"),
    field("Name", name, "A label to recognise it by, e.g. the website or partner that uses it."),
    field("Kind", kind),
    field("Bot", bot, "Publishable keys are always for one bot."),
    originsField,
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Create key")),
    result);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    result.replaceChildren();
    const body = { name: name.value.trim(), kind: kind.value };
    if (bot.value) body.bot_id = bot.value;
    if (kind.value === "publishable") body.origins = origins.value.split(/\s+/).filter(Boolean);
    try {
      const k = await api("POST", "/v1/keys", { json: body });
      result.append(alert("ok",
        h("p", {}, h("strong", {}, `Key “${k.name}” created. `), "Copy it now: it is shown only this once."),
        h("pre", { class: "code", "data-new-key": "" }, k.key),
        k.kind === "publishable" ? widgetHelp(k.bot_id, k.key) : null));
      tableBody.replaceChildren(...(await all("/v1/keys")).map((x) => keyRow(x, reload)));
    } catch (err) { showError(form, err); }
  });

  const tableBody = h("tbody", {}, list.map((k) => keyRow(k, () => reload())));
  const reload = async () => { tableBody.replaceChildren(...(await all("/v1/keys")).map((x) => keyRow(x, reload))); };
  main.append(form, h("div", { class: "panel" },
    h("h2", {}, "Keys of this account"),
    h("div", { class: "table-wrap" }, h("table", { class: "responsive" },
      h("thead", {}, h("tr", {}, ["Name", "Kind", "Bot", "Origins", "Created", "State", ""].map((t) => h("th", { scope: "col" }, t)))),
      tableBody))));
}
