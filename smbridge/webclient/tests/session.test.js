import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff, Session } from "../smbridge.js";
import { FakeBridge, FakeClock, FakeNetwork, settle } from "./fakes.js";

const entry = (name, location = "Indy", extra = {}) => ({ name, uri: `wss://proxy/${name}/session`,
  kind: "off-server", location, available: true, ports: { tls: 3952 }, ...extra });
const ROSTER = [entry("sm1"), entry("sm2"), entry("sm3", "Paris")];

function setup({ bridges = ["sm1", "sm2", "sm3"], options = {} } = {}) {
  const network = new FakeNetwork();
  const clock = new FakeClock();
  const by = {};
  for (const name of bridges) by[name] = network.add(new FakeBridge(name, { roster: ROSTER }));
  const session = new Session("wss://proxy/sm1/session", "agent1", "demo", {
    WebSocket: network.WebSocket, clock, random: () => 0.999999,
    backoff: new Backoff(0, 2, 0), ...options,
  });
  const seen = [];
  const events = [];
  session.addEventListener("notification", ({ detail }) => seen.push(detail.body.n ?? detail.name));
  for (const kind of ["disconnected", "resumed", "relogged", "migrated", "resynchronised",
    "ended", "terminationimminent", "switchover"]) {
    session.addEventListener(kind, ({ detail }) => events.push([kind, detail]));
  }
  return { network, clock, by, session, seen, events, kinds: () => events.map((e) => e[0]) };
}

test("a dropped connection resumes; events sent meanwhile arrive once, in order", async () => {
  const t = setup();
  await t.session.start();
  const id = t.session.sessionId;
  t.by.sm1.notify(id, 173, 3, { n: 1 });
  t.by.sm1.notify(id, 173, 3, { n: 2 });
  await settle();
  let open;
  t.session.options.beforeDial = () => new Promise((r) => { open = r; });
  t.by.sm1.sockets[0].cut();
  await settle();
  t.by.sm1.notify(id, 173, 3, { n: 3 });
  t.by.sm1.notify(id, 173, 3, { n: 4 });
  t.by.sm1.replayFrom = 1; // the bridge replays one that the page already had
  open();
  await settle();
  t.by.sm1.notify(id, 173, 3, { n: 5 });
  await settle();
  assert.deepEqual(t.seen, [1, 2, 3, 4, 5]);
  assert.deepEqual(t.kinds(), ["disconnected", "resumed"]);
  assert.equal(t.events[1][1].gap, false);
  assert.equal(t.session.sessionId, id);
  assert.deepEqual(t.by.sm1.requests.find((r) => r[0] === "ResumeSession")[1],
    { sessionId: id, resumeToken: `token-${id}`, received: 2 });
});

test("a session gone on resume logs on again by the roster and restores its watches", async () => {
  const t = setup();
  await t.session.start();
  await t.session.watchQueue("Sales");
  t.by.sm1.sessions.clear(); // the bridge lost it
  t.by.sm1.down = true; // and is gone: the roster's next bridge takes the logon
  t.by.sm1.sockets[0].cut();
  await settle(40);
  assert.equal(t.session.state, "connected");
  assert.equal(t.session.server.name, "sm2");
  assert.deepEqual(t.kinds(), ["disconnected", "relogged", "resynchronised"]);
  assert.deepEqual(t.events[2][1].snapshots, { "queue:Sales": { queue: "Sales", interactions: [{ id: "at-sm2" }] } });
  assert.deepEqual(t.by.sm2.requests.map((r) => r[0]), ["CreateSession", "WatchQueue"]);
});

test("reconnect order: the top group three times, then the full list; each entry once a pass", async () => {
  const t = setup({ options: { rounds: 1, resumeTries: 1 } });
  await t.session.start();
  for (const b of Object.values(t.by)) b.down = true;
  t.network.dials.length = 0;
  t.by.sm1.sockets[0].cut();
  await settle(80);
  // resume: sm1; then groups [sm1 sm2] (Indy) [sm3] (Paris) [typed = sm1]
  assert.deepEqual(t.network.dialed, ["sm1", "sm1", "sm2", "sm1", "sm2", "sm1", "sm2", "sm1", "sm2", "sm3"]);
  assert.deepEqual(t.kinds(), ["disconnected", "ended"]);
  assert.equal(t.events[1][1].reason, "no-bridge");
});

