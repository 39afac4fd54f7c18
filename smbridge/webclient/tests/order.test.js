import assert from "node:assert/strict";
import { test } from "node:test";
import {
  Backoff, attemptGroups, entryUri, migratePlan, reconnectPlan, resumeDelays, rosterTargets, uriKey,
  withClientType,
} from "../order.js";

const t = (name) => ({ uri: `wss://${name}/x/session`, name });
const entry = (name, extra = {}) => ({ name, fqdn: `${name}.example`, kind: "off-server",
  location: "Indy", available: true, ports: { tls: 3952, wss: 8952 }, ...extra });
const noShuffle = () => 0.999999; // Fisher-Yates with j = i: the order stays

test("resume pauses grow and stay within the linger time; the first goes at once", () => {
  assert.deepEqual(resumeDelays(120), [0, 0.5, 1, 2]);
  assert.deepEqual(resumeDelays(1.2), [0, 0.5]);
  assert.deepEqual(resumeDelays(0.1, 0), [0]);
  assert.equal(new Backoff(1, 2, 5).delay(10), 5);
});

test("reconnect: the top group three times, then the full list, each once a pass", () => {
  const plan = reconnectPlan([[t("a"), t("b")], [t("c"), t("a")]]);
  assert.deepEqual(plan.map((a) => a.target.name), ["a", "b", "a", "b", "a", "b", "a", "b", "c"]);
  assert.deepEqual(plan.map((a) => a.delay), [0, 0, 0.5, 0, 1, 0, 2, 0, 0]);
  assert.deepEqual(plan.map((a) => a.pass), [0, 0, 1, 1, 2, 2, 3, 3, 3]);
  const later = reconnectPlan([[t("a")]], 1, new Backoff(), 4);
  assert.deepEqual(later.map((a) => [a.delay, a.pass]), [[4, 4], [8, 5]]);
  assert.deepEqual(reconnectPlan([]), []);
});

test("a roster entry's uri is dialed when present, else wss://fqdn:wss-port/<name>/session", () => {
  assert.equal(entryUri(entry("sm2", { uri: "wss://proxy/p/edge2/session" })),
    "wss://proxy/p/edge2/session");
  assert.equal(entryUri(entry("sm2")), "wss://sm2.example:8952/sm2/session");
  assert.equal(entryUri(entry("sm3", { ports: { tls: 3952 } })), null);
  assert.equal(withClientType("wss://h/a/session"), "wss://h/a/session?inin_client_type=smbridge-webclient");
  assert.equal(withClientType("wss://h/a/session?x=1&inin_client_type=z"), "wss://h/a/session?x=1&inin_client_type=z");
});

test("Migrate: available bridges first, the leaving one never, without pauses", () => {
  const roster = [entry("sm1"), entry("sm2", { available: false }), entry("sm3"), "junk"];
  assert.deepEqual(rosterTargets(roster, "sm1").map((x) => x.name), ["sm3", "sm2"]);
  assert.deepEqual(migratePlan(roster, "sm3").map((a) => [a.target.name, a.delay]),
    [["sm1", 0], ["sm2", 0]]);
});

test("attempt groups follow the selection rule; the typed URI comes last", () => {
  const kept = {
    roster: [entry("far", { location: "Paris" }), entry("on", { kind: "on-server" }),
      entry("near"), entry("away", { location: "Rome", kind: "on-server" }),
      entry("excl", { location: "Oslo" })],
    selectionRule: { default: { prioritized: ["<This Location>"], excluded: ["Oslo"] } },
    location: "Indy",
  };
  const groups = attemptGroups(kept, "wss://typed/IC/session", noShuffle);
  assert.deepEqual(groups.map((g) => g.map((x) => x.name)),
    [["on", "near"], ["far"], ["away"], [null]]);
  const only = attemptGroups({ ...kept, selectionRule: { default: ["Paris"] } }, null, noShuffle);
  assert.deepEqual(only.map((g) => g.map((x) => x.name)), [["far"]]);
  assert.deepEqual(attemptGroups(null, "wss://typed/IC/session").map((g) => g.length), [1]);
});

test("a bridge on a pair's backup CIC server goes behind the rest of its group", () => {
  const kept = { roster: [entry("b", { cic: { role: "backup" } }), entry("p", { cic: { role: "primary" } })],
    location: "Indy" };
  for (const random of [() => 0, noShuffle, () => 0.5]) {
    assert.deepEqual(attemptGroups(kept, null, random)[0].map((x) => x.name), ["p", "b"]);
  }
});

test("a URI with and without the client-type parameter is one target", () => {
  const groups = attemptGroups({ roster: [{ name: "sm1", uri: "wss://p/sm1/session", location: "X" }],
    location: "X" }, "wss://p/sm1/session?inin_client_type=smbridge-webclient");
  assert.deepEqual(groups.map((g) => g.map((x) => x.name)), [["sm1"]]);
  assert.equal(uriKey("wss://p/a/session?x=1&inin_client_type=w&y=2"), "wss://p/a/session?x=1&y=2");
});
