// Where a node goes next: one node, or a list of conditions (`next:` branches
// with a CEL `if`) ending in `else`. Each condition has a rule builder —
// variable, operator, value, joined by and/or — that writes CEL, and the
// CEL itself in a text field for what the builder cannot show.

import { h, field } from "./ui.js";

/** Operators the builder offers: [value, label]. */
const OPERATORS = [
  ["==", "is"], ["!=", "is not"], [">", ">"], [">=", "≥"], ["<", "<"], ["<=", "≤"],
  ["contains", "contains"], ["startsWith", "starts with"], ["endsWith", "ends with"], ["has", "is set"],
];
const METHODS = new Set(["contains", "startsWith", "endsWith"]);
const VAR = "[A-Za-z_][A-Za-z0-9_]*(?:\\.[A-Za-z_][A-Za-z0-9_-]*)*";

/** A value as typed → a CEL literal: numbers and true/false as they are, the rest quoted. */
export function literal(v) {
  const t = v.trim();
  if (/^-?\d+(\.\d+)?$/.test(t) || t === "true" || t === "false") return t;
  return JSON.stringify(v);
}

/** A CEL literal → the value as typed, or undefined when it is not a plain literal. */
function unliteral(t) {
  const s = t.trim();
  if (/^-?\d+(\.\d+)?$/.test(s) || s === "true" || s === "false") return s;
  if (/^"(?:[^"\\]|\\.)*"$/.test(s)) {
    try { return JSON.parse(s); } catch { return undefined; }
  }
  return undefined;
}

/** Rules → CEL. */
export function toCel(rules, join) {
  const parts = rules.map((r) => {
    if (r.op === "has") return `has(${r.variable})`;
    if (METHODS.has(r.op)) return `${r.variable}.${r.op}(${JSON.stringify(r.value)})`;
    return `${r.variable} ${r.op} ${literal(r.value)}`;
  });
  return parts.join(join === "or" ? " || " : " && ");
}

/**
 * CEL → `{rules, join}` when the builder can show it (clauses of one kind
 * joined by only `&&` or only `||`), else null.
 */
export function fromCel(cel) {
  const s = (cel || "").trim();
  if (!s) return { rules: [], join: "and" };
  const hasAnd = s.includes("&&");
  const hasOr = s.includes("||");
  if (hasAnd && hasOr) return null;
  const join = hasOr ? "or" : "and";
  const rules = [];
  for (const clause of s.split(hasOr ? "||" : "&&")) {
    const c = clause.trim();
    let m = new RegExp(`^has\\((${VAR})\\)$`).exec(c);
    if (m) { rules.push({ variable: m[1], op: "has", value: "" }); continue; }
    m = new RegExp(`^(${VAR})\\.(contains|startsWith|endsWith)\\((.*)\\)$`).exec(c);
    if (m) {
      const v = unliteral(m[3]);
      if (typeof v !== "string" || !m[3].trim().startsWith("\"")) return null;
      rules.push({ variable: m[1], op: m[2], value: v });
      continue;
    }
    m = new RegExp(`^(${VAR})\\s*(==|!=|>=|<=|>|<)\\s*(.+)$`).exec(c);
    if (m) {
      const v = unliteral(m[3]);
      if (v === undefined) return null;
      // A quoted number must stay quoted: the builder would write it bare.
      if (m[3].trim().startsWith("\"") && literal(v) !== m[3].trim()) return null;
      rules.push({ variable: m[1], op: m[2], value: v });
      continue;
    }
    return null;
  }
  return { rules, join };
}

/**
 * The editor of `node[key]`: a node picker, or conditions. `nodePairs()`
 * lists the nodes it may go to; `changed()` marks the document edited.
 */
export function conditionEditor(node, key, label, { nodePairs, changed }) {
  const box = h("div", { class: "stack conditions" });
  box.addEventListener("flowchange", () => changed());
  const nodeSelect = (value, aria, onPick, name = "next") => {
    const s = h("select", { name, "aria-label": aria }, nodePairs().map(([v, l]) => h("option", { value: v }, l)));
    if (value && ![...s.options].some((o) => o.value === value)) s.append(h("option", { value }, `${value} (unknown)`));
    s.value = value || "";
    s.addEventListener("change", () => onPick(s.value));
    return s;
  };

  const draw = (focus) => {
    const branching = Array.isArray(node[key]);
    const mode = h("select", { name: `${key}_mode` }, h("option", { value: "node" }, "Always the same node"), h("option", { value: "conditions" }, "Depends on conditions"));
    mode.value = branching ? "conditions" : "node";
    mode.addEventListener("change", () => {
      if (mode.value === "conditions") {
        const to = typeof node[key] === "string" ? node[key] : "";
        node[key] = [{ if: "", then: "" }, { else: to }];
      } else {
        const list = node[key] || [];
        const els = list.find((b) => b.else !== undefined);
        if (els && els.else) node[key] = els.else; else delete node[key];
      }
      changed();
      draw(mode);
    });
    const parts = [field(`${label}: how`, mode)];
    if (!branching) {
      const pick = nodeSelect(node[key], label, (v) => { if (v) node[key] = v; else delete node[key]; changed(); });
      parts.push(field(label, pick));
    } else {
      const list = node[key];
      list.forEach((b, i) => { if (b.else === undefined) parts.push(branchEditor(list, b, i, draw, nodeSelect, key)); });
      const add = h("button", { type: "button", class: "small", dataset: { action: "add-condition" } }, "Add condition");
      add.addEventListener("click", () => {
        const at = list.findIndex((b) => b.else !== undefined);
        list.splice(at < 0 ? list.length : at, 0, { if: "", then: "" });
        changed();
        draw();
      });
      let els = list.find((b) => b.else !== undefined);
      const elsIndex = list.indexOf(els);
      const elsPick = nodeSelect(els ? els.else : "", "Otherwise go to", (v) => {
        if (!els) { els = { else: v }; list.push(els); } else els.else = v;
        changed();
      }, "else");
      const f = field("Otherwise go to", elsPick);
      f.dataset.field = `${key}[${elsIndex < 0 ? list.length : elsIndex}]`;
      parts.push(h("div", {}, add), f);
    }
    box.replaceChildren(...parts);
    if (focus) (box.querySelector(`[name="${focus.name}"]`) || box.querySelector("select"))?.focus();
  };
  draw();
  return box;
}

