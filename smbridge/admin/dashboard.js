// The bridge's live dashboard: polls the admin JSON API, renders it, and acts through the
// same API (accept mode, drain, end a session, reload). No build step, no external assets,
// nothing built from HTML strings. The admin token (when the API asks for one) stays in
// this tab (sessionStorage) and goes in the Authorization header; never in a cookie.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "smbridge-admin-token";
const COLUMNS = ["sessionId", "userId", "userName", "clientVersion", "extension", "logonTime",
  "clientId", "station", "transport", "remote", "state", "queuedBytes", "sentBytes",
  "suppressedFrames"];
const NUMERIC = new Set(["queuedBytes", "sentBytes", "suppressedFrames"]);
const COLORS = { high: "#d9480f", medium: "#1971c2", low: "#2f9e44" };

const view = { sessions: [], sort: { key: "logonTime", dir: "asc" }, filter: "", polls: 0 };

function $(id) { return document.getElementById(id); }
function text(id, value) {
  const el = $(id);
  if (el) el.textContent = value === null || value === undefined ? "" : String(value);
}
function yesNo(value) { return value ? "yes" : "no"; }

// --- talking to the admin API ----------------------------------------------------------
async function request(path, method = "GET", body = undefined) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const init = { method, headers, cache: "no-store", credentials: "omit" };
  if (method !== "GET") {
    // JSON: the API takes a change without a token only as JSON, which no form can send.
    headers["Content-Type"] = "application/json";
    if (body !== undefined) init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token-form").hidden = false;
    throw new Error("the admin API needs its token: enter it above");
  }
  let answer;
  try { answer = await response.json(); } catch (e) { answer = { error: response.statusText }; }
  return { ok: response.ok, status: response.status, body: answer || {} };
}

async function api(path) {
  const r = await request(path);
  if (!r.ok && path !== "/healthz") throw new Error(r.body.error || "HTTP " + r.status);
  return r.body;
}

// --- rendering -------------------------------------------------------------------------
function renderStatus(s) {
  text("name", s.name); text("fqdn", s.fqdn); text("kind", s.kind);
  text("location", s.location || "no location"); text("version", s.version ? "v" + s.version : "");
  const accept = $("accept");
  accept.dataset.accepting = String(s.accepting);
  text("accept-state", s.accepting ? "accepting sessions" : "not accepting");
  text("accept-mode", s.acceptMode);
  text("accept-reason", s.acceptReason === s.acceptMode ? "" : " · " + s.acceptReason);
  const n = s.notifier || {};
  text("notifier-server", n.server); text("notifier-state", n.state);
  text("notifier-role", n.cic ? n.cic.role : "not known while the link is down");
  const load = n.load || {};
  const rtt = load.pingMs;
  text("notifier-rtt", rtt === null || rtt === undefined ? "not measured yet" : rtt + " ms");
  text("notifier-loaded", load.loaded ? "(loaded)" : "");
  text("notifier-switchovers", n.switchovers); text("notifier-error", n.lastError || "none");
  const linkError = $("notifier-error");  // why the link is down: red while there is a reason
  linkError.className = n.lastError ? "" : "muted";
  linkError.style.color = n.lastError ? "var(--bad)" : "";
  text("notifier-attempts", n.attempts);
  const sender = s.sender || {};
  text("limiter-enabled", sender.limiterEnabled ? "enabled" : "off");
  text("limiter-limiting", yesNo(sender.limiting));
  text("limiter-total", sender.totalBytesPerInterval); text("limiter-interval", sender.intervalMs);
  text("limiter-medium", sender.mediumPercent); text("held-bytes", sender.heldBytes);
  text("safeguard-state", sender.safeguardActive ? "ON: large frames suppressed" : "off");
  const sup = sender.suppressed || {};
  const frames = Object.values(sup).reduce((a, c) => a + (c.frames || 0), 0);
  text("suppressed", frames + " frames");
  const sessions = s.sessions || { total: 0, byTransport: {} };
  text("session-count", sessions.total);
  text("session-transports", Object.entries(sessions.byTransport || {})
    .map(([k, v]) => k + " " + v).join(" · ") || "none");
}

