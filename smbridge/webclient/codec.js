// Frames of the smbridge protocol (PROTOCOL §2), pure: no socket, no timers.
// Frame: u32 length (10 + payload) | u8 version 1 | u8 kind | u16 objectType | u16 eventId
//        | u32 requestId | UTF-8 JSON object payload. All integers big-endian.

export const KIND = Object.freeze({ REQUEST: 1, RESPONSE: 2, NOTIFICATION: 3, ERROR: 4 });
export const MAX_FRAME = 1 << 20;

/** The requests a client may send, as [objectType, eventId] (PROTOCOL §3). */
export const MESSAGES = Object.freeze({
  CREATE_SESSION: [168, 1], DESTROY_SESSION: [168, 2], HEARTBEAT: [168, 3],
  GET_VERSION: [168, 4], RESUME_SESSION: [168, 5], GET_SERVERS: [169, 1],
  CHANGE_STATION: [170, 1], SET_STATUS: [171, 1], WATCH_STATUS: [171, 2],
  UNWATCH_STATUS: [171, 3], MAKE_CALL: [172, 1], PICKUP: [172, 2], DISCONNECT: [172, 3],
  TRANSFER: [172, 4], SEND_CHAT: [172, 6], SEND_EMAIL: [172, 7], CALLBACK: [172, 8],
  WATCH_QUEUE: [173, 1], UNWATCH_QUEUE: [173, 2], GET_DIRECTORY: [174, 1],
  SEARCH_DIRECTORY: [174, 2], GET_TRANSFER_TARGETS: [174, 4], WATCH_STATISTICS: [175, 1],
  UNWATCH_STATISTICS: [175, 2], ACQUIRE_LICENSE: [176, 1], RELEASE_LICENSE: [176, 2],
  GET_RESOURCE_URI: [177, 1],
});

const NAMES = {
  "168,10": "TerminationImminent", "168,11": "SessionTerminated", "168,12": "Switchover",
  "168,13": "Migrate", "169,2": "RosterChanged", "171,4": "StatusChanged",
  "172,5": "InteractionChanged", "173,3": "QueueChanged", "173,4": "MyInteractionsChanged",
  "173,5": "QueueSuspended", "173,6": "QueueUnsuspended", "174,3": "DirectoryChanged",
  "175,3": "StatisticsChanged", "190,1": "NotificationSuppressed",
};

/** The notification's name, or "(objectType,eventId)" for one this SDK does not know. */
export function nameOf(objectType, eventId) {
  return NAMES[`${objectType},${eventId}`] || `(${objectType},${eventId})`;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** One frame as an ArrayBuffer (send it as one binary WebSocket message). */
export function encode(kind, objectType, eventId, requestId, body) {
  const payload = encoder.encode(JSON.stringify(body || {}));
  if (10 + payload.length > MAX_FRAME) throw new RangeError("frame larger than 1 MiB");
  const buffer = new ArrayBuffer(14 + payload.length);
  const view = new DataView(buffer);
  view.setUint32(0, 10 + payload.length);
  view.setUint8(4, 1);
  view.setUint8(5, kind);
  view.setUint16(6, objectType);
  view.setUint16(8, eventId);
  view.setUint32(10, requestId >>> 0);
  new Uint8Array(buffer, 14).set(payload);
  return buffer;
}

/** A frame that breaks PROTOCOL §2; the connection that sent it is closed. */
export class FrameError extends Error {}

/** Whole frames out of a byte stream, however it was split into messages. */
export class Decoder {
  constructor(maxFrame = MAX_FRAME) {
    this.buffer = new Uint8Array(0);
    this.maxFrame = maxFrame;
  }

  /** Feed bytes; returns the frames they complete. Throws FrameError on a bad frame. */
  feed(bytes) {
    const joined = new Uint8Array(this.buffer.length + bytes.length);
    joined.set(this.buffer);
    joined.set(bytes, this.buffer.length);
    const frames = [];
    let pos = 0;
    while (joined.length - pos >= 4) {
      const view = new DataView(joined.buffer, joined.byteOffset + pos);
      const length = view.getUint32(0);
      if (length < 10 || length > this.maxFrame) throw new FrameError(`bad frame length ${length}`);
      if (joined.length - pos < 4 + length) break;
      const version = view.getUint8(4);
      const kind = view.getUint8(5);
      if (version !== 1) throw new FrameError(`bad frame version ${version}`);
      if (kind < 1 || kind > 4) throw new FrameError(`bad frame kind ${kind}`);
      const raw = joined.subarray(pos + 14, pos + 4 + length);
      let body = {};
      if (raw.length) {
        try {
          body = JSON.parse(decoder.decode(raw));
        } catch (error) {
          throw new FrameError(`bad payload: ${error.message}`);
        }
        if (body === null || typeof body !== "object" || Array.isArray(body)) {
          throw new FrameError("payload is not a JSON object");
        }
      }
      frames.push({
        kind, objectType: view.getUint16(6), eventId: view.getUint16(8),
        requestId: view.getUint32(10), body,
      });
      pos += 4 + length;
    }
    this.buffer = joined.slice(pos);
    return frames;
  }
}
