// The bridge's live dashboard: polls the admin JSON API and renders it. No build step,
// no external assets. The admin token (when the API asks for one) stays in this tab.
"use strict";

const POLL_MS = 2000;
const COLUMNS = ["sessionId", "userId", "userName", "clientVersion", "extension", "logonTime",
  "clientId", "station", "transport", "remote", "state", "queuedBytes", "sentBytes",
  "suppressedFrames"];
const NUMERIC = new Set(["queuedBytes", "sentBytes", "suppressedFrames"]);
const COLORS = { high: "#d9480f", medium: "#1971c2", low: "#2f9e44" };

const view = { sessions: [], sort: { key: "logonTime", dir: "asc" }, filter: "", polls: 0 };

function $(id) { return document.getElementById(id); }
function text(id, value) {
  const el = $(id);
  if (el) el.textContent = value === null || value === undefined ? "—" : String(value);
}
function yesNo(value) { return value ? "yes" : "no"; }

async function api(path) {
  const headers = {};
  const token = sessionStorage.getItem("smbridge-admin-token");
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) {
    $("token-form").hidden = false;
    throw new Error("the admin API needs its token");
  }
  const body = await response.json();
  if (!response.ok && path !== "/healthz") throw new Error(body.error || response.statusText);
  return body;
}

function renderStatus(s) {
  text("name", s.name); text("fqdn", s.fqdn); text("kind", s.kind);
  text("location", s.location || "no location"); text("version", s.version);
  const accept = $("accept");
  accept.dataset.accepting = String(s.accepting);
  text("accept-state", s.accepting ? "accepting sessions" : "not accepting");
  text("accept-mode", s.acceptMode);
  text("accept-reason", s.acceptReason === s.acceptMode ? "" : " · " + s.acceptReason);
  const n = s.notifier || {};
  text("notifier-server", n.server); text("notifier-state", n.state);
  text("notifier-role", n.cic ? n.cic.role : null);
  const load = n.load || {};
  text("notifier-rtt", load.pingMs); text("notifier-loaded", load.loaded ? "(loaded)" : "");
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
  const body = document.querySelector("#sessions tbody");
  const fresh = document.createDocumentFragment();
  for (const s of rows) {
    const tr = document.createElement("tr");
    tr.dataset.sessionId = s.sessionId;
    for (const c of COLUMNS) {
      const td = document.createElement("td");
      td.dataset.col = c;
      td.dataset.value = s[c] === null || s[c] === undefined ? "" : String(s[c]);
      td.textContent = td.dataset.value;
      if (NUMERIC.has(c)) td.className = "num";
      tr.appendChild(td);
    }
    fresh.appendChild(tr);
  }
  body.replaceChildren(fresh);
  text("shown-count", rows.length);
  for (const th of document.querySelectorAll("#sessions th")) {
    th.dataset.dir = th.dataset.sort === key ? dir : "";
  }
}

function drawBandwidth(bw) {
  const canvas = $("bandwidth");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 40;
  ctx.clearRect(0, 0, w, h);
  const samples = bw.samples || [];
  const span = Math.max(60, samples.length);
  text("bw-minutes", Math.round(span / 60));
  let peak = 1;
  for (const s of samples) peak = Math.max(peak, s.high + s.medium + s.low);
  ctx.strokeStyle = "#dde1e6"; ctx.fillStyle = "#6b7480"; ctx.font = "11px sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = h - pad / 2 - (i / 4) * (h - pad);
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText(String(Math.round((peak * i) / 4)), 2, y + 4);
  }
  const step = (w - pad) / span;
  const x0 = w - samples.length * step;
  // Stacked areas: high at the bottom, then medium, then low.
  const order = ["high", "medium", "low"];
  for (let k = order.length - 1; k >= 0; k--) {
    ctx.fillStyle = COLORS[order[k]];
    ctx.beginPath();
    ctx.moveTo(x0, h - pad / 2);
    samples.forEach((s, i) => {
      let v = 0;
      for (let j = 0; j <= k; j++) v += s[order[j]];
      ctx.lineTo(x0 + (i + 1) * step, h - pad / 2 - (v / peak) * (h - pad));
    });
    ctx.lineTo(x0 + samples.length * step, h - pad / 2);
    ctx.closePath();
    ctx.fill();
  }
  const last = samples[samples.length - 1] || { high: 0, medium: 0, low: 0 };
  text("bw-high", last.high); text("bw-medium", last.medium); text("bw-low", last.low);
  canvas.dataset.samples = String(samples.length);
  canvas.dataset.total = String(samples.reduce((a, s) => a + s.high + s.medium + s.low, 0));
  text("bw-note", bw.limiterEnabled ? "" : "The limiter is off: no bytes are held back.");
}

async function poll() {
  try {
    const [status, sessions, bandwidth] = await Promise.all(
      [api("/api/status"), api("/api/sessions"), api("/api/bandwidth")]);
    renderStatus(status);
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

function start() {
  for (const th of document.querySelectorAll("#sessions th")) {
    th.addEventListener("click", () => {
      const key = th.dataset.sort;
      view.sort = { key, dir: view.sort.key === key && view.sort.dir === "asc" ? "desc" : "asc" };
      renderSessions();
    });
  }
  $("filter").addEventListener("input", (e) => { view.filter = e.target.value; renderSessions(); });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("smbridge-admin-token", $("token").value);
    $("token").value = "";
    $("token-form").hidden = true;
    poll();
  });
  poll();
  setInterval(poll, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
