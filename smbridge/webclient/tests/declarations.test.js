import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import * as sdk from "../smbridge.js";

test("smbridge.d.ts declares exactly what smbridge.js exports", () => {
  const text = readFileSync(new URL("../smbridge.d.ts", import.meta.url), "utf8");
  const declared = [...text.matchAll(/^export declare (?:const|function|class) (\w+)/gm)]
    .map((m) => m[1]).sort();
  assert.deepEqual(declared, Object.keys(sdk).sort());
});
