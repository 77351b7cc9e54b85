// A map of a flow as SVG: one graph per flow (main, then each campaign),
// nodes in layers by their distance from the start, coloured by kind, arrows
// labelled with the keyword or condition that takes them, the start marked,
// unreachable nodes flagged. A node is a button: click it (or Enter) to edit.
//
// The layout is a plain layered one: breadth-first from the start (and the
// error handler and keywords, which also lead somewhere), nodes of a layer
// side by side in the order they are found, unreachable ones in a last row.

const NS = "http://www.w3.org/2000/svg";
const W = 168, H = 46, GX = 28, GY = 70;

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const cut = (t, n) => (t.length > n ? `${t.slice(0, n - 1)}…` : t);

/** Every arrow leaving `node`: [target, label, campaign?]. */
export function edgesOf(node) {
  const out = [];
  const next = (v, prefix = "") => {
    if (typeof v === "string") out.push([v, prefix]);
    else if (Array.isArray(v)) v.forEach((b) => {
      if (b.else !== undefined) out.push([b.else, "else"]);
      else if (b.then !== undefined) out.push([b.then, `if ${b.if || ""}`]);
    });
  };
  next(node.next);
  (node.options || []).forEach((o) => {
    const label = `${o.keyword ?? ""} ${o.label || ""}`.trim();
    if (o.campaign) out.push([`campaign:${o.campaign}`, label, true]);
    else if (o.next) out.push([o.next, label]);
  });
  if (node.on_error) out.push([node.on_error, "on error"]);
  if (node.on_timeout) out.push([node.on_timeout, "timeout"]);
  return out;
}

/** Layers from the roots; unreachable nodes in their own last layer. */
export function layout(graph, roots) {
  const nodes = graph.nodes || {};
  const depth = new Map();
  const queue = [];
  for (const r of roots) if (nodes[r] && !depth.has(r)) { depth.set(r, 0); queue.push(r); }
  while (queue.length) {
    const id = queue.shift();
    for (const [t] of edgesOf(nodes[id])) {
      if (nodes[t] && !depth.has(t)) { depth.set(t, depth.get(id) + 1); queue.push(t); }
    }
  }
  const layers = [];
  for (const [id, d] of depth) (layers[d] = layers[d] || []).push(id);
  const unreachable = Object.keys(nodes).filter((id) => !depth.has(id));
  return { layers, unreachable };
}

