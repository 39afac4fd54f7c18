// smbridge browser SDK: one logical session that survives dropped connections, Migrate
// and switchovers, over binary WebSocket frames (docs/client.md, PROTOCOL §2-4).
// An ES module without dependencies: import { Session } from "./smbridge.js".
//
// The behaviour is the Python SessionKeeper's (smbridge/client/keeper.py):
// - dropped connection: ResumeSession on the same bridge, a few times within the linger
//   time, sending `received`; replayed notifications are delivered once, in order;
// - session gone: a fresh logon by the reconnect order (the top group several times, then
//   the full roster, each entry once a pass), watches restored, `resynchronised`;
//   `logon-failed` stops it; a redirect's roster is followed;
// - Migrate: logon on the first bridge of its roster that takes it, watches restored,
//   then DestroySession of the old session.
import { MESSAGES, nameOf } from "./codec.js";
import { Connection } from "./connection.js";
import { REAL_CLOCK, ReceivedCounter, SmbridgeError, WatchSet } from "./core.js";
import {
  CLIENT_TYPE, DEFAULT_BACKOFF, RECONNECT_TOP_TRIES, attemptGroups, migratePlan,
  reconnectPlan, resumeDelays, uriKey, withClientType,
} from "./order.js";

export * from "./codec.js";
export * from "./core.js";
export * from "./order.js";
export { Connection } from "./connection.js";

/** Failures that say nothing about the session: the connection, not the bridge's answer. */
export const CONNECTION_CODES = new Set(["connection-lost", "not-connected", "connect-timeout",
  "connect-failed", "request-timeout", "bad-frame"]);
const FINAL_REASONS = new Set(["logout", "expired"]);
const THROTTLED_RETRIES = 3;
const MAX_RETRY_AFTER = 300;

/** The pause (seconds) a logon-throttled answer asks for: 1 when it names none. */
export function retryAfter(body) {
  const value = body && body.retryAfter;
  if (typeof value !== "number" || Number.isNaN(value)) return 1;
  return Math.min(Math.max(value, 0), MAX_RETRY_AFTER);
}
const KEPT = ["roster", "selectionRule", "location"];

/** wss://<this page's host>/[prefix/]<server>/session (ws:// for an http page). */
export function sessionUrl(location, server, prefix = "") {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const path = [...(prefix || "").split("/"), server, "session"]
    .filter((s) => s).map(encodeURIComponent).join("/");
  return withClientType(`${scheme}://${location.host}/${path}`);
}

export class Session extends EventTarget {
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

  watchQueue(queue) { return this.request(MESSAGES.WATCH_QUEUE, { queue }); }
  unwatchQueue(queue) { return this.request(MESSAGES.UNWATCH_QUEUE, { queue }); }
  watchStatus(users) { return this.request(MESSAGES.WATCH_STATUS, { users }); }
  unwatchStatus(users) { return this.request(MESSAGES.UNWATCH_STATUS, { users }); }
  watchStatistics(workgroup, stats) {
    return this.request(MESSAGES.WATCH_STATISTICS, { workgroup, stats });
  }
  unwatchStatistics(workgroup) { return this.request(MESSAGES.UNWATCH_STATISTICS, { workgroup }); }
  getVersion() { return this.request(MESSAGES.GET_VERSION, {}); }
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
   * fails at once, logon-throttled tries the same target again after its retryAfter (3
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
        if (error.code === "logon-failed") throw error;
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
    connection.onClose = (reason) => this._dropped(connection, reason);
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
      return;
    }
    this._deliver(frame);
    this._actOn(connection, frame);
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

