// The pure parts of a session: requests awaiting answers (timeouts on an injected
// clock), the `received` counter of PROTOCOL §4.5, and the watches a new session needs.
import { MESSAGES } from "./codec.js";

/** A request that did not succeed: an error frame (its code and body), or a local failure
 * (connection-lost, request-timeout, not-connected, session-ended, no-bridge...). */
export class SmbridgeError extends Error {
  constructor(code, message, body = {}) {
    super(`${code}: ${message}`);
    this.name = "SmbridgeError";
    this.code = code;
    this.body = body;
  }

  /** The bridge marks a failure worth one retry (upstream-unavailable in a switchover). */
  get retryable() { return this.body.retryable === true; }
}

/** Timers in milliseconds; tests inject a fake one. */
export const REAL_CLOCK = Object.freeze({
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle),
});

/** Requests by id; each settles once: its response, its error, a timeout or a close. */
export class RequestTable {
  constructor(clock = REAL_CLOCK) {
    this.clock = clock;
    this.nextId = 1;
    this.pending = new Map();
  }

  get size() { return this.pending.size; }

  /** A new request id and the promise of its answer; fails request-timeout after
   * `timeout` seconds (none when null). */
  add(timeout = null) {
    const requestId = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    let entry;
    const promise = new Promise((resolve, reject) => { entry = { resolve, reject, timer: null }; });
    if (timeout != null) {
      entry.timer = this.clock.setTimeout(() => {
        if (this.pending.delete(requestId)) {
          entry.reject(new SmbridgeError("request-timeout", `no answer within ${timeout}s`));
        }
      }, timeout * 1000);
    }
    this.pending.set(requestId, entry);
    return { requestId, promise };
  }

  /** A response (kind 2) or error (kind 4) frame; false when no request waits for it. */
  settle(frame) {
    const entry = this.pending.get(frame.requestId);
    if (!entry) return false;
    this.pending.delete(frame.requestId);
    if (entry.timer !== null) this.clock.clearTimeout(entry.timer);
    if (frame.kind === 4) {
      const body = frame.body || {};
      const code = String(body.code || "error");
      entry.reject(new SmbridgeError(code, String(body.message || ""), body));
    } else {
      entry.resolve(frame.body);
    }
    return true;
  }

  /** Fail every waiting request with `error` (the connection is gone). */
  failAll(error) {
    const entries = [...this.pending.values()];
    this.pending.clear();
    for (const entry of entries) {
      if (entry.timer !== null) this.clock.clearTimeout(entry.timer);
      entry.reject(error);
    }
  }
}

/** Notification numbers of one logical session, as smbridge/client/keeper.py keeps them:
 * `received` counts frames on the current session (the bridge's numbering), `delivered`
 * is the number of the last one handed to the page. A replayed frame is dropped. */
export class ReceivedCounter {
  constructor() {
    this.received = 0;
    this.delivered = 0;
  }

  /** A new session (logon, re-logon, Migrate): both counters start over. */
  fresh() {
    this.received = 0;
    this.delivered = 0;
  }

  /** A notification arrived: true when it is new and goes to the page. */
  arrived() {
    this.received += 1;
    if (this.received <= this.delivered) return false;
    this.delivered = this.received;
    return true;
  }

  /** What ResumeSession sends as `received`. */
  get resumeFrom() { return this.delivered; }

  /** ResumeSession answered: counting goes on from `position`. Returns whether
   * notifications were lost (the bridge said gap, or it resumed past what we have). */
  resumed(reply) {
    const position = Number.isInteger(reply.position) ? reply.position : this.delivered;
    this.received = position;
    let gap = reply.gap === true;
    if (!gap && position > this.delivered) gap = true;
    if (gap) this.delivered = position;
    return gap;
  }
}

const WATCHES = {
  "173,1": ["queue", "queue:"], "171,2": ["users", "status:"],
  "175,1": ["workgroup", "statistics:"],
};
const UNWATCHES = { "173,2": "173,1", "171,3": "171,2", "175,2": "175,1" };

