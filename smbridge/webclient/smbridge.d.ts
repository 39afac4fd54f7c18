// TypeScript declarations of the smbridge browser SDK (smbridge.js and the modules it
// re-exports). Hand-written: the SDK is plain JavaScript with no build step.

export type Message = readonly [objectType: number, eventId: number];
export type Payload = Record<string, unknown>;

// --- codec.js ---------------------------------------------------------------------
export declare const KIND: { readonly REQUEST: 1; readonly RESPONSE: 2; readonly NOTIFICATION: 3; readonly ERROR: 4 };
export declare const MAX_FRAME: number;
export declare const MESSAGES: {
  readonly CREATE_SESSION: Message; readonly DESTROY_SESSION: Message; readonly HEARTBEAT: Message;
  readonly GET_VERSION: Message; readonly RESUME_SESSION: Message; readonly GET_SERVERS: Message;
  readonly CHANGE_STATION: Message; readonly SET_STATUS: Message; readonly WATCH_STATUS: Message;
  readonly UNWATCH_STATUS: Message; readonly MAKE_CALL: Message; readonly PICKUP: Message;
  readonly DISCONNECT: Message; readonly TRANSFER: Message; readonly SEND_CHAT: Message;
  readonly SEND_EMAIL: Message; readonly CALLBACK: Message; readonly WATCH_QUEUE: Message;
  readonly UNWATCH_QUEUE: Message; readonly GET_DIRECTORY: Message; readonly SEARCH_DIRECTORY: Message;
  readonly GET_TRANSFER_TARGETS: Message; readonly WATCH_STATISTICS: Message;
  readonly UNWATCH_STATISTICS: Message; readonly ACQUIRE_LICENSE: Message;
  readonly RELEASE_LICENSE: Message; readonly GET_RESOURCE_URI: Message;
};

export interface Frame {
  kind: 1 | 2 | 3 | 4;
  objectType: number;
  eventId: number;
  requestId: number;
  body: Payload;
  /** Set on notifications the Session delivers ("QueueChanged", "Migrate", ...). */
  name?: string;
}

export declare function nameOf(objectType: number, eventId: number): string;
export declare function encode(kind: number, objectType: number, eventId: number,
  requestId: number, body?: Payload): ArrayBuffer;
export declare class FrameError extends Error {}
export declare class Decoder {
  constructor(maxFrame?: number);
  /** Whole frames completed by `bytes`; throws FrameError on a frame that breaks §2. */
  feed(bytes: Uint8Array): Frame[];
}

// --- core.js ----------------------------------------------------------------------
/** Timers in milliseconds (window's by default; tests inject a fake one). */
export interface Clock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}
export declare const REAL_CLOCK: Clock;

export declare class SmbridgeError extends Error {
  constructor(code: string, message: string, body?: Payload);
  /** The wire's kebab-case code (logon-failed, redirect, ...) or a local one:
   * connection-lost, not-connected, connect-failed, connect-timeout, request-timeout,
   * session-ended, no-bridge, stopped. */
  readonly code: string;
  readonly body: Payload;
  readonly retryable: boolean;
}

export declare class RequestTable {
  constructor(clock?: Clock);
  readonly size: number;
  add(timeout?: number | null): { requestId: number; promise: Promise<Payload> };
  settle(frame: Frame): boolean;
  failAll(error: Error): void;
}

export declare class ReceivedCounter {
  received: number;
  delivered: number;
  fresh(): void;
  arrived(): boolean;
  readonly resumeFrom: number;
  resumed(reply: { position?: number; gap?: boolean }): boolean;
}

export declare class WatchSet {
  readonly topics: string[];
  static topicsOf(message: Message, body: Payload): string[];
  record(message: Message, body: Payload): string[];
  forget(message: Message, body: Payload): void;
  discard(topics: string[]): void;
  restoreRequests(): Array<[Message, Payload]>;
  snapshots(message: Message, body: Payload, reply: Payload): Record<string, unknown>;
}

