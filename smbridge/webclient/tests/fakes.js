import { Decoder, KIND, encode } from "../codec.js";

// A clock the tests advance by hand (the SDK's timers take an injected clock).
export class FakeClock {
  constructor() {
    this.now = 0;
    this.calls = new Map();
    this.next = 1;
  }

  setTimeout(fn, ms) {
    const id = this.next++;
    this.calls.set(id, { at: this.now + ms, fn });
    return id;
  }

  clearTimeout(id) { this.calls.delete(id); }

  advance(ms) {
    this.now += ms;
    for (const [id, call] of [...this.calls].sort((a, b) => a[1].at - b[1].at)) {
      if (call.at <= this.now && this.calls.delete(id)) call.fn();
    }
  }
}

/** Let every pending promise and queued message run. */
export async function settle(rounds = 20) {
  for (let i = 0; i < rounds; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Bridges reachable by URI, and the WebSocket class the Session is given to reach them. */
export class FakeNetwork {
  constructor() {
    this.bridges = new Map();
    this.dials = [];
    const network = this;
    this.WebSocket = class {
      constructor(url) {
        this.url = url;
        this.readyState = 0;
        this.decoder = new Decoder();
        network.dials.push(url.split("?")[0]);
        queueMicrotask(() => network._accept(this));
      }

      send(data) {
        if (this.readyState !== 1) return;
        const frames = this.decoder.feed(new Uint8Array(data));
        queueMicrotask(() => frames.forEach((f) => this.bridge && this.bridge._request(this, f)));
      }

      close(code = 1000) {
        if (this.readyState >= 2) return;
        this.readyState = 3;
        if (this.bridge) this.bridge._closed(this);
        queueMicrotask(() => this.onclose && this.onclose({ code }));
      }

      /** The server side sends a frame (one message). */
      push(kind, objectType, eventId, requestId, body) {
        if (this.readyState !== 1) return;
        const data = encode(kind, objectType, eventId, requestId, body);
        queueMicrotask(() => this.readyState === 1 && this.onmessage({ data }));
      }

      /** The network dies under this socket. */
      cut() {
        if (this.readyState >= 2) return;
        this.readyState = 3;
        if (this.bridge) this.bridge._closed(this);
        queueMicrotask(() => this.onclose && this.onclose({ code: 1006 }));
      }
    };
  }

  add(bridge) {
    this.bridges.set(bridge.uri, bridge);
    return bridge;
  }

  /** Names of the bridges dialed, in order. */
  get dialed() {
    return this.dials.map((u) => [...this.bridges.values()].find((b) => b.uri === u)?.name ?? u);
  }

  _accept(socket) {
    const bridge = this.bridges.get(socket.url.split("?")[0]);
    if (!bridge || bridge.down) {
      socket.readyState = 3;
      socket.onclose && socket.onclose({ code: 1006 });
      return;
    }
    socket.bridge = bridge;
    socket.readyState = 1;
    bridge.sockets.push(socket);
    socket.onopen && socket.onopen();
  }
}

let nextSession = 1;

/** A bridge that keeps sessions with their notification log (for ResumeSession). */
export class FakeBridge {
  constructor(name, { roster = [], location = "Indy", answer = null } = {}) {
    this.name = name;
    this.uri = `wss://proxy/${name}/session`;
    this.roster = roster;
    this.location = location;
    this.answer = answer; // (name, body) => error body or undefined, to refuse requests
    this.sessions = new Map();
    this.sockets = [];
    this.requests = [];
    this.down = false;
    this.silent = new Set(); // request names left unanswered
    this.pieces = new Map(); // queue -> [first items, tail items...]: a snapshot in pieces
  }

  _closed(socket) {
    for (const s of this.sessions.values()) if (s.socket === socket) s.socket = null;
  }

  _request(socket, frame) {
    const names = { "168,1": "CreateSession", "168,2": "DestroySession", "168,3": "Heartbeat",
      "168,5": "ResumeSession", "173,1": "WatchQueue", "173,2": "UnwatchQueue" };
    const name = names[`${frame.objectType},${frame.eventId}`] || "Other";
    this.requests.push([name, frame.body]);
    if (this.silent.has(name)) return;
    const reply = (body) => socket.push(KIND.RESPONSE, frame.objectType, frame.eventId, frame.requestId, body);
    const refused = this.answer && this.answer(name, frame.body);
    if (refused) {
      socket.push(KIND.ERROR, frame.objectType, frame.eventId, frame.requestId, refused);
      return;
    }
    const session = [...this.sessions.values()].find((s) => s.socket === socket);
    if (name === "CreateSession") {
      const id = `${this.name}-${nextSession++}`;
      this.sessions.set(id, { id, socket, log: [], watches: [] });
      reply({ sessionId: id, resumeToken: `token-${id}`, heartbeatInterval: 10,
        sessionTimeout: 1800, server: { name: this.name }, roster: this.roster,
        location: this.location });
    } else if (name === "ResumeSession") {
      const s = this.sessions.get(frame.body.sessionId);
      if (!s || frame.body.resumeToken !== `token-${s.id}`) {
        socket.push(KIND.ERROR, 168, 5, frame.requestId, { code: "unknown-session", message: "gone" });
        return;
      }
      s.socket = socket;
      const from = this.replayFrom ?? frame.body.received;
      reply({ sessionId: s.id, resumed: true, gap: false, position: from });
      s.log.slice(from).forEach((n) => socket.push(KIND.NOTIFICATION, ...n));
    } else if (name === "DestroySession") {
      if (session) this.sessions.delete(session.id);
      reply({});
    } else if (name === "WatchQueue" && this.pieces.has(frame.body.queue)) {
      session.watches.push(frame.body.queue);
      const queue = frame.body.queue;
      const [first, ...tail] = this.pieces.get(queue);
      reply({ queue, interactions: first, more: true });
      tail.forEach((added, i) => this.notify(session.id, 173, 3,
        { queue, added, changed: [], removed: [], continued: true, more: i < tail.length - 1 }));
    } else if (name === "WatchQueue") {
      session.watches.push(frame.body.queue);
      reply({ queue: frame.body.queue, interactions: [{ id: `at-${this.name}` }] });
    } else if (name === "Heartbeat") {
      reply({ sessionUpdated: true, haSwitchover: false });
    } else {
      reply({});
    }
  }

  /** A notification to session `id` (logged for replay; sent when it is attached). */
  notify(id, objectType, eventId, body) {
    const s = this.sessions.get(id);
    s.log.push([objectType, eventId, 0, body]);
    if (s.socket) s.socket.push(KIND.NOTIFICATION, objectType, eventId, 0, body);
  }
}
