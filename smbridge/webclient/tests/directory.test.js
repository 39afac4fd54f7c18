import assert from "node:assert/strict";
import { test } from "node:test";
import { SmbridgeError, gatherSnapshot, readDirectory } from "../core.js";
import { Session } from "../smbridge.js";
import { FakeBridge, FakeClock, FakeNetwork } from "./fakes.js";

/** A bridge's GetDirectory over `entries`, pages of `size`, `version` read at each call. */
function pager(entries, size, version = () => 0) {
  const asked = [];
  const request = async (body) => {
    asked.push(body);
    const offset = body.offset ?? 0;
    const end = Math.min(entries.length, offset + size);
    const more = end < entries.length;
    return { name: body.name, entries: entries.slice(offset, end), offset,
      total: entries.length, next: more ? end : null, more, version: version() };
  };
  return { request, asked };
}

const ENTRIES = Array.from({ length: 23 }, (_, i) => ({ id: `u${i}` }));

test("readDirectory follows next until more is false and keeps the order", async () => {
  const { request, asked } = pager(ENTRIES, 5);
  const whole = await readDirectory(request, "Company Directory");
  assert.deepEqual(whole.entries, ENTRIES);
  assert.equal(whole.total, 23);
  assert.deepEqual(asked.map((b) => b.offset ?? 0), [0, 5, 10, 15, 20]);
});

test("a version change between pages restarts the walk", async () => {
  let calls = 0;
  const { request, asked } = pager(ENTRIES, 10, () => (calls++ === 1 ? 1 : calls > 2 ? 1 : 0));
  const whole = await readDirectory(request, "D");
  assert.deepEqual(whole.entries, ENTRIES);
  assert.equal(whole.version, 1);
  assert.ok(asked.length > 3);
});

test("a directory that changes under every walk rejects directory-changing", async () => {
  let v = 0;
  const { request } = pager(ENTRIES, 10, () => v++);
  const error = await readDirectory(request, "D", { tries: 2 }).catch((e) => e);
  assert.ok(error instanceof SmbridgeError);
  assert.equal(error.code, "directory-changing");
});

test("gatherSnapshot appends the continued tail to the reply's items, in order", () => {
  const whole = gatherSnapshot({ queue: "Sales", interactions: [{ id: 1 }], more: true },
    [{ added: [{ id: 2 }], continued: true, more: true }, { added: [{ id: 3 }], continued: true }],
    "interactions");
  assert.deepEqual(whole, { queue: "Sales", interactions: [{ id: 1 }, { id: 2 }, { id: 3 }] });
});

test("watchQueue resolves with the whole snapshot of a queue sent in pieces", async () => {
  const network = new FakeNetwork();
  const bridge = network.add(new FakeBridge("sm1"));
  bridge.pieces.set("Sales", [[{ id: 1 }], [{ id: 2 }], [{ id: 3 }, { id: 4 }]]);
  const session = new Session("wss://proxy/sm1/session", "agent1", "demo",
    { WebSocket: network.WebSocket, clock: new FakeClock() });
  const seen = [];
  session.addEventListener("notification", ({ detail }) => seen.push(detail.body.continued));
  await session.start();
  const snapshot = await session.watchQueue("Sales");
  assert.deepEqual(snapshot.interactions.map((i) => i.id), [1, 2, 3, 4]);
  assert.equal(snapshot.more, undefined);
  assert.deepEqual(seen, [true, true]); // the tail still reaches listeners
});
