/**
 * Provides RealtimeClient, the browser side of the `/ws/` protocol
 * (docs/protocol.md, CONTRACT.md §3 and §7), as one ES module with no build
 * step and no dependencies.
 *
 * What it guarantees to the page:
 * - it reconnects for ever, with exponential backoff and full jitter
 *   (0.5 s base, 30 s cap), at once on the window `online` event, and stops
 *   only when the server says the user is not authenticated (close 4401);
 * - messages sent while offline wait in a bounded outbox (100, oldest dropped),
 *   persisted per user so they survive a reload, and are replayed after a
 *   reconnect with the same client_id until their `ack` arrives;
 * - every joined room is resumed with `since` = the highest seq seen, and the
 *   page gets each room's messages once, in seq order: duplicates are dropped
 *   by id, and a seq gap is filled from REST history before later messages;
 * - an application ping every 25 s; no pong within 10 s closes and reconnects;
 * - every subscribed topic (docs/topics.md) is resubscribed with `since` and
 *   `epoch` = the last position delivered, and each handler gets each
 *   publication once, in offset order.
 *
 * The pure parts (backoffDelay, Outbox, RoomTracker) are exported on their own
 * so they run under `node --test` without a browser.
 */

export const DEFAULTS = Object.freeze({
  baseDelayMs: 500,
  maxDelayMs: 30000,
  outboxLimit: 100,
  pingIntervalMs: 25000,
  pongTimeoutMs: 10000,
  // A socket still not open after this long is abandoned and retried.
  connectTimeoutMs: 10000,
  // A connection that stayed up this long resets the backoff, even if quiet.
  stableAfterMs: 5000,
  // The server closes a connection on a frame over 64 KiB (1009); a message
  // that could never be sent must not sit in the outbox forever.
  maxFrameBytes: 65536,
  // Gap fills from REST that fail are retried this often before the gap is
  // given up (a reconnect's resume fills it anyway).
  gapRetryBaseMs: 1000,
  gapRetryLimit: 5,
  // RATE_LIMITED / UNAVAILABLE sends are retried after about this long.
  sendRetryBaseMs: 1000,
});

export const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_CLIENT_TIMEOUT = 4000; // our own close: pong or connect timeout
const WS_OPEN = 1;
const HISTORY_PAGE = 100;
const RETRYABLE_SEND_ERRORS = new Set(['RATE_LIMITED', 'UNAVAILABLE']);
const SUBSCRIBE_REF = 'subscribe:';

/**
 * The delay before reconnect attempt `attempt` (0-based): "full jitter",
 * uniformly random in [0, min(capMs, baseMs * 2^attempt)).
 */
export function backoffDelay(attempt, { baseMs = DEFAULTS.baseDelayMs, capMs = DEFAULTS.maxDelayMs, random = Math.random } = {}) {
  const n = Math.max(0, Math.floor(Number(attempt) || 0));
  // 2^60 is far past any cap; clamping keeps the arithmetic finite.
  const ceiling = Math.max(0, Math.min(capMs, baseMs * 2 ** Math.min(n, 60)));
  const r = Math.min(Math.max(Number(random()) || 0, 0), 1);
  return Math.min(Math.floor(r * ceiling), Math.max(0, Math.ceil(ceiling) - 1));
}

/** A random v4 UUID: crypto.randomUUID where available (secure contexts), else built by hand. */
export function uuid4() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') {
    try {
      return c.randomUUID();
    } catch {
      // not a secure context: fall through
    }
  }
  const b = new Uint8Array(16);
  if (c && typeof c.getRandomValues === 'function') c.getRandomValues(b);
  else for (let i = 0; i < 16; i += 1) b[i] = Math.floor(Math.random() * 256);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function isOutboxItem(x) {
  return !!x && typeof x === 'object' && typeof x.client_id === 'string' && typeof x.room === 'string' && typeof x.content === 'string';
}

/**
 * The messages not yet acknowledged, oldest first, bounded (`limit`; the oldest
 * are dropped when full) and deduplicated by client_id.
 *
 * With a storage (anything with getItem/setItem, like localStorage) every
 * operation reads and writes it, so the outbox survives a reload and tabs of
 * one user share it (a message replayed by two tabs is stored once: the
 * server is idempotent per client_id). A storage that throws (quota, private
 * mode) or is null leaves the outbox in memory.
 */
export class Outbox {
  constructor({ storage = null, key = 'realtime.outbox', limit = DEFAULTS.outboxLimit } = {}) {
    this.storage = storage;
    this.key = key;
    this.limit = Math.max(1, Math.floor(limit));
    this._items = [];
    this._load();
  }

  _load() {
    if (!this.storage) return this._items;
    try {
      const raw = this.storage.getItem(this.key);
      const parsed = raw ? JSON.parse(raw) : [];
      this._items = Array.isArray(parsed) ? parsed.filter(isOutboxItem) : [];
    } catch {
      // unreadable or corrupt: keep what is in memory
    }
    return this._items;
  }

