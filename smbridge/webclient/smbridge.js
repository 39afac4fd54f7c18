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
//
// This module is the entry point: Session (its recovery steps here, its core in
// session_core.js) and every public name of codec.js, core.js, order.js, connection.js.
import { MESSAGES } from "./codec.js";
import { SmbridgeError, WatchSet, gatherSnapshot } from "./core.js";
import {
  CLIENT_TYPE, attemptGroups, migratePlan, reconnectPlan, resumeDelays, withClientType,
} from "./order.js";
import { CONNECTION_CODES, SessionCore } from "./session_core.js";

export * from "./codec.js";
export * from "./core.js";
export * from "./order.js";
export { Connection } from "./connection.js";
export { CONNECTION_CODES, retryAfter, sessionUrl } from "./session_core.js";

/** One logical session (options in smbridge.d.ts): SessionCore's state, API and
 * connections, and here the recovery steps: resume, a fresh logon, Migrate. */
export class Session extends SessionCore {
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
        rounds += 1; // tenant-limit too: limits free up, the next plan comes after its pause
        if (this.rounds !== null && rounds >= this.rounds) {
          this._end(error.code === "tenant-limit" ? "tenant-limit" : "no-bridge");
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
        if (message.join(",") === MESSAGES.WATCH_QUEUE.join(",") && reply.more === true) {
          reply = await this._timed(connection, this._wholeQueue(connection, reply));
        }
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

  /** A restored WatchQueue answered in pieces, made whole from the `continued` events held
   * meanwhile (they still reach the page after `resynchronised`), as watchQueue does. */
  async _wholeQueue(connection, reply) {
    for (;;) {
      const tail = this._held.filter((f) => f.name === "QueueChanged" && f.body.continued === true
        && f.body.queue === reply.queue).map((f) => f.body);
      if (tail.length > 0 && tail[tail.length - 1].more !== true) {
        return gatherSnapshot(reply, tail, "interactions");
      }
      if (!connection.isOpen || connection !== this.connection || this.ended) {
        throw new SmbridgeError("connection-lost", "the snapshot was cut off");
      }
      await new Promise((resolve) => { this._heldWaiter = resolve; });
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
