import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { pathToFileURL } from "node:url";
import { FakeBridge, FakeNetwork } from "./fakes.js";

const DOCS = new URL("../../../docs/client.md", import.meta.url);

test("the browser SDK example in docs/client.md runs against a fake bridge", { skip: !existsSync(DOCS) }, async () => {
  const text = readFileSync(DOCS, "utf8");
  const [, block] = text.match(/```js\n([\s\S]*?)```/);
  const sdk = new URL("../smbridge.js", import.meta.url).href;
  const source = block.replace('"/webclient/smbridge.js"', JSON.stringify(sdk));
  const network = new FakeNetwork();
  const bridge = new FakeBridge("IC");
  bridge.uri = "wss://proxy/extra/path/IC/session";
  network.add(bridge);
  const seen = [];
  Object.assign(globalThis, {
    WebSocket: network.WebSocket, location: { protocol: "https:", host: "proxy" },
    user: "agent1", password: "demo", render: (b) => seen.push(b), rebuild: () => {},
    warn: () => {}, showLogon: (reason) => seen.push(reason),
  });
  const file = join(mkdtempSync(join(tmpdir(), "smbridge-docs-")), "example.mjs");
  writeFileSync(file, source);
  await import(pathToFileURL(file).href);
  assert.deepEqual(bridge.requests.map((r) => r[0]),
    ["CreateSession", "WatchQueue", "Other", "DestroySession"]);
  assert.deepEqual(seen, ["logoff"]);
});