/** One GetDirectory page (docs/protocol.md, "Large answers"); at most 256 KiB of payload. */
export interface DirectoryPage {
  name: string;
  entries: Payload[];
  offset: number;
  total: number;
  /** The offset of the next page, or null on the last. */
  next: number | null;
  more: boolean;
  /** Changes with every change to the directory: pages of one walk share it. */
  version: number;
}
/** A whole directory, read page by page. */
export interface DirectoryListing {
  name: string;
  entries: Payload[];
  total: number;
  version: number;
}
export interface ReadDirectoryOptions {
  /** Entries per page at most (the bridge also bounds a page in bytes). */
  limit?: number | null;
  /** Walks started again when the directory changes under one (5). */
  tries?: number;
}
/** A watch reply with `more: true` and the `continued` events after it, as one snapshot. */
export declare function gatherSnapshot(reply: Payload, tail: Payload[], field: string): Payload;
/** Follow GetDirectory pages with `request`; rejects SmbridgeError directory-changing. */
export declare function readDirectory(request: (body: Payload) => Promise<Payload>,
  name: string, options?: ReadDirectoryOptions): Promise<DirectoryListing>;

// --- order.js ---------------------------------------------------------------------
export interface RosterEntry {
  name: string;
  fqdn?: string;
  kind?: "on-server" | "off-server";
  location?: string;
  available?: boolean;
  ports?: { tls?: number; ws?: number; wss?: number };
  /** A URI the client can dial (the bridge adds it for WebSocket clients). */
  uri?: string;
  cic?: { name?: string; role?: string };
}
export interface Target { uri: string; name: string | null }
export interface Attempt { delay: number; target: Target; pass: number }
export type UriFor = (entry: RosterEntry) => string | null;

export declare const RECONNECT_TOP_TRIES: number;
export declare const CLIENT_TYPE: string;
export declare class Backoff {
  constructor(initial?: number, factor?: number, maximum?: number);
  initial: number;
  factor: number;
  maximum: number;
  /** Seconds before pass n (0 before the first). */
  delay(n: number): number;
}
export declare const DEFAULT_BACKOFF: Backoff;
export declare function resumeDelays(linger: number, tries?: number, backoff?: Backoff): number[];
export declare function reconnectPlan(groups: Target[][], topTries?: number, backoff?: Backoff,
  firstPass?: number): Attempt[];
export declare function withClientType(uri: string, clientType?: string): string;
export declare function uriKey(uri: string): string;
export declare function entryUri(entry: RosterEntry): string | null;
export declare function rosterTargets(roster: unknown, leaving?: string | null,
  uriFor?: UriFor | null): Target[];
export declare function migratePlan(roster: unknown, leaving?: string | null,
  uriFor?: UriFor | null): Attempt[];
export declare function ruleForUser(rules: unknown, location: string | null | undefined):
  { groups: string[][]; excluded: Set<string>; others: boolean };
export declare function orderRoster(roster: RosterEntry[],
  rule: { groups: string[][]; excluded: Set<string>; others: boolean },
  random?: () => number): RosterEntry[][];
export declare function attemptGroups(kept: { roster?: unknown; selectionRule?: unknown;
  location?: string } | null, typedUri: string | null, random?: () => number,
  uriFor?: UriFor | null): Target[][];

// --- connection.js ----------------------------------------------------------------
export declare class Connection {
  static open(uri: string, options?: { WebSocket?: typeof WebSocket; clock?: Clock;
    timeout?: number }): Promise<Connection>;
  readonly uri: string;
  readonly isOpen: boolean;
  readonly closed: Promise<string>;
  onNotification: (frame: Frame) => void;
  onClose: (reason: string) => void;
  request(message: Message, body?: Payload, timeout?: number | null): Promise<Payload>;
  close(code?: number, reason?: string): Promise<string>;
  /** Give the connection up now, as a dead network would (tests use it to cut it). */
  drop(reason?: string): void;
}

// --- smbridge.js ------------------------------------------------------------------
export declare const CONNECTION_CODES: Set<string>;
export declare function retryAfter(body: Payload | undefined): number;
/** wss://<location.host>/[prefix/]<server>/session?inin_client_type=smbridge-webclient */
export declare function sessionUrl(location: { protocol: string; host: string }, server: string,
  prefix?: string): string;