  _save() {
    if (!this.storage) return;
    try {
      if (this._items.length) this.storage.setItem(this.key, JSON.stringify(this._items));
      else if (typeof this.storage.removeItem === 'function') this.storage.removeItem(this.key);
      else this.storage.setItem(this.key, '[]');
    } catch {
      // quota or private mode: the in-memory outbox still works for this page
    }
  }

  /** Add `item` ({client_id, room, content, ...}). Returns {added, dropped}: dropped are the oldest items pushed out. */
  add(item) {
    if (!isOutboxItem(item)) throw new TypeError('an outbox item needs string client_id, room and content');
    const items = this._load();
    if (items.some((x) => x.client_id === item.client_id)) return { added: false, dropped: [] };
    items.push({ ...item });
    const dropped = items.length > this.limit ? items.splice(0, items.length - this.limit) : [];
    this._save();
    return { added: true, dropped };
  }

  /** Remove and return the item with `clientId`, or null. */
  remove(clientId) {
    const items = this._load();
    const i = items.findIndex((x) => x.client_id === clientId);
    if (i < 0) return null;
    const [item] = items.splice(i, 1);
    this._save();
    return item;
  }

  get(clientId) {
    return this._load().find((x) => x.client_id === clientId) || null;
  }

  has(clientId) {
    return this.get(clientId) !== null;
  }

  /** The items in order (copies), optionally only one room's. */
  list(room) {
    const items = this._load();
    return (room === undefined ? items : items.filter((x) => x.room === room)).map((x) => ({ ...x }));
  }

  get size() {
    return this._load().length;
  }

  clear() {
    this._items = [];
    this._save();
  }
}

function isMessage(m) {
  return !!m && typeof m === 'object' && Number.isSafeInteger(m.seq) && m.seq > 0 && m.id !== undefined && m.id !== null;
}

/**
 * One room's delivery order: feed it every message (WebSocket or REST) and it
 * says what to deliver, in seq order, exactly once.
 *
 * - `lastSeq` is the highest seq delivered (null until the first message or a
 *   baseline: then the first message is taken as it comes).
 * - A message with an id already delivered, or a seq at or below lastSeq, is a
 *   duplicate.
 * - A message with seq > lastSeq + 1 opens a gap {after, until}: it is held
 *   back (with any later ones) until `fill()` is given the REST history of the
 *   gap. Holes REST does not return were deleted and are skipped.
 */
export class RoomTracker {
  constructor({ lastSeq = null, maxIds = 5000 } = {}) {
    this.lastSeq = Number.isSafeInteger(lastSeq) && lastSeq >= 0 ? lastSeq : null;
    this.gap = null;
    this.maxIds = maxIds;
    this._pending = new Map(); // seq -> message held back behind a gap
    this._ids = new Set();
    this._idOrder = [];
  }

  /** Set where delivery starts, if nothing was seen yet (a join's `since`, or `joined.last_seq`). */
  setBaseline(seq) {
    if (this.lastSeq === null && Number.isSafeInteger(seq) && seq >= 0) this.lastSeq = seq;
  }

  /** Start over at `seq` (the server's room ended below what we saw: a restored database). */
  reset(seq) {
    this.lastSeq = Number.isSafeInteger(seq) && seq >= 0 ? seq : null;
    this._pending.clear();
    this.gap = null;
  }

  /** True for a message already delivered or already held back. */
  isDuplicate(m) {
    if (this._ids.has(m.id)) return true;
    if (this.lastSeq !== null && m.seq <= this.lastSeq) return true;
    return this._pending.has(m.seq);
  }

  get pendingCount() {
    return this._pending.size;
  }

  /**
   * Feed one message. Returns {status, deliver, gap}:
   * status 'deliver' (deliver holds it and any held-back ones now in order),
   * 'duplicate', 'invalid', 'gap' (a new gap to fill: `gap`), or 'buffered'
   * (held behind a gap already being filled).
   */
  feed(m) {
    if (!isMessage(m)) return { status: 'invalid', deliver: [], gap: null };
    if (this.isDuplicate(m)) return { status: 'duplicate', deliver: [], gap: null };
    if (this.lastSeq === null || m.seq === this.lastSeq + 1) {
      const deliver = [m];
      this._accept(m);
      this._drainConsecutive(deliver);
      return { status: 'deliver', deliver, gap: null };
    }
    this._pending.set(m.seq, m);
    if (this.gap) return { status: 'buffered', deliver: [], gap: null };
    this.gap = { after: this.lastSeq, until: m.seq - 1 };
    return { status: 'gap', deliver: [], gap: { ...this.gap } };
  }

