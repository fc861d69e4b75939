// A small Python highlighter (keywords, strings, comments, numbers, decorators, the names
// def and class introduce), an editor made of a textarea over the highlighted text, and
// unified diffs coloured by line.

const KEYWORDS = new Set(("False None True and as assert async await break class continue def del " +
  "elif else except finally for from global if import in is lambda nonlocal not or pass raise " +
  "return try while with yield match case").split(" "));

const TOKEN = new RegExp([
  String.raw`(#[^\n]*)`,                                                        // 1 comment
  String.raw`((?:[rRbBuUfF]{1,2})?(?:"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:\\.|[^"\\\n])*"?|'(?:\\.|[^'\\\n])*'?))`, // 2 string
  String.raw`(@[A-Za-z_][\w.]*)`,                                               // 3 decorator
  String.raw`(\b(?:0[xXoObB][\da-fA-F_]+|\d[\d_]*(?:\.\d*)?(?:[eE][+-]?\d+)?j?)\b)`, // 4 number
  String.raw`([A-Za-z_]\w*)`,                                                   // 5 name
].join("|"), "g");

export const escapeHtml = (s) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

export function highlight(src) {
  let out = "", last = 0, prev = "";
  for (const m of src.matchAll(TOKEN)) {
    out += escapeHtml(src.slice(last, m.index));
    last = m.index + m[0].length;
    const t = escapeHtml(m[0]);
    let cls = null;
    if (m[1] !== undefined) cls = "tok-com";
    else if (m[2] !== undefined) cls = "tok-str";
    else if (m[3] !== undefined) cls = "tok-dec";
    else if (m[4] !== undefined) cls = "tok-num";
    else if (KEYWORDS.has(m[0])) cls = "tok-kw";
    else if (prev === "def" || prev === "class") cls = "tok-def";
    out += cls ? `<span class="${cls}">${t}</span>` : t;
    if (m[5] !== undefined) prev = m[0]; else prev = "";
  }
  return out + escapeHtml(src.slice(last));
}

// Make `textarea` (over `pre`) an editor: typing re-highlights, Tab indents, scrolling
// moves both. Returns {get, set}.
export function editor(textarea, pre) {
  const paint = () => { pre.innerHTML = highlight(textarea.value) + "\n"; };
  textarea.addEventListener("input", paint);
  textarea.addEventListener("scroll", () => { pre.scrollTop = textarea.scrollTop; pre.scrollLeft = textarea.scrollLeft; });
  textarea.addEventListener("keydown", (e) => {
    if (e.key !== "Tab" || e.ctrlKey || e.altKey || e.metaKey) return;
    e.preventDefault();
    const { selectionStart: a, selectionEnd: b, value } = textarea;
    textarea.value = value.slice(0, a) + "    " + value.slice(b);
    textarea.selectionStart = textarea.selectionEnd = a + 4;
    paint();
  });
  return {
    get: () => textarea.value,
    set: (text) => { textarea.value = text; paint(); textarea.scrollTop = 0; },
  };
}

export function renderDiff(pre, text) {
  pre.innerHTML = text.split("\n").map((line) => {
    const t = escapeHtml(line);
    if (line.startsWith("+++") || line.startsWith("---")) return `<span class="hunk">${t}</span>`;
    if (line.startsWith("+")) return `<span class="add">${t}</span>`;
    if (line.startsWith("-")) return `<span class="del">${t}</span>`;
    if (line.startsWith("@@")) return `<span class="hunk">${t}</span>`;
    return t + "\n";
  }).join("") || "(no difference)";
}
