// The host's web page: machines, a machine's state and controls, batches flowing live,
// the network, the dictionary. Everything comes from the host's own API (same origin);
// nothing is fetched from anywhere else.

import { api, post, q, readEvents, setToken, token, ApiError } from "./api.js";
import { renderLazyTree, PAGE } from "./tree.js";
import { editor, renderDiff, escapeHtml } from "./code.js";
import { Traffic, drawNetwork, sparkline } from "./graph.js";

const $ = (id) => document.getElementById(id);
const LOG_MAX = 300;
const SERIES = 60;

const S = {
  view: "machines",
  features: { peek: false, step: false, stateEdit: null, logs: false, audit: false },
  machines: new Map(),      // name -> row of GET /machines (and status from events)
  list: null,               // {matched, total}: the machine table's page, as the host counted it
  rows: [],                 // that page's rows, in the host's order
  lastCounts: new Map(),    // name -> [batches, time] for the /s column
  sort: { key: "name", dir: 1 },
  page: 0,
  selected: null,
  binding: null,
  stateOpen: new Set(["$"]),
  host: "",
  series: { batches: [], failures: [] },
  traffic: new Traffic(),
  pending: [],              // live items not yet drawn
  total: 0,                 // machines on the host (from the live events)
  fetched: null,
  live: false,
  dict: { branch: "main", word: null, head: null, picked: [] },
};

// ---------------------------------------------------------------------------------
// notices, the token
// ---------------------------------------------------------------------------------

function notice(text, info = false) {
  const n = $("notice");
  n.textContent = text;
  n.className = info ? "info" : "";
  n.hidden = !text;
}

function explain(e) {
  if (e instanceof ApiError && e.status === 401) { askToken("That token was refused: " + e.message); }
  if (e instanceof ApiError && e.status === 403) return "read-only token: " + e.message;
  return e.message || String(e);
}

function askToken(why = "") {
  $("token-error").textContent = why;
  $("token-input").value = "";
  if (!$("token-dialog").open) $("token-dialog").showModal();
  $("token-input").focus();
}

$("token-form").addEventListener("submit", (ev) => {
  const t = $("token-input").value.trim();
  if (!t) { ev.preventDefault(); return; }
  setToken(t);
  start();
});
$("token-button").addEventListener("click", () => askToken());

// ---------------------------------------------------------------------------------
// views
// ---------------------------------------------------------------------------------

function route() {
  const [view, ...rest] = location.hash.replace(/^#/, "").split("/");
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  S.view = ["machines", "machine", "batches", "network", "dictionary"].includes(view) ? view : "machines";
  for (const s of document.querySelectorAll(".view")) s.classList.toggle("active", s.id === "view-" + S.view);
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === S.view);
  if (!token()) return;
  if (S.view === "machines") refreshMachines();
  if (S.view === "machine") {
    if (arg && arg !== S.selected) selectMachine(arg);
    else if (S.selected) { $("tabs").querySelector('[data-view="machine"]').href = "#machine/" + q(S.selected); refreshMachine(); }
  }
  if (S.view === "network") drawNet();
  if (S.view === "dictionary") {
    refreshWords();
    if (arg && arg !== S.dict.word) openWord(arg);
  }
}
window.addEventListener("hashchange", route);

// ---------------------------------------------------------------------------------
// machines
// ---------------------------------------------------------------------------------

let machinesAt = 0;
let machinesAsked = 0;
// The host filters, sorts and pages the machine list (GET /machines?offset&limit&match
// &status&sort&desc): the page asks for the PER rows it shows, never for all of them.
const PER = 100;

async function refreshMachines(force = true) {
  const now = performance.now();
  if (!force && now - machinesAt < 1000) return;
  machinesAt = now;
  const f = $("machine-filter").value.trim();
  const st = $("machine-status").value;
  const { key, dir } = S.sort;
  const asked = ++machinesAsked;
  try {
    const r = await api(`/machines?offset=${S.page * PER}&limit=${PER}&match=${q(f)}&sort=${key}&desc=${dir < 0}` + (st ? `&status=${st}` : ""));
    if (asked !== machinesAsked) return; // a newer request was sent meanwhile
    const t = performance.now();
    const fresh = new Map();
    for (const m of r.machines) {
      const before = S.lastCounts.get(m.name);
      m.rate = before && t > before[1] ? Math.max(0, (m.batches - before[0]) / ((t - before[1]) / 1000)) : 0;
      S.lastCounts.set(m.name, [m.batches, t]);
      fresh.set(m.name, m);
    }
    const sel = S.selected && S.machines.get(S.selected);
    S.machines = fresh;
    if (sel && !fresh.has(S.selected)) S.machines.set(S.selected, sel);
    for (const name of [...S.lastCounts.keys()]) if (!fresh.has(name)) S.lastCounts.delete(name);
    S.list = { matched: r.matched, total: r.total };
    S.rows = r.machines;
    drawMachines();
  } catch (e) { notice(explain(e)); }
}

