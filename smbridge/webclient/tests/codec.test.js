import assert from "node:assert/strict";
import { test } from "node:test";
import { Decoder, FrameError, KIND, encode, nameOf } from "../codec.js";

const bytes = (buffer) => new Uint8Array(buffer);

test("encode writes the PROTOCOL §2 header big-endian and a JSON payload", () => {
  const out = bytes(encode(KIND.REQUEST, 173, 1, 9, { queue: "Sales" }));
  const payload = new TextEncoder().encode('{"queue":"Sales"}');
  assert.deepEqual([...out.subarray(0, 14)],
    [0, 0, 0, 10 + payload.length, 1, 1, 0, 173, 0, 1, 0, 0, 0, 9]);
  assert.deepEqual([...out.subarray(14)], [...payload]);
});

test("frames fed byte by byte decode like frames fed at once", () => {
  const a = bytes(encode(KIND.RESPONSE, 168, 4, 7, { server: "smbridge", "\u00e9": [1, 2] }));
  const b = bytes(encode(KIND.NOTIFICATION, 173, 3, 0, {}));
  const all = new Uint8Array([...a, ...b]);
  const whole = new Decoder().feed(all);
  const decoder = new Decoder();
  const split = [];
  for (const byte of all) split.push(...decoder.feed(new Uint8Array([byte])));
  assert.deepEqual(split, whole);
  assert.deepEqual(whole, [
    { kind: 2, objectType: 168, eventId: 4, requestId: 7, body: { server: "smbridge", "\u00e9": [1, 2] } },
    { kind: 3, objectType: 173, eventId: 3, requestId: 0, body: {} },
  ]);
});

test("an empty payload decodes as {}", () => {
  const raw = new Uint8Array([0, 0, 0, 10, 1, 3, 0, 168, 0, 10, 0, 0, 0, 0]);
  assert.deepEqual(new Decoder().feed(raw)[0].body, {});
});

test("a bad length, version, kind or payload is a FrameError", () => {
  const good = bytes(encode(KIND.RESPONSE, 168, 4, 7, {}));
  const cases = [
    (f) => { f[3] = 9; },
    (f) => { f[4] = 2; },
    (f) => { f[5] = 5; },
  ];
  for (const spoil of cases) {
    const frame = good.slice();
    spoil(frame);
    assert.throws(() => new Decoder().feed(frame), FrameError);
  }
  const array = bytes(encode(KIND.RESPONSE, 168, 4, 7, {})).slice(0, 14);
  const list = new TextEncoder().encode("[1]");
  const framed = new Uint8Array([...array, ...list]);
  new DataView(framed.buffer).setUint32(0, 10 + list.length);
  assert.throws(() => new Decoder().feed(framed), /not a JSON object/);
  assert.throws(() => new Decoder().feed(new Uint8Array([0, 0x20, 0, 0])), /length/);
});

test("notifications are named as the catalog names them", () => {
  assert.equal(nameOf(168, 10), "TerminationImminent");
  assert.equal(nameOf(168, 13), "Migrate");
  assert.equal(nameOf(999, 1), "(999,1)");
});
