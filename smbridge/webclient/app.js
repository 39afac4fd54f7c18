// The demo page: log on with the form through the SDK, watch one queue, list what
// arrives; the session resumes, logs on again and follows Migrate by itself.
import { Session, sessionUrl } from "./smbridge.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
for (const field of ["server", "prefix", "user", "queue"]) {
  if (params.has(field)) $(field).value = params.get(field);
}
// ?aliases=sm1:edge1,sm2:edge2 : reach roster entries without a `uri` through this proxy.
const aliases = new Map((params.get("aliases") || "").split(",").filter(Boolean)
  .map((pair) => pair.split(":")));
let session = null;
let size = 0;

function status(text, state) {
  $("status").textContent = text;
  $("status").dataset.state = state;
}

function show(event, text) {
  const item = document.createElement("li");
  item.dataset.event = event;
  item.textContent = `${event} ${text}`;
  $("events").append(item);
}

function queueChanged(body) {
  size += (body.added || []).length - (body.removed || []).length;
  $("queue-size").textContent = String(size);
  const ids = [...(body.added || []), ...(body.changed || [])].map((i) => i.id);
  show("QueueChanged", `${body.queue} +${(body.added || []).length} ` +
    `~${(body.changed || []).length} -${(body.removed || []).length} ${ids.join(" ")}`);
}

function snapshot(reply) {
  size = (reply.interactions || []).length;
  $("queue-name").textContent = reply.queue;
  $("queue-size").textContent = String(size);
}

function uriFor(entry) {
  if (entry.uri) return entry.uri;
  const alias = aliases.get(entry.name);
  return alias ? sessionUrl(location, alias, $("prefix").value) : null;
}

$("logon").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("logon-button").disabled = true;
  const url = sessionUrl(location, $("server").value, $("prefix").value);
  status(`connecting to ${url}`, "connecting");
  session = new Session(url, $("user").value, $("password").value, { uriFor });
  window.smbridgeSession = session; // for the console (and the browser tests)
  $("password").value = "";
  session.addEventListener("notification", ({ detail }) => {
    if (detail.name === "QueueChanged") queueChanged(detail.body);
    else show(detail.name, JSON.stringify(detail.body));
  });
  session.addEventListener("terminationimminent", ({ detail }) =>
    status(`session ends in ${detail.secondsLeft}s unless used`, "warning"));
  session.addEventListener("disconnected", () => status("reconnecting", "connecting"));
  for (const kind of ["resumed", "relogged", "migrated"]) {
    session.addEventListener(kind, ({ detail }) => {
      $("session").textContent = detail.sessionId;
      $("bridge").textContent = (detail.server || {}).name || "-";
      status(kind === "resumed" ? "logged on (resumed)" : "logged on", "open");
      show(kind, (detail.server || {}).name || "");
    });
  }
  session.addEventListener("resynchronised", ({ detail }) => {
    const queue = detail.snapshots[`queue:${$("queue").value}`];
    if (queue) snapshot(queue);
  });
  session.addEventListener("ended", ({ detail }) => {
    status(`ended (${detail.reason})`, detail.reason === "logoff" ? "closed" : "error");
    $("session").textContent = "-";
    $("logon-button").disabled = false;
    $("logoff-button").disabled = true;
  });
  try {
    const reply = await session.start();
    $("session").textContent = reply.sessionId;
    $("bridge").textContent = (reply.server || {}).name || "-";
    status("logged on", "open");
    const reply2 = await session.watchQueue($("queue").value);
    snapshot(reply2);
    show("WatchQueue", `${reply2.queue}: ${size} interactions`);
    $("logoff-button").disabled = false;
  } catch (error) {
    status(String(error.message || error), "error");
    $("logon-button").disabled = false;
  }
});

$("logoff-button").addEventListener("click", async () => {
  $("logoff-button").disabled = true;
  if (session) await session.logoff();
});