function renderActions(s) {
  for (const button of document.querySelectorAll("#mode-buttons button")) {
    button.setAttribute("aria-pressed", String(button.dataset.mode === s.acceptMode));
  }
  const drain = s.drain;
  text("drain-state", drain === null || drain === undefined ? "Drain is not available on this bridge."
    : drain.active ? "Draining: " + drain.pending + " Migrate(s) pending."
      : "No drain running.");
}

function cell(row, col, value) {
  const td = document.createElement("td");
  td.dataset.col = col;
  td.textContent = value;
  row.appendChild(td);
  return td;
}

function renderTenants(tenants) {
  const card = $("tenants-card");
  // Shown once any tenant has a limit: a site without tenant limits has nothing to watch.
  const limited = (t) => Object.values(t.limits || {}).some((v) => v !== null && v !== undefined);
  if (!Array.isArray(tenants) || !tenants.some(limited)) { card.hidden = true; return; }
  const keys = [];
  for (const t of tenants) {
    for (const k of Object.keys({ ...(t.limits || {}), ...(t.use || {}) })) {
      if (!keys.includes(k)) keys.push(k);
    }
  }
  const head = document.createElement("tr");
  for (const name of ["Tenant", ...keys]) {
    const th = document.createElement("th");
    th.textContent = name;
    head.appendChild(th);
  }
  const rows = document.createDocumentFragment();
  for (const t of tenants) {
    const tr = document.createElement("tr");
    cell(tr, "tenant", t.tenant);
    for (const k of keys) {
      const use = (t.use || {})[k] ?? 0;
      const limit = (t.limits || {})[k];
      const none = limit === null || limit === undefined;
      const td = cell(tr, k, use + " / " + (none ? "no limit" : limit));
      td.className = "num";
      if (!none && use >= limit) td.dataset.full = "";
      else if (!none && use >= 0.8 * limit) td.dataset.near = "";
    }
    rows.appendChild(tr);
  }
  document.querySelector("#tenants thead").replaceChildren(head);
  document.querySelector("#tenants tbody").replaceChildren(rows);
  card.hidden = false;
}

function compare(a, b, key) {
  const x = a[key], y = b[key];
  if (NUMERIC.has(key)) return (x || 0) - (y || 0);
  return String(x === null || x === undefined ? "" : x)
    .localeCompare(String(y === null || y === undefined ? "" : y));
}

function renderSessions() {
  const { key, dir } = view.sort;
  const needle = view.filter.trim().toLowerCase();
  const rows = view.sessions
    .filter((s) => !needle || COLUMNS.some((c) => String(s[c] ?? "").toLowerCase().includes(needle)))
    .sort((a, b) => (dir === "asc" ? 1 : -1) * compare(a, b, key));
  const fresh = document.createDocumentFragment();
  for (const s of rows) {
    const tr = document.createElement("tr");
    tr.dataset.sessionId = s.sessionId;
    for (const c of COLUMNS) {
      const td = cell(tr, c, s[c] === null || s[c] === undefined ? "" : String(s[c]));
      td.dataset.value = td.textContent;
      td.title = td.textContent;
      if (NUMERIC.has(c)) td.className = "num";
    }
    const end = document.createElement("button");
    end.type = "button";
    end.className = "end";
    end.textContent = "End";
    end.dataset.sessionId = s.sessionId;
    end.setAttribute("aria-label", "end session " + s.sessionId + " of " + s.userId);
    cell(tr, "actions", "").appendChild(end);
    fresh.appendChild(tr);
  }
  document.querySelector("#sessions tbody").replaceChildren(fresh);
  text("shown-count", rows.length);
  $("sessions-table").hidden = rows.length === 0;
  $("sessions-empty").hidden = rows.length > 0;
  text("sessions-empty", view.sessions.length ? "No session matches the filter."
    : "No sessions on this bridge.");
  for (const th of document.querySelectorAll("#sessions th[data-sort]")) {
    th.dataset.dir = th.dataset.sort === key ? dir : "";
  }
}

function kB(bytesPerSecond) {  // 1 kB = 1000 bytes
  const k = bytesPerSecond / 1000;
  if (k === 0) return "0 kB/s";
  return (k >= 100 ? k.toFixed(0) : k >= 1 ? k.toFixed(1) : k.toFixed(2)) + " kB/s";
}