  // --- resume -----------------------------------------------------------------------
  async _resume() {
    const { sessionId, resumeToken } = this.reply;
    if (sessionId && resumeToken && this._target) {
      for (const delay of resumeDelays(this.linger, this.resumeTries, this.backoff)) {
        await this._sleep(delay);
        if (this.ended) return;
        let connection;
        try {
          connection = await this._dial(withClientType(this._target.uri,
            this.options.clientType || CLIENT_TYPE));
        } catch {
          continue;
        }
        let reply;
        try {
          reply = await this._timed(connection, connection.request(MESSAGES.RESUME_SESSION,
            { sessionId, resumeToken, received: this.counter.resumeFrom }));
        } catch (error) {
          connection.close();
          if (CONNECTION_CODES.has(error.code) || error.retryable) continue;
          break; // unknown-session, bad-resume-token: log on afresh
        }
        if (this.ended) {
          await connection.request(MESSAGES.DESTROY_SESSION, {}).catch(() => {});
          connection.close();
          return;
        }
        const gap = this.counter.resumed(reply);
        this._attach(connection, { ...this.reply, ...reply }, this._target);
        this._set("connected");
        this._emit("resumed", { sessionId: this.sessionId, server: this.server, gap });
        if (gap) {
          this._emit("resynchronised", { reason: "gap", sessionId: this.sessionId,
            server: this.server, snapshots: reply.snapshots || {} });
        }
        return;
      }
    }
    if (!this.ended) {
      this._set("relogging");
      await this._relogon();
    }
  }

  // --- a fresh logon ----------------------------------------------------------------
  _redirected(error, leaving = null) {
    return attemptGroups(error.body, this.uri, this.random, this.options.uriFor).flat()
      .filter((t) => leaving === null || t.name !== leaving);
  }

  async _relogon() {
    let rounds = 0;
    let firstPass = 0;
    while (this.state === "relogging") {
      const groups = attemptGroups(this._kept, this.uri, this.random, this.options.uriFor);
      const plan = reconnectPlan(groups, this.topTries, this.backoff, firstPass);
      firstPass = plan.length ? plan[plan.length - 1].pass + 1 : firstPass + 1;
      let landing;
      try {
        landing = await this._tryInOrder(plan, (e) => this._redirected(e));
      } catch (error) {
        if (this.ended) return;
        if (error.code === "logon-failed") {
          this._end("logon-failed");
          return;
        }
        rounds += 1;
        if (this.rounds !== null && rounds >= this.rounds) {
          this._end("no-bridge");
          return;
        }
        continue;
      }
      await this._fresh(landing, "relogged");
    }
  }

  async _fresh(landing, kind, reason = null) {
    const connection = landing.connection;
    if (this.ended) {
      await connection.request(MESSAGES.DESTROY_SESSION, {}).catch(() => {});
      connection.close();
      return;
    }
    this._held = [];
    this.counter.fresh();
    this._attach(connection, landing.reply, landing.target);
    const snapshots = {};
    for (const [message, body] of this.watches.restoreRequests()) {
      let reply;
      try {
        reply = await connection.request(message, body, this.requestTimeout);
      } catch (error) {
        if (CONNECTION_CODES.has(error.code)) break;
        this.watches.discard(WatchSet.topicsOf(message, body));
        continue;
      }
      Object.assign(snapshots, this.watches.snapshots(message, body, reply));
    }
    const held = this._held;
    this._held = null;
    if (this.ended) return;
    if (!connection.isOpen) {
      this._set("relogging");
      if (kind !== "relogged") this._run(this._relogon());
      return;
    }
    this._set("connected");
    const detail = { sessionId: this.sessionId, server: this.server };
    this._emit(kind, { ...detail, reason });
    this._emit("resynchronised", { ...detail, reason: kind, snapshots });
    for (const frame of held) {
      if (connection !== this.connection) break;
      this._deliver(frame);
      this._actOn(connection, frame);
    }
  }

  // --- Migrate ----------------------------------------------------------------------
  async _migrate(old, body) {
    const reason = String(body.reason || "migrate");
    const leaving = (this.server || {}).name ?? null;
    const plan = migratePlan(body.roster, leaving, this.options.uriFor);
    let landing;
    try {
      landing = await this._tryInOrder(plan, (e) => this._redirected(e, leaving));
    } catch (error) {
      if (this.ended) return;
      if (old.isOpen) {
        this._set("connected"); // stay where we are
      } else {
        this._set("relogging");
        await this._relogon();
      }
      return;
    }
    await this._fresh(landing, "migrated", reason);
    if (old !== this.connection && old.isOpen) {
      await old.request(MESSAGES.DESTROY_SESSION, {}, this.requestTimeout).catch(() => {});
      old.close();
    }
  }
}