function branchEditor(list, branch, i, redraw, nodeSelect, key) {
  const n = list.slice(0, i + 1).filter((b) => b.else === undefined).length;
  const parsed = fromCel(branch.if);
  const raw = h("input", { type: "text", name: "cel", autocomplete: "off", spellcheck: "false", class: "mono" });
  raw.value = branch.if || "";
  const rulesBox = h("div", { class: "stack rules" });
  let model = parsed || { rules: [], join: "and" };
  const note = h("p", { class: "small muted", hidden: !!parsed }, "The builder cannot show this condition; edit it as CEL below.");

  const writeFromRules = () => {
    branch.if = toCel(model.rules.filter((r) => r.variable), model.join);
    raw.value = branch.if;
  };
  const drawRules = () => {
    if (!note.hidden) { rulesBox.replaceChildren(); return; }
    const join = h("select", { name: "join", "aria-label": `Condition ${n}: join rules with` }, h("option", { value: "and" }, "all of (and)"), h("option", { value: "or" }, "any of (or)"));
    join.value = model.join;
    join.addEventListener("change", () => { model.join = join.value; writeFromRules(); changedHere(); });
    const rows = model.rules.map((r, j) => {
      const v = h("input", { type: "text", name: "variable", value: r.variable, autocomplete: "off", "aria-label": `Condition ${n}, rule ${j + 1}: variable (memory.KEY, user.KEY, contact.phone …)` });
      const op = h("select", { name: "operator", "aria-label": `Condition ${n}, rule ${j + 1}: operator` }, OPERATORS.map(([o, l]) => h("option", { value: o }, l)));
      op.value = r.op;
      const val = h("input", { type: "text", name: "value", value: String(r.value ?? ""), autocomplete: "off", "aria-label": `Condition ${n}, rule ${j + 1}: value`, hidden: r.op === "has" });
      v.addEventListener("input", () => { r.variable = v.value.trim(); writeFromRules(); changedHere(); });
      op.addEventListener("change", () => { r.op = op.value; val.hidden = r.op === "has"; writeFromRules(); changedHere(); });
      val.addEventListener("input", () => { r.value = val.value; writeFromRules(); changedHere(); });
      const del = h("button", { type: "button", class: "small danger", "aria-label": `Delete rule ${j + 1} of condition ${n}` }, "Delete");
      del.addEventListener("click", () => { model.rules.splice(j, 1); writeFromRules(); changedHere(); drawRules(); });
      return h("div", { class: "row rule" }, v, op, val, del);
    });
    const add = h("button", { type: "button", class: "small", dataset: { action: "add-rule" } }, "Add rule");
    add.addEventListener("click", () => {
      model.rules.push({ variable: "", op: "==", value: "" });
      drawRules();
      rulesBox.querySelector(".rule:last-of-type input[name=variable]")?.focus();
    });
    rulesBox.replaceChildren(...(model.rules.length > 1 ? [join] : []), ...rows, h("div", {}, add));
  };
  let changedHere = () => {};
  raw.addEventListener("input", () => {
    branch.if = raw.value;
    changedHere();
    const p = fromCel(raw.value);
    note.hidden = !!p;
    if (p) { model = p; drawRulesFresh(); } else rulesBox.replaceChildren();
  });
  const drawRulesFresh = () => { note.hidden = true; drawRules(); };

  const then = nodeSelect(branch.then, `Condition ${n}: then go to`, (v) => { branch.then = v; changedHere(); }, "then");
  const move = (d) => {
    const j = i + d;
    if (j < 0 || j >= list.length || list[j].else !== undefined) return;
    [list[i], list[j]] = [list[j], list[i]];
    changedHere();
    redraw();
  };
  const up = h("button", { type: "button", class: "small", "aria-label": `Move condition ${n} up` }, "↑");
  up.addEventListener("click", () => move(-1));
  const down = h("button", { type: "button", class: "small", "aria-label": `Move condition ${n} down` }, "↓");
  down.addEventListener("click", () => move(1));
  const del = h("button", { type: "button", class: "small danger", "aria-label": `Delete condition ${n}` }, "Delete");
  del.addEventListener("click", () => { list.splice(i, 1); changedHere(); redraw(); });
  const celField = field(`Condition ${n} as CEL`, raw, "e.g. memory.size >= 10 && user.plan == \"vip\"");
  celField.dataset.field = `next[${i}].if`;
  const box = h("fieldset", { class: "branch", dataset: { field: `next[${i}]` } }, h("legend", {}, `Condition ${n}`),
    note, rulesBox, celField, field(`Condition ${n}: then go to`, then), h("div", { class: "row" }, up, down, del));
  // `changed` reaches the branch through the list's owner; kept as a closure.
  changedHere = () => box.dispatchEvent(new CustomEvent("flowchange", { bubbles: true }));
  if (parsed) drawRules();
  return box;
}
