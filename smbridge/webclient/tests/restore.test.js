import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff, Session } from "../smbridge.js";
import { FakeBridge, FakeClock, FakeNetwork, settle } from "./fakes.js";

const entry = (name) => ({ name, uri: `wss://proxy/${name}/session`, kind: "off-server",
  location: "Indy", available: true, ports: { tls: 3952 } });
const ROSTER = [entry("sm1"), entry("sm2")];
const items = (from, to) => Array.from({ length: to - from }, (_, i) => ({ id: `c${from + i}` }));

function setup(answer = null) {
  const network = new FakeNetwork();
  const clock = new FakeClock();
  const sm1 = network.add(new FakeBridge("sm1", { roster: ROSTER, answer }));
  const sm2 = network.add(new FakeBridge("sm2", { roster: ROSTER, answer }));
  const session = new Session("wss://proxy/sm1/session", "agent1", "demo", {
    WebSocket: network.WebSocket, clock, random: () => 0.999999, backoff: new Backoff(1, 2, 8), resumeTries: 1,
  });
  const events = [];
  const notes = [];
  for (const kind of ["disconnected", "relogged", "resynchronised", "ended"]) {
    session.addEventListener(kind, ({ detail }) => events.push([kind, detail]));
  }
  session.addEventListener("notification", ({ detail }) => notes.push(detail.body));
  return { network, clock, sm1, sm2, session, events, notes, kinds: () => events.map((e) => e[0]) };
}

test("a re-logon restores a huge queue whole: resynchronised carries every piece", async () => {
  const t = setup();
  await t.session.start();
  await t.session.watchQueue("Sales");
  t.sm2.pieces.set("Sales", [items(0, 3), items(3, 6), items(6, 8)]); // three pieces on sm2
  t.sm1.sessions.clear();
  t.sm1.down = true;
  t.sm1.sockets[0].cut();
  await settle(60);
  assert.deepEqual(t.kinds(), ["disconnected", "relogged", "resynchronised"]);
  const snapshot = t.events[2][1].snapshots["queue:Sales"];
  assert.deepEqual(snapshot.interactions.map((i) => i.id), items(0, 8).map((i) => i.id));
  assert.equal(snapshot.more, undefined);
  // the continued pieces still reach the page as notifications, after resynchronised
  assert.deepEqual(t.notes.filter((b) => b.continued).map((b) => b.added.length), [3, 2]);
  assert.equal(t.session.state, "connected");
});

test("a re-logon whose connection drops mid-snapshot logs on again", async () => {
  const t = setup();
  await t.session.start();
  await t.session.watchQueue("Sales");
  t.sm2.pieces.set("Sales", [items(0, 3), items(3, 6)]);
  const notify = t.sm2.notify.bind(t.sm2);
  t.sm2.notify = (id, ...rest) => { // the tail never comes: the connection dies instead
    t.sm2.notify = notify;
    t.sm2.sockets.at(-1).cut();
  };
  t.sm1.sessions.clear();
  t.sm1.down = true;
  t.sm1.sockets[0].cut();
  await settle(60);
  assert.deepEqual(t.kinds(), ["disconnected"]);
  assert.equal(t.session.state, "relogging");
  t.sm2.pieces.delete("Sales");
  t.clock.advance(30_000);
  await settle(60);
  assert.deepEqual(t.kinds(), ["disconnected", "relogged", "resynchronised"]);
  assert.deepEqual(t.events[2][1].snapshots["queue:Sales"].interactions, [{ id: "at-sm2" }]);
});

test("tenant-limit: no other bridge is tried; the rounds go on after their pauses", async () => {
  let full = true;
  const answer = (name) => (name === "CreateSession" && full
    ? { code: "tenant-limit", message: "full", tenant: "acme", limit: "sessions" } : undefined);
  const t = setup(answer);
  await assert.rejects(t.session.start(), (e) => e.code === "tenant-limit");
  assert.deepEqual(t.network.dialed, ["sm1"]);
  assert.equal(t.session.state, "ended");

  full = false;
  const u = setup((name) => (name === "CreateSession" && full
    ? { code: "tenant-limit", message: "full", limit: "sessions" } : undefined));
  await u.session.start();
  u.sm1.sessions.clear();
  full = true;
  u.network.dials.length = 0;
  u.sm1.sockets[0].cut();
  await settle(60);
  for (let i = 0; i < 60; i++) { // a minute of the session's clock
    u.clock.advance(1000);
    await settle(10);
  }
  assert.equal(u.session.state, "relogging");
  const creates = [u.sm1, u.sm2].flatMap((b) => b.requests).filter((r) => r[0] === "CreateSession");
  assert.ok(creates.length >= 4 && creates.length <= 12, `${creates.length} logons`);
  full = false;
  u.clock.advance(10_000);
  await settle(60);
  assert.equal(u.session.state, "connected");
  assert.deepEqual(u.kinds().slice(-2), ["relogged", "resynchronised"]);
});