test("logon-failed stops the reconnect at once", async () => {
  const t = setup({ options: { resumeTries: 1 } });
  await t.session.start();
  t.by.sm1.sessions.clear();
  t.by.sm1.answer = (name) => (name === "CreateSession" ? { code: "logon-failed", message: "no", reason: "bad-password" } : undefined);
  t.network.dials.length = 0;
  t.by.sm1.sockets[0].cut();
  await settle(40);
  assert.deepEqual(t.network.dialed, ["sm1", "sm1"]);
  assert.deepEqual(t.kinds(), ["disconnected", "ended"]);
  assert.equal(t.events[1][1].reason, "logon-failed");
  await assert.rejects(t.session.watchQueue("Sales"), { code: "session-ended" });
});

test("a redirect on the first logon is followed to its roster", async () => {
  const t = setup();
  t.by.sm1.answer = (name) => (name === "CreateSession"
    ? { code: "redirect", message: "go", roster: [entry("sm1"), entry("sm3", "Paris")], location: "Paris" }
    : undefined);
  const reply = await t.session.start();
  assert.equal(reply.server.name, "sm3");
  assert.deepEqual(t.network.dialed, ["sm1", "sm3"]);
});

test("logon-throttled tries the same bridge again after retryAfter", async () => {
  const t = setup();
  let refusals = 1;
  t.by.sm1.answer = (name) => (name === "CreateSession" && refusals-- > 0
    ? { code: "logon-throttled", message: "slow down", retryAfter: 2 } : undefined);
  const started = t.session.start();
  await settle();
  assert.deepEqual(t.network.dialed, ["sm1"]);
  t.clock.advance(2000);
  const reply = await started;
  assert.equal(reply.server.name, "sm1");
  assert.deepEqual(t.network.dialed, ["sm1", "sm1"]);
});

test("Migrate: logon elsewhere, watches restored, the old session destroyed", async () => {
  const t = setup();
  await t.session.start();
  const old = t.session.sessionId;
  await t.session.watchQueue("Sales");
  t.by.sm1.notify(old, 168, 13, { reason: "drain", roster: [entry("sm1"), entry("sm2")] });
  await settle(40);
  assert.equal(t.session.server.name, "sm2");
  assert.deepEqual(t.kinds(), ["migrated", "resynchronised"]);
  assert.equal(t.events[0][1].reason, "drain");
  assert.ok(t.events[1][1].snapshots["queue:Sales"]);
  assert.ok(t.by.sm1.requests.some((r) => r[0] === "DestroySession"));
  assert.equal(t.by.sm1.sessions.has(old), false);
  t.by.sm2.notify(t.session.sessionId, 173, 3, { n: "after" });
  await settle();
  assert.deepEqual(t.seen, ["Migrate", "after"]);
});

test("TerminationImminent and Switchover reach the page as events", async () => {
  const t = setup();
  await t.session.start();
  t.by.sm1.notify(t.session.sessionId, 168, 10, { secondsLeft: 60 });
  t.by.sm1.notify(t.session.sessionId, 168, 12, { phase: "completed", cic: "b" });
  await settle();
  assert.deepEqual(t.events, [["terminationimminent", { secondsLeft: 60 }],
    ["switchover", { phase: "completed", cic: "b" }]]);
});

test("heartbeats go every heartbeatInterval; one unanswered drops the connection", async () => {
  const t = setup({ options: { heartbeatTimeout: 5, resumeTries: 1 } });
  await t.session.start();
  t.clock.advance(10000);
  await settle();
  const beats = () => t.by.sm1.requests.filter((r) => r[0] === "Heartbeat").length;
  assert.equal(beats(), 1);
  t.by.sm1.silent.add("Heartbeat");
  t.clock.advance(10000);
  await settle();
  assert.equal(beats(), 2);
  t.clock.advance(5000);
  await settle(40);
  assert.deepEqual(t.kinds(), ["disconnected", "resumed"]);
});

test("a request unanswered within its timeout fails request-timeout", async () => {
  const t = setup();
  await t.session.start();
  t.by.sm1.silent.add("Other");
  const pending = t.session.getVersion();
  await settle();
  t.clock.advance(30000);
  await assert.rejects(pending, { code: "request-timeout" });
});

test("logoff sends DestroySession and ends the session for good", async () => {
  const t = setup();
  await t.session.start();
  await t.session.logoff();
  assert.equal(t.session.state, "ended");
  assert.equal(t.by.sm1.sessions.size, 0);
  assert.deepEqual(t.kinds(), ["ended"]);
  assert.equal(t.events[0][1].reason, "logoff");
});
