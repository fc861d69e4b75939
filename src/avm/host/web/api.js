// The host's HTTP API, as the page uses it: bearer token from sessionStorage, JSON in and
// out, and the live events (Server-Sent Events) read with fetch, since an EventSource
// cannot send the Authorization header.

const KEY = "avm.token";

export function token() { return sessionStorage.getItem(KEY) || ""; }
export function setToken(t) { sessionStorage.setItem(KEY, t.trim()); }

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && typeof body === "object"
      ? `${body.error || status}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`
      : `${status} ${body || ""}`;
    super(detail);
    this.status = status;
    this.body = body;
  }
}

export async function api(path, { method = "GET", body } = {}) {
  const headers = { Authorization: "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

export const post = (path, body = {}) => api(path, { method: "POST", body });
export const q = encodeURIComponent;

// Read /events until the stream ends or `signal` aborts; calls onEvent(kind, data).
export async function readEvents(onEvent, signal) {
  const r = await fetch("/events", { headers: { Authorization: "Bearer " + token() }, signal });
  if (!r.ok) {
    let body = null;
    try { body = await r.json(); } catch { /* not JSON */ }
    throw new ApiError(r.status, body);
  }
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let kind = "message", data = "";
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) kind = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(kind, JSON.parse(data));
    }
  }
}