/** The page's watches by topic (queue:Sales, status:alice, statistics:Support), in the
 * order first asked, as smbridge/client/watchset.py keeps them. */
export class WatchSet {
  constructor() { this.requests = new Map(); }

  get topics() { return [...this.requests.keys()]; }

  /** The topics a watch or unwatch request names (empty for anything else). */
  static topicsOf([objectType, eventId], body) {
    let key = `${objectType},${eventId}`;
    key = UNWATCHES[key] || key;
    const spec = WATCHES[key];
    if (!spec) return [];
    const [field, prefix] = spec;
    const value = body[field];
    if (field === "users") {
      if (!Array.isArray(value)) return [];
      return value.filter((u) => typeof u === "string").map((u) => prefix + u);
    }
    return typeof value === "string" ? [prefix + value] : [];
  }

  /** Remember a watch request; returns the topics that are new (to undo a refusal). */
  record(message, body) {
    const key = message.join(",");
    if (!WATCHES[key]) return [];
    const fresh = [];
    const topics = WatchSet.topicsOf(message, body);
    topics.forEach((topic, i) => {
      if (!this.requests.has(topic)) fresh.push(topic);
      const kept = key === "171,2" ? { users: [body.users.filter((u) => typeof u === "string")[i]] }
        : { ...body };
      if (key !== "171,2" || !this.requests.has(topic)) this.requests.set(topic, [message, kept]);
    });
    return fresh;
  }

  /** An unwatch: forget the topics it names. */
  forget(message, body) {
    if (UNWATCHES[message.join(",")]) this.discard(WatchSet.topicsOf(message, body));
  }

  discard(topics) { for (const t of topics) this.requests.delete(t); }

  /** The requests that re-establish every watch: one WatchStatus for all users. */
  restoreRequests() {
    const out = [];
    let users = null;
    for (const [message, body] of this.requests.values()) {
      if (message.join(",") === "171,2") {
        if (users === null) {
          users = [];
          out.push([MESSAGES.WATCH_STATUS, { users }]);
        }
        users.push(...body.users);
      } else {
        out.push([message, body]);
      }
    }
    return out;
  }

  /** A watch reply as {topic: snapshot} (WatchStatus answers {users: [...]}). */
  snapshots(message, body, reply) {
    const topics = WatchSet.topicsOf(message, body);
    const out = {};
    const users = reply && reply.users;
    topics.forEach((t, i) => {
      const each = message.join(",") === "171,2" && Array.isArray(users)
        && users.length === topics.length;
      out[t] = each ? users[i] : reply;
    });
    return out;
  }
}

/** Every entry of directory `name` (GetDirectory paging, docs/protocol.md): follows `next`
 * until `more` is false; if `version` changes between pages the walk starts again (at most
 * `tries` times), as smbridge/client/directory.py does. `request(body)` sends GetDirectory. */
export async function readDirectory(request, name, { limit = null, tries = 5 } = {}) {
  for (let attempt = 0; attempt < tries; attempt += 1) {
    const body = limit === null ? { name } : { name, limit };
    const first = await request(body);
    const entries = [...(first.entries || [])];
    let page = first;
    let same = true;
    for (let n = 0; page.more && n < 100000; n += 1) {
      page = await request({ ...body, offset: page.next });
      if (page.version !== first.version) { same = false; break; }
      entries.push(...(page.entries || []));
    }
    if (same) {
      return { name: first.name ?? name, entries, total: first.total ?? entries.length,
        version: first.version };
    }
  }
  throw new SmbridgeError("directory-changing",
    `directory ${name} changed during each of ${tries} reads; try again later`);
}

/** A watch reply with `more: true` made whole: its items, then the `added` items of the
 * `continued` change events that followed it (docs/protocol.md, "Large answers"), in order. */
export function gatherSnapshot(reply, tail, field) {
  const whole = { ...reply, [field]: [...(reply[field] || [])] };
  delete whole.more;
  for (const part of tail) whole[field].push(...(part.added || []));
  return whole;
}
