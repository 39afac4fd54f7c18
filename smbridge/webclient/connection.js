// One WebSocket to one bridge: frames out, requests matched to answers, notifications
// handed to one handler (held until it is set, so none is lost between a logon's
// answer and the session taking over the connection).
import { Decoder, KIND, encode } from "./codec.js";
import { REAL_CLOCK, RequestTable, SmbridgeError } from "./core.js";

export class Connection {
  constructor(socket, uri, clock = REAL_CLOCK) {
    this.socket = socket;
    this.uri = uri;
    this.requests = new RequestTable(clock);
    this.decoder = new Decoder();
    this.isOpen = socket.readyState === 1;
    this.held = [];
    this._onNotification = null;
    this._onClose = null;
    this.closeReason = null;
    this.closed = new Promise((resolve) => { this._resolveClosed = resolve; });
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this._message(event.data);
    socket.onclose = (event) =>
      this._ended(`closed (${event.code}${event.reason ? ` ${event.reason}` : ""})`);
    socket.onerror = () => {};
  }

  /** Dial `uri`; resolves with an open Connection, rejects SmbridgeError connect-failed. */
  static open(uri, { WebSocket = globalThis.WebSocket, clock = REAL_CLOCK, timeout = 10 } = {}) {
    return new Promise((resolve, reject) => {
      let socket;
      try {
        socket = new WebSocket(uri);
      } catch (error) {
        reject(new SmbridgeError("connect-failed", `cannot open ${uri}: ${error.message}`));
        return;
      }
      socket.binaryType = "arraybuffer";
      const timer = clock.setTimeout(() => {
        socket.onopen = socket.onclose = null;
        socket.close();
        reject(new SmbridgeError("connect-timeout", `no connection to ${uri} within ${timeout}s`));
      }, timeout * 1000);
      socket.onopen = () => {
        clock.clearTimeout(timer);
        resolve(new Connection(socket, uri, clock));
      };
      socket.onerror = () => {};
      socket.onclose = (event) => {
        clock.clearTimeout(timer);
        reject(new SmbridgeError("connect-failed", `cannot open ${uri} (${event.code})`));
      };
    });
  }

  set onNotification(handler) {
    this._onNotification = handler;
    const held = this.held;
    this.held = [];
    for (const frame of held) if (this._onNotification === handler) handler(frame);
  }

  /** `handler(reason)` once, when the connection ends (at once if it already has). */
  set onClose(handler) {
    this._onClose = handler;
    if (!this.isOpen && this.closeReason !== null) handler(this.closeReason);
  }

  /** Send a request; resolves with the response payload, rejects SmbridgeError. */
  request([objectType, eventId], body = {}, timeout = null) {
    if (!this.isOpen) return Promise.reject(new SmbridgeError("not-connected", "not connected"));
    const { requestId, promise } = this.requests.add(timeout);
    this.socket.send(encode(KIND.REQUEST, objectType, eventId, requestId, body));
    return promise;
  }

  /** Close with a close handshake (the session lingers on the bridge unless logged off). */
  close(code = 1000, reason = "") {
    if (this.socket.readyState < 2) this.socket.close(code, reason);
    this._ended(`closed by the client (${code})`);
    return this.closed;
  }

  /** Give the connection up now, as a dead network would: no waiting for the close
   * handshake (a heartbeat unanswered; tests use it to cut the connection). */
  drop(reason = "dropped") {
    if (this.socket.readyState < 2) this.socket.close(4000, "dropped");
    this._ended(reason);
  }

  _message(data) {
    if (!(data instanceof ArrayBuffer)) {
      this.drop("text message from the server");
      return;
    }
    let frames;
    try {
      frames = this.decoder.feed(new Uint8Array(data));
    } catch (error) {
      this.drop(`bad frame: ${error.message}`);
      return;
    }
    for (const frame of frames) {
      if (!this.isOpen) return;
      if (frame.kind === KIND.NOTIFICATION) {
        if (this._onNotification) this._onNotification(frame);
        else this.held.push(frame);
      } else {
        this.requests.settle(frame);
      }
    }
  }

  _ended(reason) {
    if (this.closeReason !== null) return;
    this.isOpen = false;
    this.closeReason = reason;
    this.requests.failAll(new SmbridgeError("connection-lost", reason));
    this._resolveClosed(reason);
    if (this._onClose) this._onClose(reason);
  }
}
