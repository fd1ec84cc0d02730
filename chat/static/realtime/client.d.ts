/**
 * Types of client.js (RealtimeClient, the browser side of `/ws/`): its
 * options, methods, events and the frames of docs/protocol.md (contract §3,
 * §8). A TypeScript site imports client.js and type-checks against these.
 */

// --- shapes every frame shares ---------------------------------------------------------

/** A user as every frame shows one. */
export interface User {
  id: number;
  username: string;
}

/** ISO 8601 UTC time, e.g. "2026-01-02T03:04:05.678Z". */
export type IsoTime = string;

export type ErrorCode =
  | 'BAD_REQUEST'
  | 'NOT_FOUND'
  | 'FORBIDDEN'
  | 'RATE_LIMITED'
  | 'TOO_LARGE'
  | 'UNAVAILABLE'
  // client-side failures
  | 'CONNECT_FAILED'
  | 'GAP_FILL_FAILED';

export type PresenceStatus = 'online' | 'away';

// --- server -> client frames (contract §3, §8) -------------------------------------------

export interface PresenceEntry {
  user: User;
  status: PresenceStatus;
}

export interface JoinedFrame {
  type: 'joined';
  room: string;
  last_seq: number;
  presence: PresenceEntry[];
  truncated: boolean;
  ref?: string;
}

/** A message in a joined room; also the REST shape of a message. */
export interface MessageFrame {
  type: 'message';
  room: string;
  id: number;
  seq: number;
  client_id: string;
  user: User;
  content: string;
  created_at: IsoTime;
}

export interface AckFrame {
  type: 'ack';
  room: string;
  client_id: string;
  id: number;
  seq: number;
  ref?: string;
}

export interface LeftFrame {
  type: 'left';
  room: string;
  ref?: string;
}

export interface TypingFrame {
  type: 'typing';
  room: string;
  user: User;
  is_typing: boolean;
}

export interface ReceiptFrame {
  type: 'receipt';
  room: string;
  user: User;
  seq: number;
}

export interface PresenceFrame {
  type: 'presence';
  room: string;
  joins: PresenceEntry[];
  leaves: { user: User }[];
}

export interface Notification<D = Record<string, unknown>> {
  id: number;
  kind: string;
  data: D;
  created_at: IsoTime;
  read: boolean;
}

/** The `notification` event hands the handler this whole frame. */
export interface NotificationFrame<D = Record<string, unknown>> {
  type: 'notification';
  notification: Notification<D>;
}

export interface MessageDeletedFrame {
  type: 'message_deleted';
  room: string;
  id: number;
  seq: number;
}

export interface KickedFrame {
  type: 'kicked';
  room: string;
  reason: string;
}

export interface ErrorFrame {
  type: 'error';
  code: ErrorCode;
  message: string;
  ref?: string;
}

export interface SubscribedFrame {
  type: 'subscribed';
  topic: string;
  offset: number;
  epoch: string;
  recovered: boolean;
  ref?: string;
}

export interface UnsubscribedFrame {
  type: 'unsubscribed';
  topic: string;
}

/** One publication on a topic; a handler gets `data` and this frame. */
export interface PublicationFrame<D = unknown> {
  type: 'publication';
  topic: string;
  offset: number;
  key?: string;
  data: D;
}

export type ServerFrame =
  | JoinedFrame
  | MessageFrame
  | AckFrame
  | LeftFrame
  | TypingFrame
  | ReceiptFrame
  | PresenceFrame
  | NotificationFrame
  | MessageDeletedFrame
  | KickedFrame
  | ErrorFrame
  | SubscribedFrame
  | UnsubscribedFrame
  | PublicationFrame;

// --- events (client.on) --------------------------------------------------------------------

export type ConnectionState =
  | 'connecting'
  | 'online'
  | 'reconnecting'
  | 'offline'
  | 'unauthorized'
  | 'closed';

export interface StateEvent {
  state: ConnectionState;
  attempt: number;
  /** Set while waiting to reconnect. */
  delayMs: number | null;
  retryAt: number | null;
}

/** An `error` event: a server error frame or a client-side failure. */
export interface ErrorEvent {
  code: ErrorCode;
  message: string;
  ref?: string;
  /** The room a refused join, a refused message or a failed gap fill was for. */
  room?: string;
  /** The refused message's client_id. */
  client_id?: string;
  /** The topic a refused subscribe was for. */
  topic?: string;
  /** Gap fills: the failed attempt's number. */
  attempt?: number;
}

/** A message waiting in the outbox for its ack. */
export interface OutboxItem {
  client_id: string;
  room: string;
  content: string;
  created_at?: IsoTime;
}

export interface SendFailedEvent extends OutboxItem {
  code: ErrorCode;
  message: string;
}

export interface RealtimeEvents {
  state: StateEvent;
  message: MessageFrame;
  joined: JoinedFrame;
  left: LeftFrame;
  typing: TypingFrame;
  presence: PresenceFrame;
  receipt: ReceiptFrame;
  notification: NotificationFrame;
  message_deleted: MessageDeletedFrame;
  kicked: KickedFrame;
  ack: AckFrame;
  error: ErrorEvent;
  send_failed: SendFailedEvent;
  outbox_overflow: { dropped: OutboxItem[] };
  unauthorized: { code: number; reason: string };
  subscribed: SubscribedFrame;
  unsubscribed: UnsubscribedFrame;
}

// --- options ---------------------------------------------------------------------------------

/** Anything with getItem/setItem, like localStorage. */
export interface OutboxStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