function drawMachines() {
  const matched = S.list ? S.list.matched : 0;
  const total = S.list ? S.list.total : S.total;
  const pages = Math.max(1, Math.ceil(matched / PER));
  const body = $("machine-table").tBodies[0];
  body.innerHTML = S.rows.map((m) => `<tr data-name="${escapeHtml(m.name)}" class="${m.failures ? "failing" : ""}">
    <td><a href="#machine/${q(m.name)}">${escapeHtml(m.name)}</a></td><td><code>${escapeHtml(m.behavior)}</code></td>
    <td><span class="badge ${m.status}">${m.status}</span></td><td class="num">${m.batches}</td>
    <td class="num">${m.rate ? m.rate.toFixed(1) : ""}</td><td class="num fails">${m.failures}</td><td class="num">${m.queued}</td></tr>`).join("");
  const from = matched ? S.page * PER + 1 : 0, to = Math.min(matched, S.page * PER + PER);
  $("machine-count").textContent = `${matched === total ? `${total} machines` : `${matched} of ${total} machines match`}; ${from}\u2013${to} shown`;
  $("machine-page").textContent = `page ${S.page + 1} of ${pages}`;
  $("machine-prev").disabled = S.page === 0;
  $("machine-next").disabled = S.page >= pages - 1;
}

let filterTimer = null;
function machinesAgain(delay = 0) {
  clearTimeout(filterTimer);
  filterTimer = setTimeout(() => refreshMachines(), delay);
}
$("machine-filter").addEventListener("input", () => { S.page = 0; machinesAgain(200); });
$("machine-status").addEventListener("change", () => { S.page = 0; machinesAgain(); });
$("machine-prev").addEventListener("click", () => { S.page = Math.max(0, S.page - 1); machinesAgain(); });
$("machine-next").addEventListener("click", () => { S.page++; machinesAgain(); });
for (const th of document.querySelectorAll("#machine-table th[data-sort]")) {
  th.addEventListener("click", () => {
    const k = th.dataset.sort;
    S.sort = { key: k, dir: S.sort.key === k ? -S.sort.dir : (["name", "behavior", "status"].includes(k) ? 1 : -1) };
    S.page = 0;
    machinesAgain();
  });
}

// ---------------------------------------------------------------------------------
// one machine
// ---------------------------------------------------------------------------------

function selectMachine(name) {
  S.selected = name;
  S.stateOpen = new Set(["$"]);
  $("machine-batches").replaceChildren();
  $("peek-panel").hidden = true;
  result("", true);
  $("tabs").querySelector('[data-view="machine"]').href = "#machine/" + q(name);
  refreshMachine();
}

async function refreshMachine() {
  const name = S.selected;
  $("machine-empty").hidden = !!name;
  $("machine-detail").hidden = !name;
  if (!name) return;
  try {
    const [m, b] = await Promise.all([api(`/machines/${q(name)}`), api(`/machines/${q(name)}/binding`)]);
    if (name !== S.selected) return;
    S.binding = b;
    S.machines.set(name, { ...(S.machines.get(name) || {}), ...m });
    $("m-name").textContent = name;
    $("m-status").textContent = m.status;
    $("m-status").className = "badge " + m.status;
    $("m-behavior").textContent = m.behavior;
    $("m-binding").innerHTML = b.bound
      ? `bound to word <a href="#dictionary/${q(b.word)}">${escapeHtml(b.word)}</a> on ${escapeHtml(b.branch)} (${b.follows ? "follows its head" : "pinned"})`
      : "";
    $("m-stats").textContent = `${m.batches} batches, ${m.failures} failures since the host started, ${m.queued} queued`;
    $("m-suspend").disabled = m.status !== "running";
    $("m-resume").disabled = m.status === "running";
    $("m-rollback").disabled = !(b.bound && b.previous);
    $("m-rollback").title = b.bound && b.previous ? `back to ${b.previous}` : "no earlier behavior";
    $("m-peek").hidden = !(S.features.peek && b.bound);
    $("m-step").hidden = !S.features.step;
    $("m-step").disabled = m.status !== "suspended";
    $("m-step").title = m.status !== "suspended" ? "suspend it first: a step runs one batch of a suspended machine"
      : "run exactly one of its queued batches";
    await Promise.all([refreshState(), refreshLogs()]);
  } catch (e) { notice(explain(e)); }
}

