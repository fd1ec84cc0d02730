// Run with: node --test static/realtime/tests/
import { test, describe } from 'node:test';
import assert from 'node:assert/strict';

import { backoffDelay, Outbox, RoomTracker, RealtimeClient, uuid4 } from '../../chat/static/realtime/client.js';

// --- helpers ----------------------------------------------------------------------

class FakeStorage {
  constructor() {
    this.data = new Map();
  }
  getItem(k) {
    return this.data.has(k) ? this.data.get(k) : null;
  }
  setItem(k, v) {
    this.data.set(k, String(v));
  }
  removeItem(k) {
    this.data.delete(k);
  }
}

class ThrowingStorage {
  getItem() {
    throw new Error('SecurityError');
  }
  setItem() {
    throw new Error('QuotaExceededError');
  }
}

const msg = (seq, extra = {}) => ({
  type: 'message',
  room: 'general',
  id: 1000 + seq,
  seq,
  client_id: `c-${seq}`,
  user: { id: 2, username: 'bob' },
  content: `m${seq}`,
  created_at: '2025-01-01T00:00:00Z',
  ...extra,
});

const item = (n, room = 'general') => ({ client_id: `id-${n}`, room, content: `text ${n}` });

/** A WebSocket stand-in the test drives by hand. */
class FakeWebSocket {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    FakeWebSocket.instances.push(this);
  }
  send(data) {
    if (this.readyState !== 1) throw new Error('not open');
    this.sent.push(JSON.parse(data));
  }
  close(code, reason) {
    this.readyState = 3;
    this.closedWith = { code, reason };
  }
  // test side
  open() {
    this.readyState = 1;
    this.onopen && this.onopen({});
  }
  receive(frame) {
    this.onmessage && this.onmessage({ data: JSON.stringify(frame) });
  }
  serverClose(code = 1006, reason = '') {
    this.readyState = 3;
    this.onclose && this.onclose({ code, reason });
  }
  frames(type) {
    return this.sent.filter((f) => f.type === type);
  }
}

const tick = (ms = 0) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitFor(predicate, what = 'condition', timeoutMs = 2000) {
  const start = Date.now();
  while (!predicate()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await tick(2);
  }
}

function makeClient(options = {}) {
  FakeWebSocket.instances = [];
  const client = new RealtimeClient({
    url: 'ws://test/ws/',
    WebSocket: FakeWebSocket,
    storage: null,
    random: () => 0, // no jitter wait: reconnects are immediate in tests
    pingIntervalMs: 60000,
    pongTimeoutMs: 60000,
    eventTarget: null,
    ...options,
  });
  const seen = {};
  for (const type of ['state', 'message', 'joined', 'ack', 'error', 'send_failed', 'outbox_overflow', 'unauthorized', 'kicked', 'typing', 'presence', 'receipt', 'notification', 'message_deleted']) {
    seen[type] = [];
    client.on(type, (e) => seen[type].push(e));
  }
  return { client, seen, sockets: FakeWebSocket.instances };
}

async function connected(client, sockets, index = 0) {
  await waitFor(() => sockets.length > index, `socket #${index}`);
  sockets[index].open();
  return sockets[index];
}

// --- backoffDelay -----------------------------------------------------------------------

