// A machine's state as a browsable tree. Values come in the API's JSON form
// (docs/host.md): tuples as arrays, Maps with text keys as objects, others as
// {"$map": [[k, v], ...]}, {"$bytes": hex}, {"$record": name, "fields": {...}},
// {"$linear": x}, and capabilities opaquely as {"$cap": name} (never a context).
// Containers show PAGE children at a time; paths are written as avm state paths
// (docs/dictionary.md): name.key, [2], ["a b"].
//
// A large state is not sent whole: renderLazyTree draws the nodes of the host's tree
// route (GET /machines/{name}/state/tree: a node's kind, size, and its value when it is
// a leaf or small) and asks for a large container's children, a page at a time, only
// when it is opened.

export const PAGE = 200;

const h = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const IDENT = /^[A-Za-z_][A-Za-z0-9_-]*$/;

// The children of a value: [{label, part, value}] (part: a path step), or null for a leaf.
export function children(v) {
  if (Array.isArray(v)) return v.map((x, i) => ({ label: `[${i}]`, part: `[${i}]`, value: x }));
  if (!isObj(v)) return null;
  if ("$cap" in v || "$bytes" in v) return null;
  if ("$linear" in v) return [{ label: "linear", part: null, value: v.$linear }];
  if ("$record" in v) return Object.entries(v.fields || {}).map(([k, x]) => ({ label: k, part: step(k), value: x }));
  if ("$map" in v) return v.$map.map(([k, x]) => ({ label: literal(k), part: literalKey(k), value: x }));
  return Object.entries(v).map(([k, x]) => ({ label: k, part: step(k), value: x }));
}

const step = (k) => (IDENT.test(k) ? `.${k}` : `[${JSON.stringify(k)}]`);
const literalKey = (k) => { const l = literal(k); return l === null ? null : `[${l}]`; };

export function joinPath(parts) {
  if (parts.some((p) => p === null)) return null;
  const s = parts.join("");
  return s.startsWith(".") ? s.slice(1) : s || "$";
}

// A JSON-form value written as a Python literal (what the API reads), or null when it
// holds a capability (opaque: it cannot be written back).
export function literal(v) {
  if (v === null) return "None";
  if (v === true) return "True";
  if (v === false) return "False";
  if (typeof v === "number") return String(v);
  if (typeof v === "string") return JSON.stringify(v);
  if (Array.isArray(v)) {
    const xs = v.map(literal);
    if (xs.includes(null)) return null;
    return xs.length === 1 ? `(${xs[0]},)` : `(${xs.join(", ")})`;
  }
  if ("$cap" in v) return null;
  if ("$bytes" in v) return 'b"' + (v.$bytes.match(/../g) || []).map((b) => "\\x" + b).join("") + '"';
  if ("$linear" in v) return null;
  if ("$record" in v) {
    const fs = Object.values(v.fields || {}).map(literal);
    return fs.includes(null) ? null : `${v.$record}(${fs.join(", ")})`;
  }
  if ("$map" in v) {
    const es = v.$map.map(([k, x]) => [literal(k), literal(x)]);
    if (es.some(([a, b]) => a === null || b === null)) return null;
    return `{${es.map(([a, b]) => `${a}: ${b}`).join(", ")}}`;
  }
  const es = Object.entries(v).map(([k, x]) => [JSON.stringify(k), literal(x)]);
  if (es.some(([, b]) => b === null)) return null;
  return `{${es.map(([a, b]) => `${a}: ${b}`).join(", ")}}`;
}

function summary(v) {
  if (Array.isArray(v)) return h("span", "kind", `tuple (${v.length})`);
  if ("$record" in v) return h("span", "kind", `${v.$record}`);
  if ("$map" in v) return h("span", "kind", `Map (${v.$map.length})`);
  if ("$linear" in v) return h("span", "lin", "Linear");
  return h("span", "kind", `Map (${Object.keys(v).length})`);
}

function leaf(v) {
  if (v === null || v === true || v === false) return h("span", "v-const", literal(v));
  if (typeof v === "number") return h("span", "v-num", String(v));
  if (typeof v === "string") return h("span", "v-str", JSON.stringify(v));
  if ("$cap" in v) {
    const e = h("span", "cap", `cap \u2192 ${v.$cap ?? "?"}`);
    e.title = "a capability: shown opaque, never its context";
    return e;
  }
  if ("$bytes" in v) return h("span", "v-str", `b'${v.$bytes.length > 64 ? v.$bytes.slice(0, 64) + "\u2026" : v.$bytes}' (hex)`);
  return h("span", "", JSON.stringify(v));
}