// The machine's failures and state edits as the store keeps them (when the host has
// those routes): what happened before the page was opened.
async function refreshLogs() {
  const name = S.selected;
  if (S.features.logs) {
    const { rows } = await api(`/batches/failures?machine=${q(name)}&limit=20`);
    if (name !== S.selected) return;
    $("machine-failures").innerHTML = rows.map((r) => `<li class="failure" data-seq="${r.seq}"><span class="t">${time(r.at)}</span>
      #${r.seq} from ${escapeHtml(String(Array.isArray(r.chan) ? r.chan[0] : r.chan))} <b>${escapeHtml(r.rule)}</b>
      <span class="reason">${escapeHtml(r.detail)}</span></li>`).join("") || '<li class="muted">none</li>';
  }
  if (S.features.audit) {
    const { rows } = await api(`/machines/${q(name)}/audit?limit=20`);
    if (name !== S.selected) return;
    $("machine-audit-title").hidden = $("machine-audit").hidden = false;
    $("machine-audit").innerHTML = rows.map((r) => `<li class="operator"><span class="t">${time(r.at)}</span>${escapeHtml(r.who)}:
      ${escapeHtml((r.changes || []).map((c) => `${c.path || "$"} ${JSON.stringify(c.before)} \u2192 ${JSON.stringify(c.after)}`).join(", ") || r.detail)}</li>`).join("") || '<li class="muted">none</li>';
  }
}

async function refreshState() {
  const name = S.selected;
  if (!name) return;
  try {
    const box = $("state-tree");
    const onEdit = S.features.stateEdit ? editField : null;
    // one level and one page at a time: a large container's children are asked for
    // when it is opened
    const load = (path, offset) => api(`/machines/${q(name)}/state/tree?path=${q(path)}&offset=${offset}&limit=${PAGE}`);
    const top = await load("$", 0);
    if (name !== S.selected) return;
    const keep = box.scrollTop;
    renderLazyTree(box, top, { onEdit, open: S.stateOpen, load });
    box.scrollTop = keep;
  } catch (e) { notice(explain(e)); }
}

function editField(path, old, li) {
  const row = li.querySelector(".row");
  const form = document.createElement("form");
  form.className = "toolbar";
  form.innerHTML = `<input class="edit-value" value="${escapeHtml(old)}"> <button type="submit" class="small">set</button>
    <button type="button" class="small cancel">cancel</button>`;
  row.after(form);
  const input = form.querySelector("input");
  input.focus();
  input.select();
  form.querySelector(".cancel").addEventListener("click", () => form.remove());
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await S.features.stateEdit(S.selected, path, input.value, path === "$" ? null : old);
      const c = (r.changes || []).map((x) => `${x.path || "$"}: ${JSON.stringify(x.before)} \u2192 ${JSON.stringify(x.after)}`);
      result(`set ${c.join(", ") || path} (audited, by ${r.who})`, true);
      form.remove();
      await Promise.all([refreshState(), refreshLogs()]);
    } catch (e) {
      result(e instanceof ApiError && e.status === 409 ? `${path} changed since you read it: refresh and edit again` : explain(e), false);
    }
  });
}

function result(text, ok) {
  const r = $("m-result");
  r.textContent = text;
  r.className = ok ? "ok" : "error";
}

async function control(action, body) {
  const name = S.selected;
  try {
    const r = await post(`/machines/${q(name)}/${action}`, body);
    result(`${action}: ${r.status || r.behavior || "done"}`, true);
    await refreshMachine();
    return r;
  } catch (e) { result(explain(e), false); return null; }
}