describe('backoffDelay (full jitter)', () => {
  test('stays within [0, min(cap, base * 2^attempt)) for every attempt', () => {
    for (let attempt = 0; attempt < 30; attempt += 1) {
      const ceiling = Math.min(30000, 500 * 2 ** attempt);
      for (let i = 0; i < 200; i += 1) {
        const d = backoffDelay(attempt, { baseMs: 500, capMs: 30000 });
        assert.ok(Number.isInteger(d), 'an integer number of ms');
        assert.ok(d >= 0 && d < ceiling, `attempt ${attempt}: ${d} not in [0, ${ceiling})`);
      }
    }
  });

  test('the lowest draw is 0 and the highest draw reaches just under the ceiling', () => {
    assert.equal(backoffDelay(3, { random: () => 0 }), 0);
    assert.equal(backoffDelay(0, { random: () => 0.999999 }), 499);
    assert.equal(backoffDelay(3, { random: () => 0.999999 }), 3999);
    assert.equal(backoffDelay(3, { random: () => 1 }), 3999, 'a random() of 1 still stays under the ceiling');
  });

  test('the ceiling doubles with each attempt (0.5 s, 1 s, 2 s, 4 s …)', () => {
    const top = (attempt) => backoffDelay(attempt, { random: () => 0.5 });
    assert.deepEqual([0, 1, 2, 3, 4].map(top), [250, 500, 1000, 2000, 4000]);
  });

  test('is capped at 30 s by default, however many attempts', () => {
    for (const attempt of [6, 7, 10, 100, 1e6]) {
      assert.equal(backoffDelay(attempt, { random: () => 0.5 }), 15000);
      assert.ok(backoffDelay(attempt, { random: () => 0.999999 }) < 30000);
    }
  });

  test('spreads reconnects out: draws are not all alike (jitter)', () => {
    const draws = new Set(Array.from({ length: 50 }, () => backoffDelay(8)));
    assert.ok(draws.size > 10, `only ${draws.size} distinct delays`);
  });

  test('a nonsense attempt is treated as the first', () => {
    for (const attempt of [-1, NaN, undefined, 'x']) {
      assert.equal(backoffDelay(attempt, { random: () => 0.5 }), 250);
    }
  });
});

// --- Outbox -----------------------------------------------------------------------------

describe('Outbox', () => {
  test('keeps items in the order they were added', () => {
    const box = new Outbox();
    for (let i = 1; i <= 5; i += 1) box.add(item(i));
    assert.deepEqual(box.list().map((x) => x.client_id), ['id-1', 'id-2', 'id-3', 'id-4', 'id-5']);
    assert.equal(box.size, 5);
  });

  test('is bounded: the oldest are dropped and returned when full', () => {
    const box = new Outbox({ limit: 3 });
    for (let i = 1; i <= 3; i += 1) assert.deepEqual(box.add(item(i)).dropped, []);
    const { added, dropped } = box.add(item(4));
    assert.equal(added, true);
    assert.deepEqual(dropped.map((x) => x.client_id), ['id-1']);
    assert.deepEqual(box.list().map((x) => x.client_id), ['id-2', 'id-3', 'id-4']);
  });

  test('defaults to 100 items', () => {
    const box = new Outbox();
    for (let i = 1; i <= 105; i += 1) box.add(item(i));
    assert.equal(box.size, 100);
    assert.equal(box.list()[0].client_id, 'id-6');
  });

  test('deduplicates by client_id', () => {
    const box = new Outbox();
    box.add(item(1));
    const again = box.add({ ...item(1), content: 'changed' });
    assert.equal(again.added, false);
    assert.equal(box.size, 1);
    assert.equal(box.get('id-1').content, 'text 1');
  });

  test('removes an item by client_id (its ack), keeping the others in order', () => {
    const box = new Outbox();
    for (let i = 1; i <= 4; i += 1) box.add(item(i));
    assert.equal(box.remove('id-2').content, 'text 2');
    assert.equal(box.remove('id-2'), null, 'a second ack is harmless');
    assert.equal(box.remove('unknown'), null);
    assert.deepEqual(box.list().map((x) => x.client_id), ['id-1', 'id-3', 'id-4']);
  });

  test('persists in storage: a new Outbox on the same storage and key sees the items (a reload)', () => {
    const storage = new FakeStorage();
    const before = new Outbox({ storage, key: 'realtime.outbox.7' });
    before.add(item(1));
    before.add(item(2));
    before.remove('id-1');
    const after = new Outbox({ storage, key: 'realtime.outbox.7' });
    assert.deepEqual(after.list().map((x) => x.client_id), ['id-2']);
    assert.equal(new Outbox({ storage, key: 'realtime.outbox.8' }).size, 0, 'another user has another key');
  });

  test('two outboxes sharing storage (two tabs) see each other’s changes', () => {
    const storage = new FakeStorage();
    const tabA = new Outbox({ storage, key: 'k' });
    const tabB = new Outbox({ storage, key: 'k' });
    tabA.add(item(1));
    tabB.add(item(2));
    tabA.remove('id-2');
    assert.deepEqual(tabB.list().map((x) => x.client_id), ['id-1']);
  });

  test('filters by room', () => {
    const box = new Outbox();
    box.add(item(1, 'general'));
    box.add(item(2, 'random'));
    box.add(item(3, 'general'));
    assert.deepEqual(box.list('general').map((x) => x.client_id), ['id-1', 'id-3']);
  });

  test('ignores corrupt storage and keeps working in memory when storage throws', () => {
    const storage = new FakeStorage();
    storage.setItem('k', '{not json');
    const box = new Outbox({ storage, key: 'k' });
    assert.equal(box.size, 0);
    box.add(item(1));
    assert.equal(new Outbox({ storage, key: 'k' }).size, 1);

    const broken = new Outbox({ storage: new ThrowingStorage(), key: 'k' });
    broken.add(item(1));
    broken.add(item(2));
    broken.remove('id-1');
    assert.deepEqual(broken.list().map((x) => x.client_id), ['id-2']);
  });

  test('list() returns copies: changing them does not change the outbox', () => {
    const box = new Outbox();
    box.add(item(1));
    box.list()[0].content = 'mutated';
    assert.equal(box.get('id-1').content, 'text 1');
  });

  test('refuses items without client_id, room and content', () => {
    assert.throws(() => new Outbox().add({ room: 'r', content: 'x' }), TypeError);
  });
});

