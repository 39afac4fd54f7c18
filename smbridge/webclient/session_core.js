// The core of the browser SDK's Session (smbridge.js): its state, public API, events and
// connections: the Python SessionKeeper's keeper_state.py and keeper_core.py. The recovery
// steps (resume, a fresh logon, Migrate) are Session's, in smbridge.js; this module is
// internal (smbridge.js re-exports what pages use).
import { MESSAGES, nameOf } from "./codec.js";
import { Connection } from "./connection.js";
import {
  REAL_CLOCK, ReceivedCounter, SmbridgeError, WatchSet, gatherSnapshot, readDirectory,
} from "./core.js";
import {
  CLIENT_TYPE, DEFAULT_BACKOFF, RECONNECT_TOP_TRIES, attemptGroups, uriKey, withClientType,
} from "./order.js";

/** Failures that say nothing about the session: the connection, not the bridge's answer. */
export const CONNECTION_CODES = new Set(["connection-lost", "not-connected", "connect-timeout",
  "connect-failed", "request-timeout", "bad-frame"]);
export const FINAL_REASONS = new Set(["logout", "expired"]);
/** Answers that hold at every bridge of the site: the logon fails at once, no other bridge
 * is tried (tenant-limit: the tenant is over a limit; a re-logon tries again later). */
export const SITE_WIDE_REFUSALS = new Set(["logon-failed", "tenant-limit"]);
const THROTTLED_RETRIES = 3;
const MAX_RETRY_AFTER = 300;

/** The pause (seconds) a logon-throttled answer asks for: 1 when it names none. */
export function retryAfter(body) {
  const value = body && body.retryAfter;
  if (typeof value !== "number" || Number.isNaN(value)) return 1;
  return Math.min(Math.max(value, 0), MAX_RETRY_AFTER);
}
export const KEPT = ["roster", "selectionRule", "location"];

/** wss://<this page's host>/[prefix/]<server>/session (ws:// for an http page). */
export function sessionUrl(location, server, prefix = "") {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const path = [...(prefix || "").split("/"), server, "session"]
    .filter((s) => s).map(encodeURIComponent).join("/");
  return withClientType(`${scheme}://${location.host}/${path}`);
}

/** Session without its recovery steps (see smbridge.js). */
export class SessionCore extends EventTarget {
  /** `uri`: the wss:// URI to log on at first; `user`, `password`; options in smbridge.d.ts. */
  constructor(uri, user, password, options = {}) {
    super();
    this.uri = withClientType(uri, options.clientType || CLIENT_TYPE);
    this.user = user;
    this._password = password; // memory only, for automatic logons; never logged
    this.options = options;
    this.clock = options.clock || REAL_CLOCK;
    this.random = options.random || Math.random;
    this.topTries = options.topTries ?? RECONNECT_TOP_TRIES;
    this.backoff = options.backoff || DEFAULT_BACKOFF;
    this.linger = options.linger ?? 120;
    this.resumeTries = options.resumeTries ?? 4;
    this.rounds = options.rounds ?? null;
    this.heartbeatTimeout = options.heartbeatTimeout ?? 60;
    this.requestTimeout = options.requestTimeout ?? 30;
    this.retryDelay = options.retryDelay ?? 1;
    this.state = "idle";
    this.connection = null;
    this.reply = {};
    this.watches = new WatchSet();
    this.counter = new ReceivedCounter();
    this._kept = null;
    this._target = null;
    this._held = null;
    this._terminated = null;
    this._waiters = [];
    this._beat = null;
    this._heldWaiter = null; // woken when a frame is held or the connection closes
  }

  get sessionId() { return this.reply.sessionId ?? null; }
  get server() { return this.reply.server ?? null; }
  get ended() { return this.state === "ended"; }

