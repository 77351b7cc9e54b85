// The "New bot" wizard (`#/bots/new/wizard`): three steps — start from an
// example or blank, name it and pick its type, create — ending on the bot's
// page with its chat preview, ready to talk to.

import { api, seg } from "./api.js";
import { h, field, alert, toast, pageHead, showError, clearErrors, select } from "./ui.js";

const TYPES = [
  ["data_collection", "Data collection"], ["quote_generation", "Quote generation"],
  ["appointment", "Appointments"], ["support", "Support"],
];

/** A blank bot's first flow: a welcome message and an end, so it can chat at once. */
const BLANK = {
  start: "welcome",
  nodes: {
    welcome: { label: "Welcome Message", message: "Hi! This bot is new: build its interactions next.", next: "done" },
    done: { end: true },
  },
};

/** The value of a top-level `key: value` line of a bot file, or "". */
function topLevel(yaml, key) {
  const m = new RegExp(`^${key}:\\s*(.+)$`, "m").exec(yaml);
  return m ? m[1].trim().replace(/^["']|["']$/g, "") : "";
}

/** A bot file with its top-level `id` and `name` replaced (JSON-quoted, valid YAML). */
function renamed(yaml, id, name) {
  return yaml
    .replace(/^id:.*$/m, `id: ${JSON.stringify(id)}`)
    .replace(/^name:.*$/m, `name: ${JSON.stringify(name)}`);
}

export async function newBotWizard(main) {
  const examples = await api("GET", "/console/examples.json");
  main.append(pageHead("New bot, step by step", { crumbs: [h("a", { href: "#/bots" }, "Bots"), " / ", h("a", { href: "#/bots/new" }, "New bot")] }));
  const state = { from: "", name: "", id: "", type: "data_collection" };
  const box = h("div", { class: "panel narrow stack", id: "wizard" });
  main.append(box);

  const step = (n, title, ...content) => {
    box.replaceChildren(h("p", { class: "small muted", "aria-live": "polite" }, `Step ${n} of 3`), h("h2", { tabindex: "-1" }, title), ...content);
    box.querySelector("h2").focus();
  };

  const first = () => {
    const choices = [["", "Blank", "A welcome message and an end; you build the rest."],
      ...examples.map((ex) => [ex.name, ex.title, ex.summary])];
    const radios = choices.map(([v, title, summary]) => {
      const r = h("input", { type: "radio", name: "from", value: v, id: `from-${v || "blank"}`, checked: v === state.from });
      return h("label", { class: "inline wizard-choice", for: r.id }, r, h("span", {}, h("strong", {}, title), h("br"), h("span", { class: "small muted" }, summary)));
    });
    const form = h("form", { class: "stack" }, h("fieldset", {}, h("legend", {}, "Start from"), ...radios),
      h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Next")));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      state.from = form.querySelector("input[name=from]:checked")?.value || "";
      const ex = examples.find((x) => x.name === state.from);
      if (ex) {
        state.name = state.name || topLevel(ex.yaml, "name");
        state.type = topLevel(ex.yaml, "type") || state.type;
      }
      second();
    });
    step(1, "Start from an example, or blank", form);
  };

  const second = () => {
    const name = h("input", { type: "text", name: "name", value: state.name, autocomplete: "off", required: true });
    const id = h("input", { type: "text", name: "id", value: state.id, autocomplete: "off", pattern: "[A-Za-z0-9_-]+" });
    const type = select("type", TYPES, state.type);
    const back = h("button", { type: "button" }, "Back");
    back.addEventListener("click", () => { state.name = name.value; state.id = id.value; state.type = type.value; first(); });
    const form = h("form", { class: "stack", novalidate: true },
      field("Name", name, "Shown to you in the console."),
      field("Id (optional)", id, "Letters, digits, - and _; used in URLs. Generated when empty (from the example, its own)."),
      field("Type", type),
      h("div", { class: "row" }, back, h("button", { type: "submit", class: "primary" }, "Create and chat")));
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      clearErrors(form);
      state.name = name.value.trim();
      state.id = id.value.trim();
      state.type = type.value;
      if (!state.name) { showError(form, new Error("Give the bot a name."), form.lastChild); name.focus(); return; }
      const submit = form.querySelector("button[type=submit]");
      submit.disabled = true;
      try {
        const bot = await create();
        toast(`Created bot ${bot}`);
        location.hash = `#/bots/${seg(bot)}`;
      } catch (err) { showError(form, err, form.lastChild); } finally { submit.disabled = false; }
    });
    step(2, "Name it and pick its type", form);
    name.focus();
  };

  /** Creates the bot; answers its id. */
  async function create() {
    const ex = examples.find((x) => x.name === state.from);
    if (ex) {
      const id = state.id || topLevel(ex.yaml, "id");
      const r = await api("POST", "/v1/bots/import", { text: renamed(ex.yaml, id, state.name), contentType: "application/yaml" });
      if (topLevel(ex.yaml, "type") !== state.type) await api("PATCH", `/v1/bots/${seg(r.bot_id)}`, { json: { type: state.type } });
      return r.bot_id;
    }
    const body = { name: state.name, type: state.type };
    if (state.id) body.id = state.id;
    const b = await api("POST", "/v1/bots", { json: body });
    await api("PUT", `/v1/bots/${seg(b.id)}/flow`, { json: BLANK, headers: { "If-Match": "\"0\"" } });
    return b.id;
  }

  box.append(alert("info", "Loading…"));
  first();
}