function niceScale(peakBytes) {  // the axis top in kB/s: 1, 2, 4 or 8 times a power of ten
  const k = Math.max(peakBytes / 1000, 1);
  const power = Math.pow(10, Math.floor(Math.log10(k)));
  for (const m of [1, 2, 4, 8, 10]) if (m * power >= k) return m * power;
  return 10 * power;
}

function drawBandwidth(bw) {
  const canvas = $("bandwidth");
  const ratio = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || 960, cssHeight = canvas.clientHeight || 220;
  if (canvas.width !== Math.round(cssWidth * ratio)) canvas.width = Math.round(cssWidth * ratio);
  if (canvas.height !== Math.round(cssHeight * ratio)) canvas.height = Math.round(cssHeight * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  const w = cssWidth, h = cssHeight, top = 10, bottom = 20;
  ctx.clearRect(0, 0, w, h);
  const samples = bw.samples || [];
  const span = Math.max(60, samples.length);
  text("bw-minutes", Math.round(span / 60));
  let peak = 0;
  for (const s of samples) peak = Math.max(peak, s.high + s.medium + s.low);
  const scale = niceScale(peak) * 1000;  // bytes per second at the top of the axis
  const ticks = [0, 1, 2, 3, 4].map((i) => Number((scale * i / 4000).toFixed(2)) + " kB/s");
  ctx.font = "12px system-ui, sans-serif";
  const pad = 8 + Math.max(...ticks.map((t) => ctx.measureText(t).width));
  const plot = h - top - bottom;
  ctx.strokeStyle = "#dde1e6"; ctx.fillStyle = "#6b7480";
  ticks.forEach((label, i) => {
    const y = h - bottom - (i / 4) * plot;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(label, 2, y + 4);
  });
  const step = (w - pad) / span;
  const x0 = w - samples.length * step;
  // Stacked areas: high at the bottom, then medium, then low.
  const order = ["high", "medium", "low"];
  for (let k = order.length - 1; k >= 0; k--) {
    ctx.fillStyle = COLORS[order[k]];
    ctx.beginPath();
    ctx.moveTo(x0, h - bottom);
    samples.forEach((s, i) => {
      let v = 0;
      for (let j = 0; j <= k; j++) v += s[order[j]];
      ctx.lineTo(x0 + (i + 1) * step, h - bottom - (v / scale) * plot);
    });
    ctx.lineTo(x0 + samples.length * step, h - bottom);
    ctx.closePath();
    ctx.fill();
  }
  const last = samples[samples.length - 1] || { high: 0, medium: 0, low: 0 };
  text("bw-high", kB(last.high)); text("bw-medium", kB(last.medium)); text("bw-low", kB(last.low));
  canvas.dataset.samples = String(samples.length);
  canvas.dataset.total = String(samples.reduce((a, s) => a + s.high + s.medium + s.low, 0));
  canvas.dataset.ticks = JSON.stringify(ticks);
  text("bw-note", bw.limiterEnabled ? "" : "The limiter is off: no bytes are held back.");
}

async function poll() {
  try {
    const [status, sessions, bandwidth] = await Promise.all(
      [api("/api/status"), api("/api/sessions"), api("/api/bandwidth")]);
    renderStatus(status);
    renderActions(status);
    renderTenants(status.tenants);
    view.sessions = sessions.sessions;
    renderSessions();
    drawBandwidth(bandwidth);
    $("error").hidden = true;
    view.polls += 1;
    document.body.dataset.polls = String(view.polls);
    document.body.dataset.ready = "yes";
    text("updated", "updated " + new Date().toISOString().slice(11, 19) + " UTC");
  } catch (e) {
    $("error").hidden = false;
    text("error", "Cannot read the bridge: " + e.message);
  }
}

// --- actions ---------------------------------------------------------------------------
function confirmAction(message, yes) {
  const dialog = $("confirm-dialog");
  text("confirm-text", message);
  text("confirm-yes", yes);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "yes"), { once: true });
    dialog.showModal();
  });
}

function say(outcome, message) {
  const result = $("action-result");
  result.dataset.outcome = outcome;
  result.textContent = message;
}

