// smbridge protocol in the browser (docs/protocol.md): frames over a binary WebSocket.
// Frame: u32 length (10 + payload) | u8 version 1 | u8 kind | u16 objectType | u16 eventId
//        | u32 requestId | UTF-8 JSON payload. All integers big-endian.
"use strict";

const Smbridge = (() => {
  const KIND = { REQUEST: 1, RESPONSE: 2, NOTIFICATION: 3, ERROR: 4 };
  const MESSAGES = {
    CREATE_SESSION: [168, 1], DESTROY_SESSION: [168, 2], HEARTBEAT: [168, 3],
    GET_VERSION: [168, 4], WATCH_QUEUE: [173, 1], UNWATCH_QUEUE: [173, 2],
    GET_RESOURCE_URI: [177, 1],
  };
  const NAMES = {
    "168,10": "TerminationImminent", "168,11": "SessionTerminated", "168,12": "Switchover",
    "168,13": "Migrate", "169,2": "RosterChanged", "171,4": "StatusChanged",
    "172,5": "InteractionChanged", "173,3": "QueueChanged", "173,4": "MyInteractionsChanged",
    "173,5": "QueueSuspended", "173,6": "QueueUnsuspended", "174,3": "DirectoryChanged",
    "175,3": "StatisticsChanged", "190,1": "NotificationSuppressed",
  };
  const MAX_FRAME = 1 << 20;
  const encoder = new TextEncoder();
  const decoder = new TextDecoder("utf-8", { fatal: true });

  function encode(kind, objectType, eventId, requestId, body) {
    const payload = encoder.encode(JSON.stringify(body || {}));
    const buffer = new ArrayBuffer(14 + payload.length);
    const view = new DataView(buffer);
    view.setUint32(0, 10 + payload.length);
    view.setUint8(4, 1);
    view.setUint8(5, kind);
    view.setUint16(6, objectType);
    view.setUint16(8, eventId);
    view.setUint32(10, requestId);
    new Uint8Array(buffer, 14).set(payload);
    return buffer;
  }

  // Whole frames out of a byte stream, however it was split into messages.
  class Decoder {
    constructor() { this.buffer = new Uint8Array(0); }
    feed(bytes) {
      const joined = new Uint8Array(this.buffer.length + bytes.length);
      joined.set(this.buffer);
      joined.set(bytes, this.buffer.length);
      const frames = [];
      let pos = 0;
      while (joined.length - pos >= 4) {
        const view = new DataView(joined.buffer, joined.byteOffset + pos);
        const length = view.getUint32(0);
        if (length < 10 || length > MAX_FRAME) throw new Error(`bad frame length ${length}`);
        if (joined.length - pos < 4 + length) break;
        const raw = joined.subarray(pos + 14, pos + 4 + length);
        frames.push({
          kind: view.getUint8(5),
          objectType: view.getUint16(6),
          eventId: view.getUint16(8),
          requestId: view.getUint32(10),
          body: raw.length ? JSON.parse(decoder.decode(raw)) : {},
        });
        pos += 4 + length;
      }
      this.buffer = joined.slice(pos);
      return frames;
    }
  }

  class Client {
    constructor(url) {
      this.url = url;
      this.nextId = 1;
      this.pending = new Map();
      this.listeners = [];
      this.decoder = new Decoder();
      this.heartbeatTimer = null;
      this.sessionId = null;
      this.closed = new Promise((resolve) => { this._closed = resolve; });
    }

    open() {
      return new Promise((resolve, reject) => {
        const ws = new WebSocket(this.url);
        ws.binaryType = "arraybuffer";
        ws.onopen = () => resolve(this);
        ws.onerror = () => reject(new Error(`cannot open ${this.url}`));
        ws.onmessage = (event) => this._message(event.data);
        ws.onclose = (event) => this._close(event);
        this.ws = ws;
      });
    }

    request([objectType, eventId], body) {
      const requestId = this.nextId++;
      return new Promise((resolve, reject) => {
        this.pending.set(requestId, { resolve, reject });
        this.ws.send(encode(KIND.REQUEST, objectType, eventId, requestId, body));
      });
    }

    onNotification(listener) { this.listeners.push(listener); }

    async logon(user, password, extra) {
      const reply = await this.request(MESSAGES.CREATE_SESSION, {
        user, password, clientApp: "smbridge-webclient", clientId: "browser",
        clientVersion: "1", ...(extra || {}),
      });
      this.sessionId = reply.sessionId;
      const every = Math.max(1, reply.heartbeatInterval || 60) * 1000;
      this.heartbeatTimer = setInterval(() => this.request(MESSAGES.HEARTBEAT, {}).catch(() => {}), every);
      return reply;
    }

    watchQueue(queue) { return this.request(MESSAGES.WATCH_QUEUE, { queue }); }

    async logoff() {
      clearInterval(this.heartbeatTimer);
      if (this.sessionId !== null) {
        this.sessionId = null;
        await this.request(MESSAGES.DESTROY_SESSION, {}).catch(() => {});
      }
      this.ws.close(1000);
      return this.closed;
    }

    _message(data) {
      if (!(data instanceof ArrayBuffer)) {
        this.ws.close(1003, "binary messages only");
        return;
      }
      for (const frame of this.decoder.feed(new Uint8Array(data))) {
        if (frame.kind === KIND.NOTIFICATION) {
          frame.name = NAMES[`${frame.objectType},${frame.eventId}`] ||
            `(${frame.objectType},${frame.eventId})`;
          if (frame.name === "SessionTerminated") clearInterval(this.heartbeatTimer);
          for (const listener of this.listeners) listener(frame);
          continue;
        }
        const waiter = this.pending.get(frame.requestId);
        if (!waiter) continue;
        this.pending.delete(frame.requestId);
        if (frame.kind === KIND.ERROR) {
          const error = new Error(`${frame.body.code}: ${frame.body.message}`);
          error.body = frame.body;
          waiter.reject(error);
        } else {
          waiter.resolve(frame.body);
        }
      }
    }

    _close(event) {
      clearInterval(this.heartbeatTimer);
      for (const waiter of this.pending.values()) {
        waiter.reject(new Error(`connection closed (${event.code})`));
      }
      this.pending.clear();
      this._closed(event);
    }
  }

  // wss://<this host>/[prefix/]<server>/session, with the client type as a query
  // parameter because a browser cannot set headers on a WebSocket.
  function sessionUrl(location, server, prefix) {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const path = [...(prefix || "").split("/"), server, "session"]
      .filter((s) => s).map(encodeURIComponent).join("/");
    return `${scheme}://${location.host}/${path}?inin_client_type=smbridge-webclient`;
  }

  return { KIND, MESSAGES, Client, Decoder, encode, sessionUrl };
})();
