import assert from "node:assert/strict";
import { test } from "node:test";
import { MESSAGES } from "../codec.js";
import { ReceivedCounter, RequestTable, SmbridgeError, WatchSet } from "../core.js";
import { FakeClock } from "./fakes.js";

test("a response settles its request once; a late answer is ignored", async () => {
  const table = new RequestTable(new FakeClock());
  const { requestId, promise } = table.add(5);
  assert.equal(table.settle({ kind: 2, requestId, body: { ok: 1 } }), true);
  assert.deepEqual(await promise, { ok: 1 });
  assert.equal(table.settle({ kind: 2, requestId, body: {} }), false);
  assert.equal(table.size, 0);
});

test("an error frame rejects with its code and body", async () => {
  const table = new RequestTable(new FakeClock());
  const { requestId, promise } = table.add();
  table.settle({ kind: 4, requestId, body: { code: "upstream-unavailable", message: "x", retryable: true } });
  const error = await promise.catch((e) => e);
  assert.ok(error instanceof SmbridgeError);
  assert.equal(error.code, "upstream-unavailable");
  assert.equal(error.retryable, true);
});

test("an unanswered request fails request-timeout when the clock passes its timeout", async () => {
  const clock = new FakeClock();
  const table = new RequestTable(clock);
  const { requestId, promise } = table.add(2);
  let outcome = null;
  promise.catch((e) => { outcome = e.code; });
  clock.advance(1999);
  await null;
  assert.equal(outcome, null);
  clock.advance(1);
  await null;
  assert.equal(outcome, "request-timeout");
  assert.equal(table.settle({ kind: 2, requestId, body: {} }), false);
});

test("failAll rejects every waiting request and cancels their timers", async () => {
  const clock = new FakeClock();
  const table = new RequestTable(clock);
  const a = table.add(1);
  const b = table.add();
  table.failAll(new SmbridgeError("connection-lost", "gone"));
  assert.equal((await a.promise.catch((e) => e)).code, "connection-lost");
  assert.equal((await b.promise.catch((e) => e)).code, "connection-lost");
  assert.equal(clock.calls.size, 0);
  assert.notEqual(a.requestId, b.requestId);
});

test("replayed notifications after a resume are dropped; new ones are delivered in order", () => {
  const counter = new ReceivedCounter();
  const delivered = [];
  for (let i = 1; i <= 5; i++) if (counter.arrived()) delivered.push(i);
  assert.equal(counter.resumeFrom, 5);
  // The bridge replays from 3 (it had written 3..7; the client saw up to 5).
  assert.equal(counter.resumed({ position: 2 }), false);
  const replay = [3, 4, 5, 6, 7];
  for (const n of replay) if (counter.arrived()) delivered.push(n);
  assert.deepEqual(delivered, [1, 2, 3, 4, 5, 6, 7]);
});

test("resume at the client's count replays nothing twice; a gap moves the count on", () => {
  const counter = new ReceivedCounter();
  counter.arrived();
  counter.arrived();
  assert.equal(counter.resumed({ position: 2, gap: false }), false);
  assert.equal(counter.arrived(), true);
  assert.equal(counter.delivered, 3);
  assert.equal(counter.resumed({ position: 10, gap: true }), true);
  assert.equal(counter.delivered, 10);
  assert.equal(counter.resumed({ position: 12 }), true, "a position past ours is a gap");
  counter.fresh();
  assert.deepEqual([counter.received, counter.delivered], [0, 0]);
});

test("watches are kept by topic, forgotten by unwatch, restored with one WatchStatus", () => {
  const watches = new WatchSet();
  assert.deepEqual(watches.record(MESSAGES.WATCH_QUEUE, { queue: "Sales" }), ["queue:Sales"]);
  assert.deepEqual(watches.record(MESSAGES.WATCH_QUEUE, { queue: "Sales" }), []);
  assert.deepEqual(watches.record(MESSAGES.WATCH_STATUS, { users: ["a", "b"] }), ["status:a", "status:b"]);
  watches.record(MESSAGES.WATCH_STATISTICS, { workgroup: "Support", stats: ["x"] });
  watches.forget(MESSAGES.UNWATCH_STATUS, { users: ["a"] });
  assert.deepEqual(watches.topics, ["queue:Sales", "status:b", "statistics:Support"]);
  assert.deepEqual(watches.restoreRequests(), [
    [MESSAGES.WATCH_QUEUE, { queue: "Sales" }],
    [MESSAGES.WATCH_STATUS, { users: ["b"] }],
    [MESSAGES.WATCH_STATISTICS, { workgroup: "Support", stats: ["x"] }],
  ]);
  assert.deepEqual(watches.snapshots(MESSAGES.WATCH_QUEUE, { queue: "Sales" }, { n: 1 }),
    { "queue:Sales": { n: 1 } });
  assert.deepEqual(watches.record(MESSAGES.GET_VERSION, {}), []);
});
