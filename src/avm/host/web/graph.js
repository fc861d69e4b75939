// The network picture (an SVG drawn here: machines inside their host's box, clients
// outside, channels as edges whose width is their traffic) and sparklines.

const NS = "http://www.w3.org/2000/svg";
const el = (tag, attrs = {}, text) => {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
};

export function sparkline(svg, values) {
  const w = 120, hgt = 24, n = values.length;
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => `${n < 2 ? w : (i * w) / (n - 1)},${hgt - 1 - (v / max) * (hgt - 3)}`).join(" ");
  svg.replaceChildren(el("polyline", { points: pts }));
  svg.setAttribute("data-max", String(max));
}

// Traffic per channel, smoothed: update(edges, seconds) with a counters event's edges.
export class Traffic {
  constructor(halfLife = 5) { this.edges = new Map(); this.halfLife = halfLife; }
  update(edges, seconds) {
    const keep = Math.pow(0.5, seconds / this.halfLife);
    for (const e of this.edges.values()) { e.rate *= keep; e.frate *= keep; }
    for (const { from, to, batches, failures } of edges) {
      const k = from + "\u0000" + to;
      const e = this.edges.get(k) || { from, to, rate: 0, frate: 0, total: 0 };
      e.rate += (1 - keep) * (batches / seconds);
      e.frate += (1 - keep) * (failures / seconds);
      e.total += batches;
      this.edges.set(k, e);
    }
    for (const [k, e] of this.edges) if (e.rate < 0.005 && e.frate < 0.005) this.edges.delete(k);
  }
}

// Draw machines (Map name -> {status}) and the traffic's edges into `svg`, busiest
// `limit` nodes only. `onPick(name)` is called when a machine is clicked.
export function drawNetwork(svg, machines, traffic, { host = "host", onPick = null, limit = 60 } = {}) {
  const W = 1000, H = 640;
  const weight = new Map();
  for (const e of traffic.edges.values()) {
    weight.set(e.from, (weight.get(e.from) || 0) + e.rate);
    weight.set(e.to, (weight.get(e.to) || 0) + e.rate);
  }
  for (const name of machines.keys()) if (!weight.has(name)) weight.set(name, 0);
  const names = [...weight.keys()].sort((a, b) => weight.get(b) - weight.get(a) || (a < b ? -1 : 1)).slice(0, limit);
  // a machine the page has not listed is still a machine; senders outside are "client:x"
  const isMachine = (n) => machines.has(n) || !n.includes(":");
  const inside = names.filter(isMachine).sort();
  const outside = names.filter((n) => !isMachine(n)).sort();
  const pos = new Map();
  const box = { x: 220, y: 30, w: W - 250, h: H - 60 };
  const cx = box.x + box.w / 2, cy = box.y + box.h / 2;
  const r = Math.min(box.w, box.h) / 2 - 60;
  inside.forEach((n, i) => {
    const a = (2 * Math.PI * i) / Math.max(1, inside.length) - Math.PI / 2;
    pos.set(n, [cx + r * Math.cos(a), cy + r * Math.sin(a)]);
  });
  outside.forEach((n, i) => pos.set(n, [100, 60 + (i + 0.5) * ((H - 120) / Math.max(1, outside.length))]));

  svg.replaceChildren();
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "9", markerHeight: "9", markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#64748b" }));
  defs.append(marker);
  svg.append(defs);
  svg.append(el("rect", { class: "hostbox", x: box.x, y: box.y, width: box.w, height: box.h, rx: 14 }));
  svg.append(el("text", { class: "hostlabel", x: box.x + 12, y: box.y + 20 }, `host ${host}`));
  const size = (n) => 10 + Math.min(18, 4 * Math.log10(1 + (weight.get(n) || 0)) * 2);
  for (const e of traffic.edges.values()) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const width = Math.min(14, 1 + 2.5 * Math.log10(1 + 10 * e.rate));
    const g = el("path", {
      class: "edge" + (e.frate > 0.01 ? " failing" : ""),
      "stroke-width": width.toFixed(2), "marker-end": "url(#arrow)",
      "data-from": e.from, "data-to": e.to, d: curve(a, b, size(e.to) + 3),
    });
    g.append(el("title", {}, `${e.from} \u2192 ${e.to}: ${e.rate.toFixed(1)}/s` + (e.frate > 0.01 ? `, failing ${e.frate.toFixed(2)}/s` : "")));
    svg.append(g);
  }
  for (const n of names) {
    const [x, y] = pos.get(n);
    const m = machines.get(n) || (isMachine(n) ? { status: "" } : null);
    const g = el("g", { class: "node " + (m ? m.status || "" : "client"), "data-name": n, transform: `translate(${x.toFixed(1)},${y.toFixed(1)})` });
    g.append(el("circle", { r: size(n).toFixed(1) }));
    g.append(el("text", { x: size(n) + 4, y: 4 }, n));
    g.append(el("title", {}, `${n}: ${(weight.get(n) || 0).toFixed(1)} batches/s in and out`));
    if (m && onPick) g.addEventListener("click", () => onPick(n));
    svg.append(g);
  }
  return names.length;
}

// A slightly bent path from a to b that stops `gap` short of b (the arrow head).
function curve([x1, y1], [x2, y2], gap) {
  if (x1 === x2 && y1 === y2) return `M ${x1} ${y1 - 10} a 14 14 0 1 1 1 0`;
  const dx = x2 - x1, dy = y2 - y1, len = Math.hypot(dx, dy);
  const mx = (x1 + x2) / 2 - dy * 0.12, my = (y1 + y2) / 2 + dx * 0.12;
  const ex = x2 - (dx / len) * gap, ey = y2 - (dy / len) * gap;
  return `M ${x1.toFixed(1)} ${y1.toFixed(1)} Q ${mx.toFixed(1)} ${my.toFixed(1)} ${ex.toFixed(1)} ${ey.toFixed(1)}`;
}