// --- RoomTracker -------------------------------------------------------------------------

describe('RoomTracker', () => {
  const seqs = (list) => list.map((m) => m.seq);

  test('delivers consecutive messages in order', () => {
    const t = new RoomTracker({ lastSeq: 0 });
    for (let s = 1; s <= 3; s += 1) {
      const r = t.feed(msg(s));
      assert.equal(r.status, 'deliver');
      assert.deepEqual(seqs(r.deliver), [s]);
    }
    assert.equal(t.lastSeq, 3);
  });

  test('takes the first message as it comes when it has no baseline', () => {
    const t = new RoomTracker();
    assert.equal(t.feed(msg(42)).status, 'deliver');
    assert.equal(t.feed(msg(43)).status, 'deliver');
    assert.equal(t.feed(msg(45)).status, 'gap');
  });

  test('drops duplicates by id and by seq already delivered', () => {
    const t = new RoomTracker({ lastSeq: 0 });
    t.feed(msg(1));
    t.feed(msg(2));
    assert.equal(t.feed(msg(2)).status, 'duplicate');
    assert.equal(t.feed(msg(1)).status, 'duplicate');
    assert.equal(t.feed(msg(3, { id: 1001 })).status, 'duplicate', 'an id seen before');
    assert.equal(t.lastSeq, 2);
  });

  test('drops messages at or below the baseline (a resume overlapping the page history)', () => {
    const t = new RoomTracker({ lastSeq: 10 });
    assert.equal(t.feed(msg(9)).status, 'duplicate');
    assert.equal(t.feed(msg(10)).status, 'duplicate');
    assert.equal(t.feed(msg(11)).status, 'deliver');
  });

  test('notices a gap and holds later messages back until it is filled', () => {
    const t = new RoomTracker({ lastSeq: 2 });
    const r = t.feed(msg(5));
    assert.equal(r.status, 'gap');
    assert.deepEqual(r.gap, { after: 2, until: 4 });
    assert.deepEqual(r.deliver, []);
    const r2 = t.feed(msg(6));
    assert.equal(r2.status, 'buffered', 'one gap at a time');
    assert.equal(t.feed(msg(5)).status, 'duplicate', 'already held back');
    const filled = t.fill([msg(3), msg(4), msg(5)], { until: 4 });
    assert.deepEqual(seqs(filled.deliver), [3, 4, 5, 6]);
    assert.equal(filled.gap, null);
    assert.equal(t.lastSeq, 6);
    assert.equal(t.feed(msg(7)).status, 'deliver');
  });

  test('a missing message arriving late closes the gap in order', () => {
    const t = new RoomTracker({ lastSeq: 1 });
    t.feed(msg(3));
    t.feed(msg(4));
    const r = t.feed(msg(2));
    assert.equal(r.status, 'deliver');
    assert.deepEqual(seqs(r.deliver), [2, 3, 4]);
    assert.equal(t.gap, null);
  });

  test('a hole that REST does not return was deleted: it is skipped', () => {
    const t = new RoomTracker({ lastSeq: 2 });
    t.feed(msg(5));
    const filled = t.fill([msg(4)], { until: 4 }); // 3 was deleted
    assert.deepEqual(seqs(filled.deliver), [4, 5]);
    assert.equal(t.lastSeq, 5);
  });

  test('a second hole beyond what REST covered opens a new gap instead of being skipped', () => {
    const t = new RoomTracker({ lastSeq: 2 });
    t.feed(msg(5));
    t.feed(msg(9)); // 6..8 missing too
    const first = t.fill([msg(3), msg(4)], { until: 4 });
    assert.deepEqual(seqs(first.deliver), [3, 4, 5]);
    assert.deepEqual(first.gap, { after: 5, until: 8 });
    const second = t.fill([msg(6), msg(7), msg(8)], { until: 8 });
    assert.deepEqual(seqs(second.deliver), [6, 7, 8, 9]);
    assert.equal(second.gap, null);
  });

  test('fill ignores what was already delivered and delivers REST extras in order', () => {
    const t = new RoomTracker({ lastSeq: 2 });
    t.feed(msg(4));
    const filled = t.fill([msg(2), msg(3), msg(4), msg(5), msg(6)], { until: 6 });
    assert.deepEqual(seqs(filled.deliver), [3, 4, 5, 6]);
    assert.equal(t.feed(msg(5)).status, 'duplicate');
    assert.equal(t.feed(msg(6)).status, 'duplicate');
  });

  test('skipGap delivers what was held back, in order', () => {
    const t = new RoomTracker({ lastSeq: 1 });
    t.feed(msg(7));
    t.feed(msg(5));
    assert.deepEqual(seqs(t.skipGap()), [5, 7]);
    assert.equal(t.lastSeq, 7);
    assert.equal(t.gap, null);
  });

  test('setBaseline only applies before anything is seen; reset starts over', () => {
    const t = new RoomTracker();
    t.setBaseline(5);
    t.setBaseline(9);
    assert.equal(t.lastSeq, 5);
    t.reset(2);
    assert.equal(t.lastSeq, 2);
    assert.equal(t.feed(msg(3)).status, 'deliver');
  });

  test('ignores frames that are not messages', () => {
    const t = new RoomTracker({ lastSeq: 0 });
    assert.equal(t.feed({ type: 'message', seq: 'x', id: 1 }).status, 'invalid');
    assert.equal(t.feed(null).status, 'invalid');
  });
});