$("m-suspend").addEventListener("click", () => control("suspend"));
$("m-resume").addEventListener("click", () => control("resume"));
$("m-rollback").addEventListener("click", () => control("rollback"));
$("m-step").addEventListener("click", async () => {
  const name = S.selected;
  try {
    const r = await post(`/machines/${q(name)}/step`);
    result(`step: ran batch #${r.seq} from ${r.sender}, ` + (r.ok ? `${r.steps} msg, committed` : `failed: ${r.rule}: ${r.detail}`)
      + `; ${r.status}, ${r.queued} queued`, r.ok);
    if (name === S.selected) await refreshMachine();
  } catch (e) { result(explain(e), false); }
});
$("m-peek").addEventListener("click", async () => {
  const b = S.binding;
  if (!b || !b.bound) return;
  try {
    const head = await api(`/dictionary/words/${q(b.word)}?branch=${q(b.branch)}`);
    const r = await post(`/machines/${q(S.selected)}/peek`, { version: head.id });
    $("peek-panel").hidden = false;
    showPeek($("peek-out"), r);
  } catch (e) { result(explain(e), false); }
});
$("m-refresh").addEventListener("click", () => refreshState());

async function send(ask) {
  const content = $("m-content").value.trim();
  const context = $("m-context").value.trim() || "None";
  if (!content) return;
  try {
    if (ask) {
      const r = await post(`/machines/${q(S.selected)}/ask`, { content, context, client: "web" });
      result(`answer: ${r.text}`, true);
    } else {
      const r = await post(`/machines/${q(S.selected)}/send`, { content, context, client: "web" });
      result(`sent, seq ${r.seq}`, true);
    }
  } catch (e) { result(explain(e), false); }
}
$("m-send").addEventListener("submit", (ev) => { ev.preventDefault(); send(false); });
$("m-ask-button").addEventListener("click", () => send(true));

function showPeek(box, r) {
  const outcome = (o) => (o && typeof o === "object" ? (o.ok ? "ok" : `failed: ${o.failure || ""}`) : String(o ?? ""));
  const changes = (b) => {
    const c = b.changes || {};
    const list = [...(c.state || []).map((x) => `state ${x.path}: ${JSON.stringify(x.committed)} \u2192 ${JSON.stringify(x.peek)}`),
      ...(c.outputs || []).map((x) => `outputs ${x.path}: ${JSON.stringify(x.committed)} \u2192 ${JSON.stringify(x.peek)}`)];
    return list.length ? list.join("\n") + (c.cut ? "\n\u2026" : "") : (b.equal ? "equal" : "");
  };
  const rows = (r.batches || []).map((b) => `<tr class="${b.equal ? "" : "differs"}">
    <td>${b.seq}</td><td>${escapeHtml(String(b.sender ?? ""))}</td><td>${escapeHtml(b.behavior || "")}</td>
    <td>${escapeHtml(outcome(b.committed))} \u2192 ${escapeHtml(outcome(b.peek))}</td>
    <td style="white-space:pre-wrap">${escapeHtml(changes(b))}</td></tr>`).join("");
  box.innerHTML = `<p class="peek-summary">${escapeHtml(r.code || "")}: ${r.replayed} batches replayed, <b>${r.differ}</b> differ${r.note ? "; " + escapeHtml(r.note) : ""}; nothing was committed</p>
    <table class="grid peek"><thead><tr><th>seq</th><th>sender</th><th>ran</th><th>outcome (committed \u2192 peek)</th><th>differences</th></tr></thead><tbody>${rows}</tbody></table>`;
}

// ---------------------------------------------------------------------------------
// live events
// ---------------------------------------------------------------------------------

let abort = null;

async function listen() {
  if (abort) abort.abort();
  const mine = (abort = new AbortController());
  while (!mine.signal.aborted) {
    try {
      await readEvents(onEvent, mine.signal);
    } catch (e) {
      if (mine.signal.aborted) return;
      if (e instanceof ApiError && e.status === 401) { setLive(false); explain(e); return; }
    }
    setLive(false);
    await new Promise((r) => setTimeout(r, 2000)); // the host went away: try again
  }
}

function setLive(on) {
  S.live = on;
  const b = $("live-state");
  b.textContent = on ? "live" : "offline";
  b.className = "badge " + (on ? "live" : "offline");
}