// Render `value` into `root`. `onEdit(path, oldLiteral)` (or null: not editable) is
// called from a node's edit button; `open` is a Set of paths left expanded.
export function renderTree(root, value, { onEdit = null, open = new Set(["$"]) } = {}) {
  root.replaceChildren();
  const ul = h("ul");
  ul.style.paddingLeft = "0";
  ul.append(node("state", value, [], onEdit, open));
  root.append(ul);
}

// Render the tree route's answer for the whole state (`top`) into `root`; `load(path,
// offset)` fetches a page of a large container's children (the same route).
export function renderLazyTree(root, top, { onEdit = null, open = new Set(["$"]), load }) {
  root.replaceChildren();
  const ul = h("ul");
  ul.style.paddingLeft = "0";
  ul.append(top.lazy ? lazyNode("state", top, onEdit, open, load, top) : node("state", top.value, [], onEdit, open));
  root.append(ul);
}

// The path parts of a path the host wrote ("$", "members", "log[0]", "['a b']").
const partsOf = (path) => (path === "$" ? [] : [/^[[.]/.test(path) ? path : "." + path]);

function lazySummary(n) {
  if (n.kind === "map") return h("span", "kind", `Map (${n.size})`);
  if (n.kind === "tuple") return h("span", "kind", `tuple (${n.size})`);
  return h("span", "kind", `${n.kind} (${n.size})`);
}

function lazyNode(label, n, onEdit, open, load, first = null) {
  const li = h("li");
  li.className = "lazy";
  const row = h("span", "row");
  li.append(row);
  li.dataset.path = n.path;
  const toggle = h("span", "toggle", "\u25b8");
  row.append(toggle, h("span", "key", label), document.createTextNode(": "), lazySummary(n));
  let sub = null;
  const show = (page) => {
    for (const c of page.children) {
      sub.append(c.lazy ? lazyNode(c.label, c, onEdit, open, load) : node(c.label, c.value, partsOf(c.path), onEdit, open));
    }
    if (page.next !== null && page.next !== undefined) {
      const m = h("li");
      const left = n.size - page.next;
      const b = h("button", "small more", `show ${Math.min(PAGE, left)} more (${left} left)`);
      b.type = "button";
      b.addEventListener("click", async () => {
        b.disabled = true;
        try { const p = await load(n.path, page.next); m.remove(); show(p); } catch (e) { b.disabled = false; b.title = String(e.message || e); }
      });
      m.append(b);
      sub.append(m);
    }
  };
  const expand = async () => {
    toggle.textContent = "\u25be";
    sub = h("ul");
    li.append(sub);
    open.add(n.path);
    const mine = sub;
    try {
      const page = first && first.offset === 0 ? first : await load(n.path, 0);
      if (sub === mine) show(page);
    } catch (e) { if (sub === mine) sub.append(h("li", "error", String(e.message || e))); }
  };
  toggle.addEventListener("click", () => {
    if (sub) { sub.remove(); sub = null; toggle.textContent = "\u25b8"; open.delete(n.path); }
    else expand();
  });
  if (open.has(n.path)) expand();
  return li;
}

function node(label, value, parts, onEdit, open) {
  const li = h("li");
  const row = h("span", "row");
  li.append(row);
  const path = joinPath(parts);
  li.dataset.path = path ?? "";
  const kids = children(value);
  const toggle = h("span", "toggle", kids ? "\u25b8" : "");
  row.append(toggle, h("span", "key", label), document.createTextNode(": "));
  row.append(kids ? summary(value) : leaf(value));
  const lit = literal(value);
  if (onEdit && path !== null && lit !== null) {
    const b = h("button", "edit small", "edit");
    b.type = "button";
    b.title = `set ${path}`;
    b.addEventListener("click", () => onEdit(path, lit, li));
    row.append(b);
  }
  if (kids) {
    let sub = null;
    const expand = () => {
      toggle.textContent = "\u25be";
      sub = h("ul");
      li.append(sub);
      let shown = 0;
      const more = () => {
        const end = Math.min(kids.length, shown + PAGE);
        for (; shown < end; shown++) {
          const k = kids[shown];
          sub.append(node(k.label, k.value, k.part === null ? [...parts] : [...parts, k.part], onEdit, open));
        }
        if (shown < kids.length) {
          const m = h("li");
          const b = h("button", "small more", `show ${Math.min(PAGE, kids.length - shown)} more (${kids.length - shown} left)`);
          b.type = "button";
          b.addEventListener("click", () => { m.remove(); more(); });
          m.append(b);
          sub.append(m);
        }
      };
      more();
      if (path !== null) open.add(path);
    };
    toggle.addEventListener("click", () => {
      if (sub) { sub.remove(); sub = null; toggle.textContent = "\u25b8"; if (path !== null) open.delete(path); }
      else expand();
    });
    if (path !== null && open.has(path)) expand();
  }
  return li;
}