export interface SessionOptions {
  station?: string;
  clientId?: string;
  clientApp?: string;
  clientVersion?: string;
  /** The client type sent as ?inin_client_type= (browsers cannot set headers). */
  clientType?: string;
  host?: string;
  sessionTimeout?: number;
  minSessionTimeout?: number;
  notifyImminent?: boolean;
  /** Top group tries before the full list on automatic reconnect (3). */
  topTries?: number;
  backoff?: Backoff;
  /** The bridge's linger time in seconds (120): resumes stay within it. */
  linger?: number;
  resumeTries?: number;
  /** Reconnect rounds before giving up (no-bridge, or tenant-limit when that was the last
   * answer); null (default): until logoff. */
  rounds?: number | null;
  /** Seconds a Heartbeat may go unanswered before the connection counts as dead (60). */
  heartbeatTimeout?: number;
  /** Seconds any request may go unanswered (30). */
  requestTimeout?: number;
  /** Seconds before the one retry of a retryable failure (1). */
  retryDelay?: number;
  connectTimeout?: number;
  /** Where to dial a roster entry; default: its uri, else wss://fqdn:ports.wss/<name>/session. */
  uriFor?: UriFor;
  /** Awaited before every dial (e.g. wait for navigator.onLine; tests hold the network). */
  beforeDial?: (uri: string) => Promise<void> | void;
  WebSocket?: typeof WebSocket;
  clock?: Clock;
  random?: () => number;
}

export type SessionState = "idle" | "connected" | "resuming" | "relogging" | "migrating" | "ended";
export interface SessionInfo { sessionId: string | null; server: Payload | null }

export interface SessionEventMap {
  /** Every notification of the session, once and in order (`number`: its position). */
  notification: CustomEvent<{ name: string; body: Payload; frame: Frame; number: number }>;
  /** The session will expire in `secondsLeft` unless used (TerminationImminent). */
  terminationimminent: CustomEvent<{ secondsLeft?: number } & Payload>;
  /** The upstream switched over (Switchover notice, or a heartbeat's haSwitchover). */
  switchover: CustomEvent<{ phase?: string; cic?: unknown } & Payload>;
  disconnected: CustomEvent<SessionInfo & { reason: string; why: string }>;
  resumed: CustomEvent<SessionInfo & { gap: boolean }>;
  relogged: CustomEvent<SessionInfo & { reason: string | null }>;
  migrated: CustomEvent<SessionInfo & { reason: string | null }>;
  /** Rebuild your view: `snapshots` maps each watch's topic to its fresh snapshot. */
  resynchronised: CustomEvent<SessionInfo & { reason: string; snapshots: Record<string, Payload> }>;
  /** For good: logoff, logon-failed, no-bridge, tenant-limit, terminated:<reason>, ... */
  ended: CustomEvent<{ reason: string; sessionId: string | null }>;
  statechange: CustomEvent<{ state: SessionState }>;
}

export declare class Session extends EventTarget {
  constructor(uri: string, user: string, password: string, options?: SessionOptions);
  readonly uri: string;
  readonly user: string;
  readonly state: SessionState;
  readonly sessionId: string | null;
  readonly server: Payload | null;
  readonly ended: boolean;
  readonly connection: Connection | null;
  /** The last CreateSession/ResumeSession reply (roster, timeouts, resources...). */
  readonly reply: Payload;
  readonly watches: WatchSet;
  readonly counter: ReceivedCounter;
  readonly options: SessionOptions;
  /** The first logon: the URI given, then a redirect's roster. Resolves with the reply. */
  start(): Promise<Payload>;
  /** Any request; waits while the session reconnects; rejects SmbridgeError. */
  request(message: Message, body?: Payload, options?: { timeout?: number | null }): Promise<Payload>;
  /** WatchQueue; the whole snapshot, a large one's `continued` tail gathered. */
  watchQueue(queue: string): Promise<Payload>;
  unwatchQueue(queue: string): Promise<Payload>;
  watchStatus(users: string[]): Promise<Payload>;
  unwatchStatus(users: string[]): Promise<Payload>;
  watchStatistics(workgroup: string, stats: string[]): Promise<Payload>;
  unwatchStatistics(workgroup: string): Promise<Payload>;
  getVersion(): Promise<Payload>;
  /** Every entry of a directory, its pages followed. */
  getDirectory(name: string, options?: ReadDirectoryOptions): Promise<DirectoryListing>;
  /** One GetDirectory page. */
  getDirectoryPage(name: string, offset?: number, limit?: number | null): Promise<DirectoryPage>;
  getResourceUri(kind: string, path: string): Promise<Payload>;
  /** End for good: DestroySession, close; no more reconnects. */
  logoff(): Promise<void>;
  addEventListener<K extends keyof SessionEventMap>(type: K,
    listener: (event: SessionEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof SessionEventMap>(type: K,
    listener: (event: SessionEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions): void;
}