  /**
   * Close the gap with `messages`, the REST history covering seqs
   * (gap.after, until]; a seq in that range that is missing was deleted.
   * Returns {deliver, gap}: what to deliver now in order, and a new gap if one
   * still lies beyond `until` (fill it the same way).
   */
  fill(messages, { until } = {}) {
    const covered = Number.isSafeInteger(until) ? until : Math.max(this.gap ? this.gap.until : 0, ...messages.filter(isMessage).map((m) => m.seq));
    for (const m of [...messages].filter(isMessage).sort((a, b) => a.seq - b.seq)) {
      if (!this.isDuplicate(m)) this._pending.set(m.seq, m);
    }
    const deliver = [];
    for (const seq of [...this._pending.keys()].sort((a, b) => a - b)) {
      const m = this._pending.get(seq);
      if (seq > covered && this.lastSeq !== null && seq !== this.lastSeq + 1) break;
      this._pending.delete(seq);
      if (this._ids.has(m.id)) continue;
      this._accept(m);
      deliver.push(m);
    }
    if (this.lastSeq !== null && covered > this.lastSeq) this.lastSeq = covered;
    this._drainConsecutive(deliver);
    this.gap = null;
    if (this._pending.size) {
      const next = Math.min(...this._pending.keys());
      this.gap = { after: this.lastSeq, until: next - 1 };
    }
    return { deliver, gap: this.gap ? { ...this.gap } : null };
  }

  /** Give up on the open gap: deliver everything held back, in order. */
  skipGap() {
    const deliver = [];
    for (const seq of [...this._pending.keys()].sort((a, b) => a - b)) {
      const m = this._pending.get(seq);
      if (this._ids.has(m.id)) continue;
      this._accept(m);
      deliver.push(m);
    }
    this._pending.clear();
    this.gap = null;
    return deliver;
  }

  _accept(m) {
    this.lastSeq = this.lastSeq === null ? m.seq : Math.max(this.lastSeq, m.seq);
    this._ids.add(m.id);
    this._idOrder.push(m.id);
    if (this._idOrder.length > this.maxIds) this._ids.delete(this._idOrder.shift());
  }