  /** The first logon (the URI given, then a redirect's roster); resolves with the reply. */
  async start() {
    if (this.state !== "idle") throw new Error(`already started (${this.state})`);
    let landing;
    try {
      landing = await this._tryInOrder([{ delay: 0, target: { uri: this.uri, name: null } }],
        (e) => attemptGroups(e.body, null, this.random, this.options.uriFor).flat());
    } catch (error) {
      this._end(error.code || "unexpected");
      throw error;
    }
    this._attach(landing.connection, landing.reply, landing.target);
    this._set("connected");
    return landing.reply;
  }

  /** Any request [objectType, eventId]; waits while the session reconnects. A watch is
   * remembered until unwatched (or refused) and re-issued on a fresh session. */
  async request(message, body = {}, { timeout = this.requestTimeout } = {}) {
    if (this.ended) throw new SmbridgeError("session-ended", "the session has ended");
    const payload = { ...body };
    const fresh = this.watches.record(message, payload);
    this.watches.forget(message, payload);
    try {
      await this._whenConnected();
      return await this._send(message, payload, timeout);
    } catch (error) {
      if (!CONNECTION_CODES.has(error.code)) this.watches.discard(fresh);
      throw error;
    }
  }

  /** WatchQueue; resolves with the whole snapshot, a large one's `continued` tail gathered. */
  async watchQueue(queue) {
    const tail = [];
    let wake = () => {};
    const last = () => tail.length > 0 && tail[tail.length - 1].more !== true;
    const collect = ({ detail }) => {
      const b = detail.body || {};
      if (detail.name === "QueueChanged" && b.continued === true && b.queue === queue) {
        tail.push(b);
        if (last()) wake();
      }
    };
    const stop = () => wake(new SmbridgeError("connection-lost", "the snapshot was cut off"));
    this.addEventListener("notification", collect);
    this.addEventListener("resynchronised", stop);
    this.addEventListener("ended", stop);
    try {
      const reply = await this.request(MESSAGES.WATCH_QUEUE, { queue });
      if (reply.more !== true) return reply;
      if (!last()) {
        const error = await new Promise((resolve) => { wake = resolve; });
        if (error) throw error;
      }
      return gatherSnapshot(reply, tail, "interactions");
    } finally {
      this.removeEventListener("notification", collect);
      this.removeEventListener("resynchronised", stop);
      this.removeEventListener("ended", stop);
    }
  }
  unwatchQueue(queue) { return this.request(MESSAGES.UNWATCH_QUEUE, { queue }); }
  watchStatus(users) { return this.request(MESSAGES.WATCH_STATUS, { users }); }
  unwatchStatus(users) { return this.request(MESSAGES.UNWATCH_STATUS, { users }); }
  watchStatistics(workgroup, stats) {
    return this.request(MESSAGES.WATCH_STATISTICS, { workgroup, stats });
  }
  unwatchStatistics(workgroup) { return this.request(MESSAGES.UNWATCH_STATISTICS, { workgroup }); }
  getVersion() { return this.request(MESSAGES.GET_VERSION, {}); }
  /** Every entry of a directory, its pages followed: { name, entries, total, version }. */
  getDirectory(name, options = {}) {
    return readDirectory((body) => this.request(MESSAGES.GET_DIRECTORY, body), name, options);
  }
  /** One GetDirectory page: { name, entries, offset, total, next, more, version }. */
  getDirectoryPage(name, offset = 0, limit = null) {
    const body = limit === null ? { name, offset } : { name, offset, limit };
    return this.request(MESSAGES.GET_DIRECTORY, body);
  }
  getResourceUri(kind, path) { return this.request(MESSAGES.GET_RESOURCE_URI, { kind, path }); }

  /** End for good: stop reconnecting, DestroySession, close. */
  async logoff() {
    const connection = this.connection;
    this._end("logoff");
    if (connection === null) return;
    if (connection.isOpen) {
      await connection.request(MESSAGES.DESTROY_SESSION, {}, this.requestTimeout).catch(() => {});
    }
    await connection.close(1000);
  }