function onEvent(kind, d) {
  if (kind === "hello") { setLive(true); S.host = d.host; S.total = d.machines; $("host-name").textContent = "host " + d.host; return; }
  if (kind === "counters") return onCounters(d);
  if (kind === "machine") {
    const m = d.machine && S.machines.get(d.machine);
    if (m) { m.status = d.status; if (d.behavior) m.behavior = d.behavior; }
    if (d.machine === S.selected && S.view === "machine") refreshMachine();
  }
  if (kind === "host" && !d.up) notice("the host stopped: " + d.error);
  S.pending.push([kind, d]);
  if (S.pending.length > LOG_MAX * 2) S.pending.splice(0, S.pending.length - LOG_MAX);
  if ((kind === "batch" || kind === "failure") && d.machine === S.selected && $("m-follow").checked) stateSoon();
  if ((kind === "failure" || kind === "operator") && d.machine === S.selected) logsSoon();
  drawSoon();
}

let stateTimer = null;
function stateSoon() {
  if (stateTimer || S.view !== "machine") return;
  stateTimer = setTimeout(() => { stateTimer = null; refreshState(); }, 300);
}

let logsTimer = null;
function logsSoon() {
  if (logsTimer || S.view !== "machine") return;
  logsTimer = setTimeout(() => { logsTimer = null; refreshLogs().catch(() => {}); }, 500);
}

let drawing = false;
function drawSoon() {
  if (drawing) return;
  drawing = true;
  requestAnimationFrame(() => { drawing = false; drawLog(); });
}

const time = (ms) => new Date(ms).toTimeString().slice(0, 8);

function item(kind, d) {
  const li = document.createElement("li");
  li.className = kind;
  li.dataset.machine = d.machine || "";
  li.dataset.sender = d.sender || "";
  if (kind === "batch" || kind === "failure") {
    li.dataset.seq = d.seq;
    li.dataset.behavior = d.behavior || "";
    li.innerHTML = `<span class="t">${time(d.at)}</span><span class="who">${escapeHtml(d.machine)}</span> \u2190 ${escapeHtml(d.sender)} #${d.seq}
      <span class="beh">${escapeHtml(d.behavior || "")}</span>` + (kind === "failure"
      ? ` <b>failed: ${escapeHtml(d.rule)}</b><span class="reason">${escapeHtml(d.detail)}</span>` : ` <span class="muted">${d.steps} msg${d.read_only ? ", read-only" : ""}</span>`);
  } else if (kind === "drop") {
    li.innerHTML = `<span class="t">${time(d.at)}</span>dropped to <span class="who">${escapeHtml(d.machine)}</span> from ${escapeHtml(d.sender)} #${d.seq}: ${escapeHtml(d.reason)}`;
  } else if (kind === "machine") {
    li.textContent = `${d.machine ?? d.address}: ${d.change} \u2192 ${d.change === "behavior" ? d.behavior : d.status}` + (d.was ? ` (was ${d.was})` : "");
  } else if (kind === "operator") {
    li.textContent = `operator ${d.act} ${d.machine ?? ""}: ${d.detail}`;
  } else if (kind === "dropped") {
    li.className = "note";
    li.textContent = `this page missed ${d.dropped} events (it read too slowly)`;
  } else if (kind === "unlisted") {
    li.className = "note";
    li.textContent = `${d.n} more batches ran than are listed (the host lists a few hundred per publication)`;
  } else {
    li.textContent = `${kind}: ${JSON.stringify(d)}`;
  }
  return li;
}

function drawLog() {
  const items = S.pending.splice(0);
  const paused = $("batch-pause").checked;
  const f = $("batch-filter").value.trim().toLowerCase();
  const failOnly = $("batch-failures").checked;
  const log = $("batch-log"), mine = $("machine-batches");
  const addTo = (list, nodes) => {
    if (!nodes.length) return;
    list.prepend(...nodes.reverse());
    while (list.children.length > LOG_MAX) list.lastChild.remove();
  };
  const all = [], sel = [];
  for (const [kind, d] of items) {
    if (!paused && (!failOnly || kind === "failure") &&
        (!f || (d.machine || "").toLowerCase().includes(f) || (d.sender || "").toLowerCase().includes(f))) all.push(item(kind, d));
    if (S.selected && d.machine === S.selected && kind !== "counters") sel.push(item(kind, d));
  }
  addTo(log, all);
  addTo(mine, sel);
}
for (const id of ["batch-filter", "batch-failures"]) {
  $(id).addEventListener("input", () => {
    const f = $("batch-filter").value.trim().toLowerCase(), failOnly = $("batch-failures").checked;
    for (const li of $("batch-log").children) {
      li.hidden = (failOnly && !li.classList.contains("failure")) ||
        (!!f && !li.dataset.machine.toLowerCase().includes(f) && !li.dataset.sender.toLowerCase().includes(f));
    }
  });
}