  _drainConsecutive(deliver) {
    while (this.lastSeq !== null && this._pending.has(this.lastSeq + 1)) {
      const m = this._pending.get(this.lastSeq + 1);
      this._pending.delete(this.lastSeq + 1);
      this._accept(m);
      deliver.push(m);
    }
    if (this.gap && this._pending.size === 0) this.gap = null;
  }
}

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc) throw new Error('RealtimeClient needs a `url` outside a browser');
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws/`;
}

function defaultStorage() {
  try {
    return globalThis.window && globalThis.window.localStorage ? globalThis.window.localStorage : null;
  } catch {
    return null; // storage disabled (cookies blocked, sandboxed iframe)
  }
}

function utf8Length(s) {
  if (typeof TextEncoder !== 'undefined') return new TextEncoder().encode(s).length;
  return unescape(encodeURIComponent(s)).length;
}

/**
 * One connection to `/ws/` carrying every room.
 *
 * Events (`on(type, fn)` returns an unsubscribe function):
 *   state {state, attempt, delayMs, retryAt}: state is 'connecting', 'online',
 *     'reconnecting', 'offline' (the browser reports no network), 'unauthorized'
 *     or 'closed'; delayMs/retryAt are set while waiting to reconnect
 *   message (a message frame, per room in seq order, once), joined, left,
 *   typing, presence, receipt, notification, message_deleted, kicked, ack,
 *   error ({code, message, ref?, room?, client_id?}: server error frames and
 *     client-side failures such as GAP_FILL_FAILED), send_failed ({client_id,
 *     room, content, code, message}: the server refused the message for good;
 *     it left the outbox), outbox_overflow ({dropped: [items]}), unauthorized,
 *   subscribed (a topic's subscribed frame: {topic, offset, epoch, recovered};
 *     again whenever the server starts a new epoch), unsubscribed.
 * A topic's refused subscribe is an error event with `topic` set.
 */
export class RealtimeClient {
  constructor(options = {}) {
    const o = { ...DEFAULTS, ...options };
    this.url = o.url || null; // string, or a function returning a string or a promise of one (ws tickets)
    this.baseDelayMs = o.baseDelayMs;
    this.maxDelayMs = o.maxDelayMs;
    this.pingIntervalMs = o.pingIntervalMs;
    this.pongTimeoutMs = o.pongTimeoutMs;
    this.connectTimeoutMs = o.connectTimeoutMs;
    this.stableAfterMs = o.stableAfterMs;
    this.maxFrameBytes = o.maxFrameBytes;
    this.gapRetryBaseMs = o.gapRetryBaseMs;
    this.gapRetryLimit = o.gapRetryLimit;
    this.sendRetryBaseMs = o.sendRetryBaseMs;
    this.apiBase = (o.apiBase || '').replace(/\/$/, '');
    this.fetchHeaders = o.fetchHeaders || {};
    this.random = o.random || Math.random;
    this._WebSocket = o.WebSocket || globalThis.WebSocket;
    const f = o.fetch || globalThis.fetch;
    this._fetch = f ? (...args) => f.apply(globalThis, args) : null;
    const storage = 'storage' in options ? options.storage : defaultStorage();
    const key = o.storageKey || `realtime.outbox.${o.userId != null ? o.userId : 'anonymous'}`;
    this.outbox = new Outbox({ storage, key, limit: o.outboxLimit });
    this._target = 'eventTarget' in options ? options.eventTarget : globalThis.window || null;

    this._listeners = new Map();
    this._rooms = new Map(); // slug -> {slug, tracker, joined, filling, gapFailures, readSeq}
    // topic -> {topic, handlers: Set<{handler, onError}>, epoch, offset, subscribed, awaiting, sentSince}
    this._topics = new Map();
    this._ws = null;
    this._generation = 0;
    this._state = 'closed';
    this._attempt = 0;
    this._stopped = true;
    this._presence = 'online';
    this._sent = new Set(); // client_ids sent on the current socket, awaiting ack
    this._timers = { reconnect: null, ping: null, pong: null, connect: null, stable: null, resend: null };
    this._sendRetries = 0;
    this._retryAt = null;
    this._onOnline = () => this._handleOnline();
    this._onOffline = () => this._handleOffline();
    this._onVisible = () => {
      const doc = globalThis.document;
      if (doc && doc.visibilityState === 'visible' && this._timers.reconnect) this.reconnectNow();
    };
  }

  // --- events -------------------------------------------------------------------
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
  }

  _emit(type, payload) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (err) {
        // one broken listener must not break delivery to the others
        if (globalThis.console) console.error(`realtime: '${type}' listener failed`, err);
      }
    }
  }

  get state() {
    return this._state;
  }

  get connected() {
    return !!this._ws && this._ws.readyState === WS_OPEN && this._state === 'online';
  }

  _setState(state, extra = {}) {
    this._state = state;
    this._emit('state', { state, attempt: this._attempt, delayMs: null, retryAt: null, ...extra });
  }

  // --- connection -----------------------------------------------------------------
  /** Open the connection (and keep it open until close()). */
  connect() {
    if (!this._stopped) return this;
    this._stopped = false;
    this._attempt = 0;
    if (this._target && typeof this._target.addEventListener === 'function') {
      this._target.addEventListener('online', this._onOnline);
      this._target.addEventListener('offline', this._onOffline);
    }
    const doc = globalThis.document;
    if (doc && typeof doc.addEventListener === 'function') doc.addEventListener('visibilitychange', this._onVisible);
    this._open();
    return this;
  }

  /** Close for good (until connect() again). The outbox is kept. */
  close() {
    this._stopped = true;
    this._clearTimer('reconnect');
    this._clearTimer('resend');
    this._teardown(1000, 'client closed');
    if (this._target && typeof this._target.removeEventListener === 'function') {
      this._target.removeEventListener('online', this._onOnline);
      this._target.removeEventListener('offline', this._onOffline);
    }
    const doc = globalThis.document;
    if (doc && typeof doc.removeEventListener === 'function') doc.removeEventListener('visibilitychange', this._onVisible);
    this._setState('closed');
  }

  /** Skip the backoff wait and reconnect now (a "retry now" button). */
  reconnectNow() {
    if (this._stopped || this._ws || this._timers.reconnect === null) return;
    this._clearTimer('reconnect');
    this._attempt = 0;
    this._open();
  }

  _clearTimer(name) {
    const t = this._timers[name];
    if (t !== null) {
      clearTimeout(t);
      clearInterval(t);
      this._timers[name] = null;
    }
  }

  async _resolveUrl() {
    const u = this.url || defaultUrl();
    return typeof u === 'function' ? await u() : u;
  }

  _open() {
    this._timers.reconnect = null;
    this._retryAt = null;
    const generation = ++this._generation;
    this._setState('connecting');
    this._resolveUrl().then(
      (url) => {
        if (generation !== this._generation || this._stopped) return;
        let ws;
        try {
          ws = new this._WebSocket(url);
        } catch (err) {
          this._emit('error', { code: 'CONNECT_FAILED', message: String((err && err.message) || err) });
          this._scheduleReconnect();
          return;
        }
        this._ws = ws;
        ws.onopen = () => this._ws === ws && this._handleOpen(ws);
        ws.onmessage = (ev) => this._ws === ws && this._handleFrame(ev.data);
        ws.onclose = (ev) => this._ws === ws && this._handleClose(ev ? ev.code : 1006, ev ? ev.reason : '');
        ws.onerror = () => {}; // a close event follows; it decides
        this._timers.connect = setTimeout(() => {
          this._timers.connect = null;
          if (this._ws === ws && ws.readyState !== WS_OPEN) this._handleClose(CLOSE_CLIENT_TIMEOUT, 'connect timeout');
        }, this.connectTimeoutMs);
      },
      (err) => {
        if (generation !== this._generation || this._stopped) return;
        this._emit('error', { code: 'CONNECT_FAILED', message: String((err && err.message) || err) });
        this._scheduleReconnect();
      },
    );
  }

  _handleOpen(ws) {
    this._clearTimer('connect');
    this._sent.clear();
    this._setState('online');
    this._timers.stable = setTimeout(() => {
      this._timers.stable = null;
      this._attempt = 0;
    }, this.stableAfterMs);
    this._timers.ping = setInterval(() => this._ping(), this.pingIntervalMs);
    // The server starts every connection online; say "away" again if we were.
    if (this._presence !== 'online') this._send({ type: 'presence', status: this._presence });
    for (const r of this._rooms.values()) this._sendJoin(r);
    for (const t of this._topics.values()) this._sendSubscribe(t);
    for (const r of this._rooms.values()) {
      if (r.readSeq !== null) this._send({ type: 'read', room: r.slug, seq: r.readSeq, ref: 'read' });
    }
    this._flush();
  }

  _ping() {
    if (!this._ws || this._ws.readyState !== WS_OPEN) return;
    this._send({ type: 'ping' });
    if (this._timers.pong === null) {
      this._timers.pong = setTimeout(() => {
        this._timers.pong = null;
        // No pong: the socket is dead or half-open. Do not wait for the
        // browser's close handshake (it can take minutes); reconnect now.
        this._handleClose(CLOSE_CLIENT_TIMEOUT, 'pong timeout');
      }, this.pongTimeoutMs);
    }
  }

  /** Stop the socket and its timers without deciding what comes next. */
  _teardown(code, reason) {
    const ws = this._ws;
    this._ws = null;
    this._generation += 1;
    for (const name of ['ping', 'pong', 'connect', 'stable']) this._clearTimer(name);
    this._sent.clear();
    for (const r of this._rooms.values()) r.joined = false;
    for (const t of this._topics.values()) t.subscribed = t.awaiting = false;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(code, reason);
      } catch {
        // already closing or closed
      }
    }
  }

  _handleClose(code, reason) {
    this._teardown(code === CLOSE_UNAUTHENTICATED ? 1000 : CLOSE_CLIENT_TIMEOUT, reason);
    if (code === CLOSE_UNAUTHENTICATED) {
      // The one reason to give up: retrying cannot help until the user logs in.
      this._stopped = true;
      this._setState('unauthorized');
      this._emit('unauthorized', { code, reason });
      return;
    }
    if (this._stopped) {
      this._setState('closed');
      return;
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    this._clearTimer('reconnect');
    const delayMs = backoffDelay(this._attempt, { baseMs: this.baseDelayMs, capMs: this.maxDelayMs, random: this.random });
    this._attempt += 1;
    this._retryAt = Date.now() + delayMs;
    const nav = globalThis.navigator;
    const offline = !!nav && nav.onLine === false;
    this._setState(offline ? 'offline' : 'reconnecting', { delayMs, retryAt: this._retryAt });
    this._timers.reconnect = setTimeout(() => this._open(), delayMs);
  }

  _handleOnline() {
    if (this._stopped) return;
    if (this._ws && this._ws.readyState === WS_OPEN) {
      this._ping(); // the network changed under an open socket: check it now
    } else if (this._timers.reconnect) {
      this.reconnectNow();
    }
  }

  _handleOffline() {
    if (this._stopped) return;
    if (this._ws && this._ws.readyState === WS_OPEN) this._ping();
    else if (this._timers.reconnect) this._setState('offline', { delayMs: Math.max(0, this._retryAt - Date.now()), retryAt: this._retryAt });
  }

  _send(frame) {
    if (!this._ws || this._ws.readyState !== WS_OPEN) return false;
    try {
      this._ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // --- incoming frames ------------------------------------------------------------
  _handleFrame(data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== 'object' || typeof frame.type !== 'string') return;
    switch (frame.type) {
      case 'pong':
        this._clearTimer('pong');
        return;
      case 'joined':
        return this._onJoined(frame);
      case 'message':
        return this._onMessage(frame);
      case 'ack':
        return this._onAck(frame);
      case 'error':
        return this._onError(frame);
      case 'subscribed':
        return this._onSubscribed(frame);
      case 'publication':
        return this._onPublication(frame);
      case 'publications':
        return this._onPublications(frame);
      case 'kicked':
        this._rooms.delete(frame.room);
        this._emit('kicked', frame);
        return;
      case 'left':
        if (this._rooms.has(frame.room)) this._rooms.get(frame.room).joined = false;
        this._emit('left', frame);
        return;
      default:
        // typing, presence, receipt, notification, message_deleted, and
        // anything newer servers add
        this._emit(frame.type, frame);
    }
  }

  _onJoined(frame) {
    const r = this._rooms.get(frame.room);
    if (!r) return;
    r.joined = true;
    if (Number.isSafeInteger(frame.last_seq)) {
      if (r.tracker.lastSeq === null) r.tracker.setBaseline(frame.last_seq);
      else if (frame.last_seq < r.tracker.lastSeq) r.tracker.reset(frame.last_seq);
    }
    this._emit('joined', frame);
  }

  _onMessage(frame) {
    const r = this._rooms.get(frame.room);
    if (!r) return;
    const result = r.tracker.feed(frame);
    this._deliver(r, result.deliver);
    if (result.status === 'gap') this._fillGap(r);
  }

  _deliver(r, messages) {
    for (const m of messages) {
      if (this._rooms.get(r.slug) !== r) return;
      this._emit('message', m);
    }
  }

  _onAck(frame) {
    this.outbox.remove(frame.client_id);
    this._sent.delete(frame.client_id);
    this._sendRetries = 0;
    this._emit('ack', frame);
  }

  _onError(frame) {
    const ref = typeof frame.ref === 'string' ? frame.ref : null;
    const detail = { ...frame };
    if (ref && ref.startsWith('join:')) {
      const slug = ref.slice(5);
      detail.room = slug;
      const r = this._rooms.get(slug);
      if (r && frame.code === 'UNAVAILABLE') {
        setTimeout(() => this._rooms.get(slug) === r && !r.joined && this._sendJoin(r), this._retryDelay());
      } else if (r) {
        this._rooms.delete(slug); // FORBIDDEN / NOT_FOUND: rejoining cannot help
      }
    } else if (ref && ref.startsWith(SUBSCRIBE_REF)) {
      const topic = ref.slice(SUBSCRIBE_REF.length);
      detail.topic = topic;
      const t = this._topics.get(topic);
      if (t) {
        t.awaiting = false;
        if (RETRYABLE_SEND_ERRORS.has(frame.code)) {
          setTimeout(() => this._topics.get(topic) === t && !t.subscribed && !t.awaiting && this._sendSubscribe(t), this._retryDelay());
        } else {
          this._topics.delete(topic); // BAD_REQUEST / NOT_FOUND: resubscribing cannot help
        }
        for (const entry of [...t.handlers]) {
          if (!entry.onError) continue;
          try {
            entry.onError(detail);
          } catch (err) {
            if (globalThis.console) console.error(`realtime: onError for topic '${topic}' failed`, err);
          }
        }
      }
    } else if (ref && this.outbox.has(ref)) {
      const item = this.outbox.get(ref);
      detail.room = item.room;
      detail.client_id = item.client_id;
      this._sent.delete(ref);
      if (RETRYABLE_SEND_ERRORS.has(frame.code)) {
        this._scheduleResend();
      } else {
        this.outbox.remove(ref);
        this._emit('send_failed', { ...item, code: frame.code, message: frame.message });
      }
    }
    this._emit('error', detail);
  }

  _retryDelay() {
    this._sendRetries += 1;
    return this.sendRetryBaseMs + backoffDelay(this._sendRetries, { baseMs: this.sendRetryBaseMs, capMs: this.maxDelayMs, random: this.random });
  }

  _scheduleResend() {
    if (this._timers.resend !== null) return;
    this._timers.resend = setTimeout(() => {
      this._timers.resend = null;
      this._flush();
    }, this._retryDelay());
  }

  // --- rooms ---------------------------------------------------------------------------
  /**
   * Join a room and keep it joined across reconnects. `since`: the highest seq
   * the page already shows (its server-rendered history); later messages are
   * replayed. Without it, delivery starts at the room's end.
   */
  join(slug, { since } = {}) {
    if (typeof slug !== 'string' || !slug) throw new TypeError('join needs a room slug');
    let r = this._rooms.get(slug);
    if (!r) {
      r = { slug, tracker: new RoomTracker({ lastSeq: since }), joined: false, filling: false, gapFailures: 0, readSeq: null };
      this._rooms.set(slug, r);
    } else if (since !== undefined) {
      r.tracker.setBaseline(since);
    }
    this._sendJoin(r);
    return this;
  }

  _sendJoin(r) {
    const frame = { type: 'join', room: r.slug, ref: `join:${r.slug}` };
    if (r.tracker.lastSeq !== null) frame.since = r.tracker.lastSeq;
    this._send(frame);
  }

  leave(slug) {
    if (this._rooms.delete(slug)) this._send({ type: 'leave', room: slug });
    return this;
  }

  /** The highest seq delivered in a joined room (null if none yet). */
  lastSeq(slug) {
    const r = this._rooms.get(slug);
    return r ? r.tracker.lastSeq : null;
  }

  /** Messages of a room (or all) still waiting for their ack, oldest first. */
  pending(slug) {
    return this.outbox.list(slug);
  }

  /**
   * Post `content` to a room. Returns the message's client_id at once; the
   * message waits in the outbox (sent now if connected, else after the next
   * connect) until its `ack` arrives.
   */
  send(slug, content) {
    if (typeof slug !== 'string' || !slug) throw new TypeError('send needs a room slug');
    if (typeof content !== 'string') throw new TypeError('content must be a string');
    const clientId = uuid4();
    const frame = { type: 'message', room: slug, content, client_id: clientId, ref: clientId };
    if (utf8Length(JSON.stringify(frame)) > this.maxFrameBytes) {
      throw new RangeError(`message is larger than ${this.maxFrameBytes} bytes`);
    }
    const { dropped } = this.outbox.add({ client_id: clientId, room: slug, content, created_at: new Date().toISOString() });
    if (dropped.length) {
      for (const item of dropped) this._sent.delete(item.client_id);
      this._emit('outbox_overflow', { dropped });
    }
    this._flush();
    return clientId;
  }

  /** Send every outbox item not yet sent on this socket, oldest first, with its own client_id. */
  _flush() {
    if (!this._ws || this._ws.readyState !== WS_OPEN) return;
    for (const item of this.outbox.list()) {
      if (this._sent.has(item.client_id)) continue;
      const ok = this._send({ type: 'message', room: item.room, content: item.content, client_id: item.client_id, ref: item.client_id });
      if (!ok) return;
      this._sent.add(item.client_id);
    }
  }

  /** Tell the room this user is (or stopped) typing. Dropped when not connected. */
  typing(slug, isTyping) {
    const r = this._rooms.get(slug);
    if (!r || !r.joined) return false;
    return this._send({ type: 'typing', room: slug, is_typing: !!isTyping, ref: 'typing' });
  }

  /** Mark the room read up to `seq` (sent now, or on the next connect). */
  read(slug, seq) {
    if (!Number.isSafeInteger(seq) || seq < 0) throw new TypeError('seq must be a non-negative integer');
    const r = this._rooms.get(slug);
    if (r) r.readSeq = Math.max(r.readSeq === null ? 0 : r.readSeq, seq);
    return this._send({ type: 'read', room: slug, seq, ref: 'read' });
  }

  /** 'online' or 'away', kept across reconnects. */
  setPresence(status) {
    if (status !== 'online' && status !== 'away') throw new TypeError("status must be 'online' or 'away'");
    if (status === this._presence) return false;
    this._presence = status;
    return this._send({ type: 'presence', status });
  }

  // --- topics ----------------------------------------------------------------------------
  /**
   * Subscribe `handler(data, publication)` to a topic (`namespace:name`,
   * docs/topics.md), now and after every reconnect. Returns an unsubscribe
   * function. Each handler gets each publication once, in offset order; the
   * handlers of one topic share one subscription on the wire, and the last one
   * to unsubscribe sends `unsubscribe`.
   *
   * `since` and `epoch`: where the page already stands (a position saved from
   * topicPosition(), or `since: 0` alone for the current values); without
   * them only later publications come. They only apply to a topic not yet
   * subscribed. `onError(error)` gets this topic's refusals: RATE_LIMITED and
   * UNAVAILABLE are retried, any other ends the subscription.
   */
  subscribe(topic, handler, { since, epoch, onError } = {}) {
    if (typeof topic !== 'string' || !topic) throw new TypeError('subscribe needs a topic');
    if (typeof handler !== 'function') throw new TypeError('subscribe needs a handler function');
    if (since != null && (!Number.isSafeInteger(since) || since < 0)) throw new TypeError('since must be a non-negative integer');
    if (epoch != null && typeof epoch !== 'string') throw new TypeError('epoch must be a string');
    if (onError != null && typeof onError !== 'function') throw new TypeError('onError must be a function');
    const entry = { handler, onError: onError || null };
    let t = this._topics.get(topic);
    if (!t) {
      t = { topic, handlers: new Set([entry]), epoch: epoch != null ? epoch : null, offset: since != null ? since : null, subscribed: false, awaiting: false, sentSince: false };
      this._topics.set(topic, t);
      this._sendSubscribe(t);
    } else {
      t.handlers.add(entry);
    }
    return () => {
      if (this._topics.get(topic) !== t || !t.handlers.delete(entry) || t.handlers.size) return;
      this._topics.delete(topic);
      this._send({ type: 'unsubscribe', topic });
    };
  }

  _sendSubscribe(t) {
    // batch: several publications per frame when the topic is busy (one
    // `publications` frame per round of the server's), delivered one by one.
    const frame = { type: 'subscribe', topic: t.topic, batch: true, ref: `${SUBSCRIBE_REF}${t.topic}` };
    if (t.offset !== null) frame.since = t.offset;
    if (t.epoch !== null) frame.epoch = t.epoch;
    if (!this._send(frame)) return;
    t.awaiting = true;
    t.sentSince = t.offset !== null;
  }

  /** Where a subscribed topic stands: {epoch, offset} (the highest offset delivered), or null. */
  topicPosition(topic) {
    const t = this._topics.get(topic);
    if (!t || (t.epoch === null && t.offset === null)) return null;
    return { epoch: t.epoch, offset: t.offset };
  }

  _onSubscribed(frame) {
    const t = this._topics.get(frame.topic);
    if (!t) return;
    // A replay follows the answer to a subscribe with `since`, and a new
    // subscribed the server sends by itself (a new epoch: the latest values).
    const replay = t.awaiting ? t.sentSince : true;
    const epoch = typeof frame.epoch === 'string' ? frame.epoch : null;
    // Offsets only compare within an epoch: in a new one, deliver from its start.
    const base = epoch !== null && epoch === t.epoch && t.offset !== null ? t.offset : 0;
    const offset = Number.isSafeInteger(frame.offset) ? frame.offset : 0;
    t.epoch = epoch;
    t.offset = replay ? base : Math.max(base, offset);
    t.subscribed = true;
    t.awaiting = false;
    this._emit('subscribed', frame);
  }

  _onPublications(frame) {
    if (!Array.isArray(frame.publications)) return;
    for (const entry of frame.publications) {
      if (entry && typeof entry === 'object') this._onPublication({ type: 'publication', topic: frame.topic, ...entry });
    }
  }

  _onPublication(frame) {
    const t = this._topics.get(frame.topic);
    // Until its `subscribed` arrives, a topic's publications belong to an
    // earlier subscription (one unsubscribed, or a previous socket's).
    if (!t || !t.subscribed || !Number.isSafeInteger(frame.offset)) return;
    if (t.offset !== null && frame.offset <= t.offset) return; // already delivered
    t.offset = frame.offset;
    for (const entry of [...t.handlers]) {
      if (this._topics.get(t.topic) !== t) return;
      if (!t.handlers.has(entry)) continue;
      try {
        entry.handler(frame.data, frame);
      } catch (err) {
        // one broken handler must not break delivery to the others
        if (globalThis.console) console.error(`realtime: handler for topic '${t.topic}' failed`, err);
      }
    }
  }

  // --- gap fill from REST -------------------------------------------------------------
  async _fillGap(r) {
    if (r.filling) return;
    r.filling = true;
    try {
      while (r.tracker.gap && this._rooms.get(r.slug) === r) {
        const { after, until } = r.tracker.gap;
        let fetched;
        try {
          fetched = await this._fetchAfter(r.slug, after, until);
        } catch (err) {
          r.gapFailures += 1;
          this._emit('error', { code: 'GAP_FILL_FAILED', message: String((err && err.message) || err), room: r.slug, attempt: r.gapFailures });
          if (r.gapFailures >= this.gapRetryLimit) {
            r.gapFailures = 0;
            this._deliver(r, r.tracker.skipGap());
            break;
          }
          await new Promise((resolve) => setTimeout(resolve, this.gapRetryBaseMs + backoffDelay(r.gapFailures, { baseMs: this.gapRetryBaseMs, capMs: this.maxDelayMs, random: this.random })));
          continue;
        }
        r.gapFailures = 0;
        if (this._rooms.get(r.slug) !== r) break;
        const { deliver } = r.tracker.fill(fetched.messages, { until: fetched.coveredUntil });
        this._deliver(r, deliver);
      }
    } finally {
      r.filling = false;
    }
  }

  /**
   * REST history after `after`, ascending, following `next` until it is null
   * or the page reaches `until`. Returns {messages, coveredUntil}.
   */
  async _fetchAfter(slug, after, until) {
    if (!this._fetch) throw new Error('no fetch available');
    let url = `${this.apiBase}/api/rooms/${encodeURIComponent(slug)}/messages/?after=${after}&limit=${HISTORY_PAGE}`;
    const messages = [];
    let maxSeq = after;
    for (let pages = 0; url && pages < 10000; pages += 1) {
      const res = await this._fetch(url, { credentials: 'same-origin', headers: { Accept: 'application/json', ...this.fetchHeaders } });
      if (!res.ok) throw new Error(`history request failed: HTTP ${res.status}`);
      const body = await res.json();
      const results = body && Array.isArray(body.results) ? body.results : [];
      for (const m of results) {
        if (isMessage(m)) {
          messages.push(m);
          maxSeq = Math.max(maxSeq, m.seq);
        }
      }
      if (!body || !body.next || !results.length || maxSeq >= until) break;
      url = this._sameOrigin(body.next);
    }
    return { messages, coveredUntil: Math.max(until, maxSeq) };
  }

  /** `next` links are absolute; keep them on our own origin and scheme (a TLS proxy may rewrite the scheme). */
  _sameOrigin(link) {
    try {
      const base = globalThis.location ? globalThis.location.href : 'http://localhost/';
      const u = new URL(link, base);
      return `${this.apiBase}${u.pathname}${u.search}`;
    } catch {
      return link;
    }
  }
}