  // --- events ----------------------------------------------------------------------
  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _set(to) {
    this.state = to;
    this._emit("statechange", { state: to });
    if (to === "connected") {
      const waiters = this._waiters;
      this._waiters = [];
      for (const waiter of waiters) waiter.resolve();
    }
  }

  _whenConnected() {
    if (this.state === "connected") return Promise.resolve();
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  _end(reason) {
    if (this.ended) return;
    this.state = "ended";
    this._stopHeartbeats();
    const waiters = this._waiters;
    this._waiters = [];
    for (const waiter of waiters) {
      waiter.reject(new SmbridgeError("session-ended", `the session has ended (${reason})`));
    }
    this._emit("statechange", { state: "ended" });
    this._emit("ended", { reason, sessionId: this.sessionId });
  }

  _sleep(seconds) {
    return seconds > 0 ? new Promise((resolve) => this.clock.setTimeout(resolve, seconds * 1000))
      : Promise.resolve();
  }

  _run(work) {
    work.catch((error) => {
      console.error("smbridge session failed", error);
      this._end("unexpected");
    });
  }

  // --- connections ------------------------------------------------------------------
  async _send(message, body, timeout) {
    try {
      return await this.connection.request(message, body, timeout);
    } catch (error) {
      if (!(error instanceof SmbridgeError) || !error.retryable) throw error;
      await this._sleep(this.retryDelay);
      await this._whenConnected();
      return this.connection.request(message, body, timeout);
    }
  }

  async _dial(uri) {
    if (this.options.beforeDial) await this.options.beforeDial(uri);
    return Connection.open(uri, { WebSocket: this.options.WebSocket, clock: this.clock,
      timeout: this.options.connectTimeout ?? 10 });
  }

  _logon(connection) {
    const o = this.options;
    const body = {
      user: this.user, password: this._password, clientId: o.clientId || "browser",
      clientApp: o.clientApp || CLIENT_TYPE, clientVersion: o.clientVersion || "1",
      notifyImminent: o.notifyImminent ?? true,
    };
    for (const field of ["station", "host", "sessionTimeout", "minSessionTimeout"]) {
      if (o[field] != null) body[field] = o[field];
    }
    return this._timed(connection, connection.request(MESSAGES.CREATE_SESSION, body));
  }

  _timed(connection, promise) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = this.clock.setTimeout(() => {
        connection.drop("request-timeout");
        reject(new SmbridgeError("request-timeout", `no answer within ${this.requestTimeout}s`));
      }, this.requestTimeout * 1000);
    });
    return Promise.race([promise, timeout]).finally(() => this.clock.clearTimeout(timer));
  }

  /** Dial and log on along `plan` until one target takes it (PROTOCOL §4.4): logon-failed
   * and tenant-limit fail at once, logon-throttled tries the same target again after its retryAfter (3
   * times at most), a redirect puts its new targets next, anything else moves on. */
  async _tryInOrder(plan, redirect) {
    const order = [...plan];
    const tried = new Set();
    const attempts = [];
    const throttled = new Map();
    for (let i = 0; i < order.length;) {
      const attempt = order[i++];
      await this._sleep(attempt.delay);
      if (this.ended) throw new SmbridgeError("stopped", "the logon was given up");
      const target = attempt.target;
      tried.add(uriKey(target.uri));
      let connection;
      try {
        connection = await this._dial(withClientType(target.uri,
          this.options.clientType || CLIENT_TYPE));
      } catch (error) {
        attempts.push({ ...target, error: error.code || String(error) });
        continue;
      }
      try {
        const reply = await this._logon(connection);
        return { connection, reply, target, attempts };
      } catch (error) {
        connection.close();
        attempts.push({ ...target, error: error.code, reason: error.body && error.body.reason });
        if (SITE_WIDE_REFUSALS.has(error.code)) throw error;
        const times = throttled.get(uriKey(target.uri)) || 0;
        if (error.code === "logon-throttled" && times < THROTTLED_RETRIES) {
          throttled.set(uriKey(target.uri), times + 1); // no verdict on the password: again, later
          order.splice(i, 0, { delay: retryAfter(error.body), target, pass: attempt.pass });
          continue;
        }
        if (error.code === "redirect" && redirect) {
          const planned = new Set([...tried, ...order.slice(i).map((a) => uriKey(a.target.uri))]);
          const extra = redirect(error)
            .filter((t) => !planned.has(uriKey(t.uri)) && planned.add(uriKey(t.uri)))
            .map((t) => ({ delay: 0, target: t, pass: attempt.pass }));
          order.splice(i, 0, ...extra);
        }
      }
    }
    throw new SmbridgeError("no-bridge", "no bridge took the logon", { attempts });
  }

  _attach(connection, reply, target) {
    this.connection = connection;
    this.reply = reply;
    this._target = target;
    this._terminated = null;
    if (Array.isArray(reply.roster)) {
      this._kept = Object.fromEntries(KEPT.map((k) => [k, reply[k]]));
    }
    connection.onNotification = (frame) => this._frame(connection, frame);
    connection.onClose = (reason) => {
      this._wakeHeld();
      this._dropped(connection, reason);
    };
    this._startHeartbeats(connection, reply);
  }

  _frame(connection, frame) {
    if (connection !== this.connection) return; // one the session has left
    if (!this.counter.arrived()) return; // replayed after a resume: already delivered
    frame.name = nameOf(frame.objectType, frame.eventId);
    if (frame.name === "SessionTerminated") {
      this._terminated = String(frame.body.reason || "unknown");
    }
    if (this._held !== null) {
      this._held.push(frame);
      this._wakeHeld();
      return;
    }
    this._deliver(frame);
    this._actOn(connection, frame);
  }

  _wakeHeld() {
    const wake = this._heldWaiter;
    this._heldWaiter = null;
    if (wake !== null) wake();
  }

  _deliver(frame) {
    const detail = { name: frame.name, body: frame.body, frame, number: this.counter.delivered };
    this._emit("notification", detail);
    if (frame.name === "TerminationImminent") this._emit("terminationimminent", frame.body);
    if (frame.name === "Switchover") this._emit("switchover", frame.body);
  }

  _actOn(connection, frame) {
    if (this.state !== "connected" || connection !== this.connection) return;
    if (frame.name === "Migrate") {
      this._set("migrating");
      this._run(this._migrate(connection, frame.body));
    } else if (frame.name === "SessionTerminated") {
      connection.close(); // the session is over: act now, not when the bridge closes
    }
  }

  _dropped(connection, reason) {
    if (connection !== this.connection || this.state !== "connected") return;
    this._stopHeartbeats();
    this._emit("disconnected", { reason: this._terminated || "connection-lost", why: reason,
      sessionId: this.sessionId });
    if (FINAL_REASONS.has(this._terminated)) {
      this._end(`terminated:${this._terminated}`);
    } else if (this._terminated !== null) {
      this._set("relogging");
      this._run(this._relogon());
    } else {
      this._set("resuming");
      this._run(this._resume());
    }
  }

  // --- heartbeats ------------------------------------------------------------------
  _startHeartbeats(connection, reply) {
    this._stopHeartbeats();
    let interval = reply.heartbeatInterval;
    if (interval == null) interval = Math.min((reply.sessionTimeout || 1800) / 3, 300);
    const every = Math.max(Number(interval), 1) * 1000;
    const beat = () => {
      if (connection !== this.connection || !connection.isOpen) return;
      this._beat = this.clock.setTimeout(beat, every);
      connection.request(MESSAGES.HEARTBEAT, {}, this.heartbeatTimeout).then((answer) => {
        if (answer.haSwitchover === true) this._emit("switchover", { phase: "heartbeat" });
      }, (error) => {
        if (error.code === "request-timeout") connection.drop("heartbeat unanswered");
      });
    };
    this._beat = this.clock.setTimeout(beat, every);
  }

  _stopHeartbeats() {
    if (this._beat !== null) this.clock.clearTimeout(this._beat);
    this._beat = null;
  }

}