// One action: ask first when `ask` is given, send, show the answer; body.dataset.actions
// counts the finished ones (whatever the outcome).
async function runAction({ what, ask, yes, send, done, shown }) {
  const buttons = document.querySelectorAll("#actions-card button, #sessions button.end");
  try {
    if (ask && !(await confirmAction(ask, yes))) {
      say("cancelled", what + ": cancelled, nothing was changed.");
      return;
    }
    for (const b of buttons) b.disabled = true;
    const r = await send();
    if (shown) shown(r);
    if (r.ok) say("ok", done(r.body));
    else {
      const key = r.body.key ? " (key: " + r.body.key + ")" : "";
      say("bad", what + " refused (" + r.status + "): " + (r.body.error || "no reason given") + key);
    }
    poll();
  } catch (e) {
    say("bad", what + " not done: " + e.message + ".");
  } finally {
    for (const b of buttons) b.disabled = false;
    document.body.dataset.actions = String(Number(document.body.dataset.actions || 0) + 1);
  }
}

function switchMode(mode) {
  return runAction({
    what: "Switching to " + mode,
    send: () => request("/api/mode", "POST", { accept: mode }),
    done: (b) => "Accept mode is now " + b.accept + ": " + (b.accepting ? "accepting sessions."
      : "not accepting (" + b.acceptReason + ")."),
  });
}

function startDrain() {
  const input = $("drain-spread");
  const spread = Number.isFinite(input.valueAsNumber) ? input.valueAsNumber : input.value;
  return runAction({
    what: "The drain",
    ask: "Drain this bridge? It switches to maintenance (no new sessions) and sends each of its "
      + view.sessions.length + " session(s) a Migrate to another bridge, spread over "
      + spread + " s.",
    yes: "Start drain",
    send: () => request("/api/mode", "POST", { drain: true, spread }),
    done: (b) => "Drain started: " + b.drained + " session(s) get a Migrate over " + spread
      + " s; accept mode is now " + b.accept + ".",
  });
}

function cancelDrain() {
  return runAction({
    what: "Cancelling the drain",
    send: () => request("/api/mode", "POST", { drain: false }),
    done: (b) => "Drain cancelled: " + (b.cancelled ?? 0) + " Migrate(s) not sent; accept mode"
      + " stays " + b.accept + ".",
  });
}

function endSession(id) {
  const s = view.sessions.find((row) => row.sessionId === id) || { userId: "?" };
  return runAction({
    what: "Ending session " + id,
    ask: "End session " + id + " of " + s.userId + (s.station ? " at station " + s.station : "")
      + "? The client gets SessionTerminated (logout) and is disconnected.",
    yes: "End session",
    send: () => request("/api/sessions/" + encodeURIComponent(id), "DELETE"),
    done: (b) => "Session " + id + " of " + b.session.userId + " ended: the client got"
      + " SessionTerminated (logout).",
  });
}

function reload() {
  return runAction({
    what: "Reload",
    send: () => request("/api/reload", "POST", {}),
    shown: (r) => {
      text("reload-answer", JSON.stringify(r.body, null, 1));
      $("reload-answer").hidden = false;
    },
    done: (b) => {
      const applied = Object.entries(b.applied || {})
        .map(([k, v]) => k + ": " + v.from + " → " + v.to);
      const restart = (b.needsRestart || []).join(", ");
      return "Reloaded " + b.file + ": " + (applied.length ? "applied " + applied.join(", ")
        : "nothing to apply") + (restart ? "; needs a restart: " + restart : "") + ".";
    },
  });
}

function start() {
  for (const th of document.querySelectorAll("#sessions th[data-sort]")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      view.sort = { key, dir: view.sort.key === key && view.sort.dir === "asc" ? "desc" : "asc" };
      renderSessions();
    });
  }
  $("filter").addEventListener("input", (e) => { view.filter = e.target.value; renderSessions(); });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    $("token-form").hidden = true;
    poll();
  });
  for (const button of document.querySelectorAll("#mode-buttons button")) {
    button.addEventListener("click", () => switchMode(button.dataset.mode));
  }
  $("drain-start").addEventListener("click", startDrain);
  $("drain-cancel").addEventListener("click", cancelDrain);
  $("reload").addEventListener("click", reload);
  document.querySelector("#sessions tbody").addEventListener("click", (e) => {
    const button = e.target.closest("button.end");
    if (button) endSession(button.dataset.sessionId);
  });
  $("confirm-yes").addEventListener("click", () => $("confirm-dialog").close("yes"));
  $("confirm-no").addEventListener("click", () => $("confirm-dialog").close("no"));
  poll();
  setInterval(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