export interface Timings {
  baseDelayMs: number;
  maxDelayMs: number;
  outboxLimit: number;
  pingIntervalMs: number;
  pongTimeoutMs: number;
  /** A socket still not open after this long is abandoned and retried. */
  connectTimeoutMs: number;
  /** A connection that stayed up this long resets the backoff. */
  stableAfterMs: number;
  /** A message over this (as a frame) is refused by send() with a RangeError. */
  maxFrameBytes: number;
  gapRetryBaseMs: number;
  gapRetryLimit: number;
  sendRetryBaseMs: number;
}

export interface RealtimeClientOptions extends Partial<Timings> {
  /** The `/ws/` URL, or a function returning it or a promise of it (a ws ticket each time). */
  url?: string | (() => string | Promise<string>);
  /** Where the REST API is ("/rt" under a prefix); gaps are filled from its history. */
  apiBase?: string;
  /** Headers for the REST history requests (`Authorization: Token …`). */
  fetchHeaders?: Record<string, string>;
  /** The user's id: the outbox is kept per user. */
  userId?: number | string | null;
  /** Where the outbox is kept; null: in memory only. Default: localStorage. */
  storage?: OutboxStorage | null;
  storageKey?: string;
  /** What sends `online`/`offline` events; default `window`. */
  eventTarget?: EventTarget | null;
  random?: () => number;
  WebSocket?: typeof WebSocket;
  fetch?: typeof fetch;
}

export interface SubscribeOptions {
  /** The offset the page already shows (with `epoch`), or 0 for the current values. */
  since?: number;
  epoch?: string;
  /** This topic's refusals; RATE_LIMITED and UNAVAILABLE are retried, any other ends it. */
  onError?: (error: ErrorEvent) => void;
}

export interface TopicPosition {
  epoch: string | null;
  offset: number | null;
}

// --- the module's exports ------------------------------------------------------------------

export declare const DEFAULTS: Readonly<Timings>;
export declare const CLOSE_UNAUTHENTICATED: 4401;

export declare function backoffDelay(
  attempt: number,
  options?: { baseMs?: number; capMs?: number; random?: () => number },
): number;

export declare function uuid4(): string;

export declare class Outbox {
  constructor(options?: { storage?: OutboxStorage | null; key?: string; limit?: number });
  readonly storage: OutboxStorage | null;
  readonly key: string;
  readonly limit: number;
  add(item: OutboxItem): { added: boolean; dropped: OutboxItem[] };
  /** The removed item, or null. */
  remove(clientId: string): OutboxItem | null;
  get(clientId: string): OutboxItem | null;
  has(clientId: string): boolean;
  list(room?: string): OutboxItem[];
  readonly size: number;
  clear(): void;
}

export interface RoomFeedResult {
  status: 'deliver' | 'duplicate' | 'gap' | 'buffered' | 'invalid';
  deliver: MessageFrame[];
  gap: { after: number; until: number } | null;
}

export declare class RoomTracker {
  constructor(options?: { lastSeq?: number | null; maxIds?: number });
  readonly lastSeq: number | null;
  gap: { after: number; until: number } | null;
  readonly pendingCount: number;
  setBaseline(seq: number): void;
  reset(seq: number): void;
  isDuplicate(message: MessageFrame): boolean;
  feed(message: MessageFrame): RoomFeedResult;
  fill(
    messages: MessageFrame[],
    options?: { until?: number },
  ): { deliver: MessageFrame[]; gap: { after: number; until: number } | null };
  skipGap(): MessageFrame[];
}

export declare class RealtimeClient {
  constructor(options?: RealtimeClientOptions);
  readonly url: RealtimeClientOptions['url'] | null;
  readonly outbox: Outbox;
  /** The connection's state (the `state` event's). */
  readonly state: ConnectionState;
  /** Whether the socket is open and the client online. */
  readonly connected: boolean;

  /** Listen to an event; returns the function that stops listening. */
  on<K extends keyof RealtimeEvents>(type: K, fn: (event: RealtimeEvents[K]) => void): () => void;
  off<K extends keyof RealtimeEvents>(type: K, fn: (event: RealtimeEvents[K]) => void): void;

  /** Open the connection (and keep it open until close()). */
  connect(): this;
  /** Close for good (until connect() again). The outbox is kept. */
  close(): void;
  /** Skip the backoff wait and reconnect now. */
  reconnectNow(): void;

  /** Join a room and keep it joined across reconnects; `since`: the highest seq the page shows. */
  join(slug: string, options?: { since?: number }): this;
  leave(slug: string): this;
  /** The highest seq delivered in a joined room (null if none yet). */
  lastSeq(slug: string): number | null;
  /** Messages of a room (or all) still waiting for their ack, oldest first. */
  pending(slug?: string): OutboxItem[];
  /** Post `content` to a room; the message's client_id at once. */
  send(slug: string, content: string): string;
  /** Whether the typing frame was sent (dropped when not connected). */
  typing(slug: string, isTyping: boolean): boolean;
  /** Mark the room read up to `seq`. */
  read(slug: string, seq: number): boolean;
  setPresence(status: PresenceStatus): boolean;

  /** Subscribe `handler(data, publication)` to a topic; returns the unsubscribe function. */
  subscribe<D = unknown>(
    topic: string,
    handler: (data: D, publication: PublicationFrame<D>) => void,
    options?: SubscribeOptions,
  ): () => void;
  /** Where a subscribed topic stands, or null. */
  topicPosition(topic: string): TopicPosition | null;
}