function onCounters(d) {
  const push = (arr, v) => { arr.push(v); if (arr.length > SERIES) arr.shift(); };
  push(S.series.batches, d.batches / d.seconds);
  push(S.series.failures, d.failures / d.seconds);
  $("rate").textContent = (d.batches / d.seconds).toFixed(0);
  $("frate").textContent = (d.failures / d.seconds).toFixed(d.failures ? 1 : 0);
  sparkline($("spark-batches"), S.series.batches);
  sparkline($("spark-failures"), S.series.failures);
  $("batch-note").textContent = `${d.machines} machines, ${d.queued} batches queued; ${d.totals.batches} batches and ${d.totals.failures} failures since the host started`;
  if (d.unlisted) { S.pending.push(["unlisted", { n: d.unlisted }]); drawSoon(); }
  S.total = d.machines;
  S.traffic.update(d.edges, d.seconds);
  if (S.view === "network") drawNet();
  if (S.view === "machines" && !document.hidden) refreshMachines(false);
}

function drawNet() {
  drawNetwork($("net-svg"), S.machines, S.traffic, {
    host: S.host || "h0", onPick: (n) => { location.hash = "#machine/" + q(n); },
  });
}

// ---------------------------------------------------------------------------------
// the dictionary
// ---------------------------------------------------------------------------------

const ed = editor($("dict-source"), $("dict-highlight"));

function dictResult(text, ok) {
  const r = $("dict-result");
  r.textContent = text;
  r.className = ok ? "ok" : "error";
}

async function refreshWords() {
  try {
    const { branches } = await api("/dictionary/branches");
    const sel = $("dict-branch");
    const names = branches.map((b) => (typeof b === "string" ? b : b.name));
    if (!names.includes(S.dict.branch)) names.unshift(S.dict.branch);
    sel.innerHTML = names.map((b) => `<option${b === S.dict.branch ? " selected" : ""}>${escapeHtml(b)}</option>`).join("");
    const { words } = await api(`/dictionary/words?branch=${q(S.dict.branch)}`);
    $("dict-words").innerHTML = words.sort((a, b) => (a.word < b.word ? -1 : 1)).map((w) =>
      `<li data-word="${escapeHtml(w.word)}" class="${w.word === S.dict.word ? "active" : ""}">${escapeHtml(w.word)}
       <span class="muted">v${w.id} ${escapeHtml(w.author)}</span></li>`).join("");
  } catch (e) { notice(explain(e)); }
}
$("dict-words").addEventListener("click", (ev) => {
  const li = ev.target.closest("li[data-word]");
  if (li) location.hash = "#dictionary/" + q(li.dataset.word);
});
$("dict-branch").addEventListener("change", () => { S.dict.branch = $("dict-branch").value; S.dict.word = null; refreshWords(); });
$("dict-new").addEventListener("click", () => {
  const w = prompt("the new word's name (letters, digits, _ . -)");
  if (!w) return;
  S.dict.word = w;
  S.dict.head = null;
  $("dict-title").textContent = `${w} (new)`;
  $("dict-editor-box").hidden = false;
  ed.set("import avm\n\nbehavior = avm.Behavior(\"" + w + "\")\n");
  $("dict-history").replaceChildren();
});

async function openWord(word, version = null) {
  S.dict.word = word;
  S.dict.picked = [];
  try {
    const head = await api(`/dictionary/words/${q(word)}?branch=${q(S.dict.branch)}`);
    S.dict.head = head;
    const shown = version === null ? head : await api(`/dictionary/words/${q(word)}?version=${version}`);
    $("dict-title").textContent = `${word} \u2014 version ${shown.id}` + (shown.id === head.id ? " (head)" : ` (head is ${head.id})`);
    $("dict-editor-box").hidden = false;
    ed.set(shown.source);
    dictResult("", true);
    const { versions } = await api(`/dictionary/words/${q(word)}/history?branch=${q(S.dict.branch)}`);
    $("dict-history").innerHTML = versions.map((v) => `<li data-version="${v.id}">
      <label><input type="checkbox" value="${v.id}"> v${v.id}</label> ${escapeHtml(v.author)}
      <span class="muted">${new Date(v.at * (v.at > 1e12 ? 1 : 1000)).toLocaleString()}</span> ${escapeHtml(v.message || "")}
      <button type="button" class="small open">open</button></li>`).join("");
    const d = await api(`/dictionary/words/${q(word)}/diff?branch=${q(S.dict.branch)}&b=${shown.id}`);
    $("dict-diff-title").textContent = d.a ? `v${d.a} \u2192 v${d.b}` : `new in v${d.b}`;
    renderDiff($("dict-diff"), d.diff);
    for (const li of $("dict-words").children) li.classList.toggle("active", li.dataset.word === word);
    const tag = `dict:${S.dict.branch}/${word}@`; // machines that run a version of this word
    const bound = S.features.peek ? (await api(`/machines?match=${q(tag)}&limit=100`)).machines.filter((m) => m.behavior.startsWith(tag)) : [];
    $("dict-peek").hidden = $("dict-peek-machine").hidden = !S.features.peek || !bound.length;
    $("dict-peek-machine").innerHTML = bound.map((m) => `<option>${escapeHtml(m.name)}</option>`).join("");
  } catch (e) { notice(explain(e)); }
}