test('uuid4 returns RFC 4122 version 4 ids', () => {
  const id = uuid4();
  assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(uuid4(), id);
});

// --- RealtimeClient over a fake socket ---------------------------------------------------

describe('RealtimeClient', () => {
  test('joins with since and reports state changes', async () => {
    const { client, seen, sockets } = makeClient();
    client.join('general', { since: 10 });
    client.connect();
    const ws = await connected(client, sockets);
    assert.deepEqual(ws.frames('join'), [{ type: 'join', room: 'general', since: 10, ref: 'join:general' }]);
    assert.deepEqual(seen.state.map((s) => s.state), ['connecting', 'online']);
    client.close();
    assert.equal(seen.state.at(-1).state, 'closed');
  });

  test('a message sent while offline waits in the outbox and is sent with the same client_id on connect', async () => {
    const storage = new FakeStorage();
    const { client, seen, sockets } = makeClient({ storage, userId: 1 });
    client.join('general', { since: 0 });
    const clientId = client.send('general', 'hello');
    assert.equal(client.pending('general').length, 1);
    client.connect();
    const ws = await connected(client, sockets);
    const [frame] = ws.frames('message');
    assert.equal(frame.client_id, clientId);
    assert.equal(frame.content, 'hello');
    assert.ok(ws.sent.findIndex((f) => f.type === 'join') < ws.sent.findIndex((f) => f.type === 'message'), 'join first');
    ws.receive(msg(1, { client_id: clientId, user: { id: 1, username: 'alice' } }));
    ws.receive({ type: 'ack', room: 'general', client_id: clientId, id: 1001, seq: 1 });
    assert.equal(client.pending('general').length, 0, 'the ack empties the outbox');
    assert.equal(storage.getItem('realtime.outbox.1'), null);
    assert.equal(seen.ack.length, 1);
    assert.deepEqual(seen.message.map((m) => m.seq), [1]);
    client.close();
  });

  test('an unacknowledged message is replayed after a reconnect with the same client_id, and the room resumes from the last seq', async () => {
    const { client, seen, sockets } = makeClient();
    client.join('general', { since: 4 });
    client.connect();
    const first = await connected(client, sockets, 0);
    first.receive({ type: 'joined', room: 'general', last_seq: 4, presence: [], truncated: false });
    first.receive(msg(5));
    first.receive(msg(6));
    const clientId = client.send('general', 'are you there?');
    assert.equal(first.frames('message').length, 1);
    first.serverClose(1006);
    assert.equal(seen.state.at(-1).state, 'reconnecting');
    const second = await connected(client, sockets, 1);
    assert.deepEqual(second.frames('join'), [{ type: 'join', room: 'general', since: 6, ref: 'join:general' }]);
    assert.deepEqual(second.frames('message').map((f) => f.client_id), [clientId]);
    // The resume repeats 6 (dropped) and sends 7 once.
    second.receive(msg(6));
    second.receive(msg(7));
    second.receive(msg(7));
    assert.deepEqual(seen.message.map((m) => m.seq), [5, 6, 7]);
    client.close();
  });

  test('a full outbox drops the oldest message and says so', async () => {
    const { client, seen } = makeClient({ outboxLimit: 2 });
    const a = client.send('general', 'a');
    client.send('general', 'b');
    client.send('general', 'c');
    assert.equal(seen.outbox_overflow.length, 1);
    assert.deepEqual(seen.outbox_overflow[0].dropped.map((x) => x.client_id), [a]);
    assert.deepEqual(client.pending().map((x) => x.content), ['b', 'c']);
  });

  test('the outbox survives a reload: a new client for the same user replays it', async () => {
    const storage = new FakeStorage();
    const before = makeClient({ storage, userId: 3 });
    const clientId = before.client.send('random', 'written offline');
    const after = makeClient({ storage, userId: 3 });
    after.client.connect();
    const ws = await connected(after.client, after.sockets);
    assert.deepEqual(ws.frames('message').map((f) => [f.client_id, f.room, f.content]), [[clientId, 'random', 'written offline']]);
    after.client.close();
  });

  test('a seq gap is filled from REST (following next) and delivered in order', async () => {
    const calls = [];
    const pages = {
      '/api/rooms/general/messages/?after=2&limit=100': { results: [msg(3), msg(4)], next: 'http://testserver/api/rooms/general/messages/?after=4&limit=100', previous: null },
      '/api/rooms/general/messages/?after=4&limit=100': { results: [msg(5), msg(6)], next: null, previous: null },
    };
    const fetch = async (url) => {
      calls.push(url);
      return { ok: true, status: 200, json: async () => pages[url] };
    };
    const { client, seen, sockets } = makeClient({ fetch });
    client.join('general', { since: 0 });
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive(msg(1));
    ws.receive(msg(2));
    ws.receive(msg(6)); // 3..5 lost by the layer
    ws.receive(msg(7));
    await waitFor(() => seen.message.length === 7, 'gap fill');
    assert.deepEqual(seen.message.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7]);
    assert.deepEqual(calls, Object.keys(pages));
    ws.receive(msg(8));
    assert.equal(seen.message.at(-1).seq, 8);
    client.close();
  });

  test('close 4401 means not authenticated: it says so and stops reconnecting', async () => {
    const { client, seen, sockets } = makeClient();
    client.connect();
    const ws = await connected(client, sockets);
    ws.serverClose(4401);
    await tick(20);
    assert.equal(sockets.length, 1, 'no reconnect');
    assert.equal(seen.unauthorized.length, 1);
    assert.equal(seen.state.at(-1).state, 'unauthorized');
  });

  test('never gives up on other closes: reconnects again and again', async () => {
    const { client, sockets } = makeClient();
    client.connect();
    for (let i = 0; i < 5; i += 1) {
      await waitFor(() => sockets.length > i, `attempt ${i}`);
      sockets[i].serverClose(1011);
    }
    await waitFor(() => sockets.length >= 6, 'sixth attempt');
    client.close();
  });

  test('reconnect delays follow the backoff with growing attempts', async () => {
    const { client, seen, sockets } = makeClient({ random: () => 0.5, baseDelayMs: 2, maxDelayMs: 8 });
    client.connect();
    for (let i = 0; i < 4; i += 1) {
      await waitFor(() => sockets.length > i, `attempt ${i}`);
      sockets[i].serverClose(1006);
    }
    const delays = seen.state.filter((s) => s.state === 'reconnecting').map((s) => s.delayMs);
    assert.deepEqual(delays, [1, 2, 4, 4]);
    client.close();
  });

  test('pings, and reconnects when no pong comes back in time', async () => {
    const { client, sockets } = makeClient({ pingIntervalMs: 10, pongTimeoutMs: 10 });
    client.connect();
    const ws = await connected(client, sockets);
    await waitFor(() => ws.frames('ping').length >= 1, 'ping');
    await waitFor(() => sockets.length === 2, 'reconnect after pong timeout');
    assert.equal(ws.closedWith.code, 4000);
    client.close();
  });

  test('a pong in time keeps the connection', async () => {
    const { client, sockets } = makeClient({ pingIntervalMs: 10, pongTimeoutMs: 30 });
    client.connect();
    const ws = await connected(client, sockets);
    for (let i = 0; i < 5; i += 1) {
      const pings = ws.frames('ping').length;
      await waitFor(() => ws.frames('ping').length > pings, 'ping');
      ws.receive({ type: 'pong' });
    }
    assert.equal(sockets.length, 1);
    client.close();
  });

  test('a refused message leaves the outbox and is reported; a rate-limited one is retried', async () => {
    const { client, seen, sockets } = makeClient({ sendRetryBaseMs: 5 });
    client.connect();
    const ws = await connected(client, sockets);
    const bad = client.send('general', 'x'.repeat(5000));
    ws.receive({ type: 'error', code: 'TOO_LARGE', message: 'too long', ref: bad });
    assert.equal(client.pending().length, 0);
    assert.equal(seen.send_failed[0].client_id, bad);
    const slow = client.send('general', 'hi');
    ws.receive({ type: 'error', code: 'RATE_LIMITED', message: 'slow down', ref: slow });
    assert.equal(client.pending().length, 1);
    await waitFor(() => ws.frames('message').filter((f) => f.client_id === slow).length === 2, 'retry');
    client.close();
  });

  test('events reach subscribers until they unsubscribe', async () => {
    const { client, sockets } = makeClient();
    const got = [];
    const off = client.on('typing', (e) => got.push(e.user.username));
    client.join('general', { since: 0 });
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive({ type: 'typing', room: 'general', user: { id: 2, username: 'bob' }, is_typing: true });
    off();
    ws.receive({ type: 'typing', room: 'general', user: { id: 3, username: 'carol' }, is_typing: true });
    assert.deepEqual(got, ['bob']);
    client.close();
  });

  test('typing and presence frames; presence survives a reconnect', async () => {
    const { client, sockets } = makeClient();
    client.join('general', { since: 0 });
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive({ type: 'joined', room: 'general', last_seq: 0, presence: [], truncated: false });
    client.typing('general', true);
    client.setPresence('away');
    client.read('general', 3);
    assert.deepEqual(ws.frames('typing'), [{ type: 'typing', room: 'general', is_typing: true, ref: 'typing' }]);
    assert.deepEqual(ws.frames('presence'), [{ type: 'presence', status: 'away' }]);
    assert.deepEqual(ws.frames('read'), [{ type: 'read', room: 'general', seq: 3, ref: 'read' }]);
    ws.serverClose(1006);
    const again = await connected(client, sockets, 1);
    assert.equal(again.sent[0].type, 'presence', 'away is restated before the joins');
    client.close();
  });

  test('a kicked room is not rejoined after a reconnect', async () => {
    const { client, seen, sockets } = makeClient();
    client.join('general', { since: 0 });
    client.join('random', { since: 0 });
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive({ type: 'kicked', room: 'general', reason: 'banned' });
    assert.equal(seen.kicked.length, 1);
    ws.serverClose(1006);
    const again = await connected(client, sockets, 1);
    assert.deepEqual(again.frames('join').map((f) => f.room), ['random']);
    client.close();
  });
});