function graphSvg(name, graph, doc, onPick, kindOf) {
  const nodes = graph.nodes || {};
  const roots = [graph.start, graph.error];
  if (name === "main") for (const v of Object.values(doc.keywords || {})) roots.push(typeof v === "object" ? v.next : v);
  const { layers, unreachable } = layout(graph, roots.filter(Boolean));
  // Campaigns started from this graph appear as boxes in the row after their option.
  const rows = layers.map((l) => l.slice());
  if (unreachable.length) rows.push(unreachable.slice());
  const pos = new Map();
  const campaigns = new Set();
  rows.forEach((row, r) => row.forEach((id) => {
    for (const [t, , isCampaign] of edgesOf(nodes[id])) if (isCampaign && !campaigns.has(t)) campaigns.add(t);
  }));
  if (campaigns.size) rows.push([...campaigns]);
  // Rows wider than eight nodes wrap, so sixty nodes stay readable.
  const wrapped = [];
  for (const row of rows) for (let i = 0; i < row.length; i += 8) wrapped.push(row.slice(i, i + 8));
  const cols = Math.max(1, ...wrapped.map((r) => r.length));
  const width = cols * (W + GX) + GX;
  const height = wrapped.length * (H + GY) + GY / 2;
  wrapped.forEach((row, r) => {
    const off = (width - row.length * (W + GX) + GX) / 2;
    row.forEach((id, c) => pos.set(id, { x: off + c * (W + GX), y: GY / 2 + r * (H + GY) }));
  });

  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "group", "aria-label": `Map of ${name === "main" ? "the main flow" : `campaign ${name}`}`, class: "flowmap" });
  const defs = s("defs", {}, s("marker", { id: `arrow-${name}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#475569" })));
  svg.append(defs);
  const edgeLayer = s("g", { class: "edges" });
  const labelLayer = s("g", { class: "edge-labels" });
  const nodeLayer = s("g", { class: "nodes" });
  svg.append(edgeLayer, nodeLayer, labelLayer);

  for (const [id, node] of Object.entries(nodes)) {
    const a = pos.get(id);
    edgesOf(node).forEach(([t, label], k) => {
      const b = pos.get(t);
      if (!a || !b) return;
      const x1 = a.x + W / 2, y1 = a.y + H;
      const x2 = b.x + W / 2, y2 = b.y;
      let d;
      if (y2 > y1) d = `M${x1},${y1} C${x1},${y1 + GY / 2} ${x2},${y2 - GY / 2} ${x2},${y2}`;
      else {
        // Back or sideways: round the right side of both boxes.
        const bx = Math.max(a.x, b.x) + W + GX / 2 + k * 3;
        d = `M${a.x + W},${a.y + H / 2} C${bx},${a.y + H / 2} ${bx},${b.y + H / 2} ${b.x + W},${b.y + H / 2}`;
      }
      edgeLayer.append(s("path", { d, fill: "none", stroke: "#475569", "stroke-width": 1.4, "marker-end": `url(#arrow-${name})`, class: "edge", "data-from": id, "data-to": t }));
      if (label) {
        const mx = y2 > y1 ? (x1 + x2) / 2 : Math.max(a.x, b.x) + W + GX / 2;
        const my = y2 > y1 ? (y1 + y2) / 2 : (a.y + b.y + H) / 2;
        const tx = cut(label, 22);
        labelLayer.append(s("g", {},
          s("rect", { x: mx - tx.length * 3.1 - 3, y: my - 8, width: tx.length * 6.2 + 6, height: 15, rx: 3, fill: "#fff", "fill-opacity": 0.9 }),
          s("text", { x: mx, y: my + 3.5, "text-anchor": "middle", "font-size": 10.5, fill: "#1f2937", class: "edge-label" }, tx)));
      }
    });
  }

  const bad = new Set(unreachable);
  for (const [id, p] of pos) {
    const isCampaign = id.startsWith("campaign:");
    const node = nodes[id];
    const kind = isCampaign ? { label: "Campaign", colour: "#b45309" } : kindOf(node);
    const title = isCampaign ? id.slice(9) : node.label || id;
    const flags = [id === graph.start ? "start" : null, bad.has(id) ? "unreachable" : null].filter(Boolean);
    const g = s("g", {
      class: `map-node${bad.has(id) ? " unreachable" : ""}${id === graph.start ? " start" : ""}`,
      tabindex: isCampaign ? undefined : 0, role: isCampaign ? undefined : "button",
      "aria-label": `${kind.label} ${title}${flags.length ? ` (${flags.join(", ")})` : ""}${isCampaign ? "" : ": edit"}`,
      "data-node": id, transform: `translate(${p.x},${p.y})`,
    });
    g.append(s("rect", { width: W, height: H, rx: 8, fill: "#fff", stroke: kind.colour, "stroke-width": id === graph.start ? 3.5 : 2, "stroke-dasharray": bad.has(id) ? "5 4" : null }),
      s("rect", { width: 7, height: H, rx: 3, fill: kind.colour }),
      s("text", { x: 14, y: 19, "font-size": 12.5, "font-weight": 600, fill: "#111827" }, cut(title, 21)),
      s("text", { x: 14, y: 36, "font-size": 10.5, fill: bad.has(id) ? "#b91c1c" : "#4b5563" }, cut(`${kind.label}${flags.length ? ` · ${flags.join(" · ")}` : ""}`, 26)));
    if (id === graph.start) g.append(s("text", { x: W - 8, y: 15, "font-size": 13, "text-anchor": "end", fill: "#15803d" }, "▶"));
    if (!isCampaign) {
      g.addEventListener("click", () => onPick(name, id));
      g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onPick(name, id); } });
    }
    nodeLayer.append(g);
  }
  return { svg, unreachable };
}

/**
 * The map of a whole flow document: a figure per graph, with a legend.
 * `onPick(graph, node)` opens a node; `kindOf(node)` gives `{label, colour}`.
 */
export function flowMap(doc, onPick, kindOf) {
  const wrap = document.createElement("div");
  wrap.className = "flowmaps stack";
  const graphs = [["main", doc], ...Object.entries(doc.campaigns || {})];
  for (const [name, g] of graphs) {
    const { svg, unreachable } = graphSvg(name, g, doc, onPick, kindOf);
    const fig = document.createElement("figure");
    fig.className = "panel flowmap-fig";
    fig.dataset.graph = name;
    const cap = document.createElement("figcaption");
    cap.textContent = `${name === "main" ? "Main flow" : `Campaign ${name}`}: ${Object.keys(g.nodes || {}).length} nodes${unreachable.length ? `; unreachable: ${unreachable.join(", ")}` : ""}`;
    if (unreachable.length) cap.classList.add("bad-text");
    const scroller = document.createElement("div");
    scroller.className = "flowmap-scroll";
    scroller.append(svg);
    fig.append(cap, scroller);
    wrap.append(fig);
  }
  return wrap;
}