$("dict-history").addEventListener("click", async (ev) => {
  const li = ev.target.closest("li[data-version]");
  if (!li) return;
  if (ev.target.classList.contains("open")) { openWord(S.dict.word, Number(li.dataset.version)); return; }
  if (ev.target.type !== "checkbox") return;
  const picked = [...$("dict-history").querySelectorAll("input:checked")].map((i) => Number(i.value));
  if (picked.length === 2) {
    const [b, a] = picked.sort((x, y) => y - x);
    const d = await api(`/dictionary/words/${q(S.dict.word)}/diff?branch=${q(S.dict.branch)}&a=${a}&b=${b}`);
    $("dict-diff-title").textContent = `v${a} \u2192 v${b}`;
    renderDiff($("dict-diff"), d.diff);
  }
});

$("dict-save").addEventListener("click", async () => {
  const word = S.dict.word;
  const body = { source: ed.get(), branch: S.dict.branch, author: "web", message: $("dict-message").value };
  if (S.dict.head) body.expect = S.dict.head.id; else body.new = true;
  try {
    const v = await post(`/dictionary/words/${q(word)}`, body);
    dictResult(`saved version ${v.id}; machines that follow ${word} run it from their next batch`, true);
    $("dict-message").value = "";
    await refreshWords();
    await openWord(word);
    dictResult(`saved version ${v.id}; machines that follow ${word} run it from their next batch`, true);
  } catch (e) {
    dictResult(e instanceof ApiError && e.status === 409
      ? `conflict: someone changed ${word} since you opened it (${e.message}); open it again and redo the change`
      : explain(e), false);
  }
});

$("dict-bind").addEventListener("click", async () => {
  const m = $("dict-bind-machine").value.trim();
  if (!m) return;
  try {
    const r = await post(`/machines/${q(m)}/bind`, { word: S.dict.word, branch: S.dict.branch });
    dictResult(`${m} runs ${r.behavior} from its next batch`, true);
  } catch (e) { dictResult(explain(e), false); }
});

$("dict-peek").addEventListener("click", async () => {
  const m = $("dict-peek-machine").value;
  try {
    const r = await post(`/machines/${q(m)}/peek`, { source: ed.get(), word: S.dict.word, branch: S.dict.branch });
    showPeek($("dict-peek-out"), r);
  } catch (e) { dictResult(explain(e), false); }
});

// ---------------------------------------------------------------------------------
// start
// ---------------------------------------------------------------------------------

// The routes the page uses beyond the basics ship with it (the same package): no need
// to read the OpenAPI document first (on a host of 100,000 machines, every request the
// page waits for before it shows anything counts).
function features() {
  S.features.peek = S.features.step = S.features.logs = S.features.audit = true;
  // an audited edit: the whole state at "$", else one path, expecting the value the
  // editor saw (a 409 says it changed meanwhile)
  S.features.stateEdit = (name, path, value, old) => post(`/machines/${q(name)}/state`, path === "$"
    ? { value, who: "web" }
    : { set: [{ path, value }], expect: old === null ? [] : [{ path, value: old }], who: "web" });
}

let started = false;

async function start() {
  if (!token()) { askToken(); return; }
  notice("");
  if (!started) {
    started = true;
    features();
    setInterval(() => { if (S.view === "machines" && !S.live) refreshMachines(false); }, 3000);
  }
  listen();  // the live stream and the view's own requests go out together
  route();
}

window.avmPage = S; // for the browser tests and the curious
start();
