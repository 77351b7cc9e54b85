// Audit page: the account's changes (who, what, when, through which
// request), newest first, filtered by action, resource or actor, with the
// summary of each change (secret values never appear in it).

import { api } from "./api.js";
import { h, field, button, time, pageHead, pretty, showError, clearErrors } from "./ui.js";

function actorCell(a) {
  if (a.kind === "cli") return h("span", {}, h("strong", {}, "command line"));
  return h("span", {}, h("strong", {}, a.name || "(unnamed key)"), h("br"), h("code", { class: "small muted" }, a.key_id));
}

function entryRow(e) {
  const resource = e.resource_id ? `${e.resource_type} ${e.resource_id}` : e.resource_type;
  return h("tr", { dataset: { audit: e.id } },
    h("td", { "data-label": "When" }, time(e.at)),
    h("td", { "data-label": "Who" }, actorCell(e.actor)),
    h("td", { "data-label": "Action" }, h("code", {}, e.action)),
    h("td", { "data-label": "Resource" }, resource),
    h("td", { "data-label": "Request", class: "small" }, e.request_id ? h("code", {}, e.request_id) : h("span", { class: "muted" }, "—")),
    h("td", { "data-label": "Change" }, h("details", {}, h("summary", {}, "Show"), h("pre", { class: "code" }, pretty(e.changes)))));
}

export async function audit(main) {
  main.append(pageHead("Audit log", {
    sub: "Every change made through the API or the command line: which key made it, when, with which request id, and what the resource looked like after it. Secret values are never recorded.",
  }));
  const action = h("input", { name: "action", type: "text", placeholder: "e.g. key.revoked", autocomplete: "off" });
  const resource = h("input", { name: "resource", type: "text", placeholder: "an id, or a type such as endpoint", autocomplete: "off" });
  const actor = h("input", { name: "actor", type: "text", placeholder: "key_… or cli", autocomplete: "off" });
  const form = h("form", { class: "panel row", novalidate: true },
    field("Action", action), field("Resource", resource), field("Actor", actor),
    h("div", { class: "row" }, h("button", { type: "submit", class: "primary" }, "Filter")));
  const tableBody = h("tbody", {});
  const empty = h("p", { class: "muted", hidden: true }, "No changes recorded yet.");
  let cursor = null;
  const more = button("Load more", () => load(false), "small");
  const query = () => {
    const q = new URLSearchParams({ limit: "50" });
    for (const [k, el] of [["action", action], ["resource", resource], ["actor", actor]]) {
      if (el.value.trim()) q.set(k, el.value.trim());
    }
    if (cursor) q.set("cursor", cursor);
    return q.toString();
  };
  async function load(fresh) {
    clearErrors(form);
    if (fresh) { cursor = null; tableBody.replaceChildren(); }
    try {
      const page = await api("GET", `/v1/audit?${query()}`);
      tableBody.append(...page.data.map(entryRow));
      cursor = page.next_cursor;
      more.style.display = cursor ? "" : "none";
      empty.hidden = tableBody.children.length > 0;
    } catch (err) { showError(form, err); }
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); load(true); });
  main.append(form, h("div", { class: "panel" },
    h("h2", {}, "Changes"),
    empty,
    h("div", { class: "table-wrap" }, h("table", { class: "responsive" },
      h("thead", {}, h("tr", {}, ["When", "Who", "Action", "Resource", "Request", "Change"].map((t) => h("th", { scope: "col" }, t)))),
      tableBody)),
    h("div", { class: "row" }, more)));
  await load(true);
}
