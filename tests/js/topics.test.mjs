// Topic subscriptions of RealtimeClient (docs/topics.md, "WebSocket, on /ws/").
// Run with: node --test tests/js/
import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';

import { RealtimeClient } from '../../chat/static/realtime/client.js';

// --- helpers ----------------------------------------------------------------------

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

// Closed after each test even when it fails (an open client's timers would keep node running).
const clients = [];

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
  clients.push(client);
  const seen = {};
  for (const type of ['subscribed', 'unsubscribed', 'error']) {
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

const TOPIC = 'public:scores';
const REF = `subscribe:${TOPIC}`;

const subscribed = (offset, epoch, recovered, topic = TOPIC) => ({ type: 'subscribed', topic, offset, epoch, recovered, ref: `subscribe:${topic}` });
const pub = (offset, data = { n: offset }, extra = {}) => ({ type: 'publication', topic: TOPIC, offset, data, ...extra });

/** A handler that records what it was given. */
function recorder() {
  const calls = [];
  const fn = (data, publication) => calls.push({ data, publication });
  fn.calls = calls;
  fn.offsets = () => calls.map((c) => c.publication.offset);
  return fn;
}

/** Run `body` with console.error captured; returns what was logged. */
async function capturingConsoleError(body) {
  const logged = [];
  const original = console.error;
  console.error = (...args) => logged.push(args);
  try {
    await body();
  } finally {
    console.error = original;
  }
  return logged;
}

// --- subscribe ----------------------------------------------------------------------

describe('RealtimeClient topics', () => {
  afterEach(() => {
    for (const client of clients.splice(0)) client.close();
  });

  test('two handlers on one topic share one subscribe frame, and both get every publication', async () => {
    const { client, sockets } = makeClient();
    client.connect();
    const ws = await connected(client, sockets);
    const a = recorder();
    const b = recorder();
    client.subscribe(TOPIC, a);
    client.subscribe(TOPIC, b);
    assert.deepEqual(ws.frames('subscribe'), [{ type: 'subscribe', topic: TOPIC, batch: true, ref: REF }], 'no since or epoch when none is known');
    ws.receive(subscribed(7, 'E1', false));
    ws.receive(pub(8, { home: 2, away: 1 }, { key: 'match-7' }));
    assert.deepEqual(a.calls, [{ data: { home: 2, away: 1 }, publication: pub(8, { home: 2, away: 1 }, { key: 'match-7' }) }]);
    assert.deepEqual(b.offsets(), [8]);
    client.close();
  });

  test('subscribing before connect sends the subscribe once the socket opens, with the caller\'s since and epoch', async () => {
    const { client, sockets } = makeClient();
    client.subscribe(TOPIC, recorder(), { since: 12, epoch: 'E1' });
    client.subscribe('orders:42', recorder(), { since: 0 });
    client.connect();
    const ws = await connected(client, sockets);
    assert.deepEqual(ws.frames('subscribe'), [
      { type: 'subscribe', topic: TOPIC, batch: true, since: 12, epoch: 'E1', ref: REF },
      { type: 'subscribe', topic: 'orders:42', batch: true, since: 0, ref: 'subscribe:orders:42' },
    ]);
    client.close();
  });

  test('publications are delivered in offset order; repeats and older offsets are dropped', async () => {
    const { client, sockets } = makeClient();
    const h = recorder();
    client.subscribe(TOPIC, h);
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive(subscribed(0, 'E1', false));
    for (const offset of [1, 2, 2, 4, 3, 4, 5]) ws.receive(pub(offset));
    assert.deepEqual(h.offsets(), [1, 2, 4, 5], 'offsets may skip (conflation), never go back or repeat');
    assert.deepEqual(client.topicPosition(TOPIC), { epoch: 'E1', offset: 5 });
    client.close();
  });

  test('a publications frame (the batches client.js asks for) is delivered publication by publication, in order, once', async () => {
    const { client, sockets } = makeClient();
    const h = recorder();
    client.subscribe(TOPIC, h);
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive(subscribed(0, 'E1', false));
    ws.receive(pub(1));
    ws.receive({ type: 'publications', topic: TOPIC, publications: [
      { offset: 1, data: { n: 1 } },
      { offset: 2, key: 'k', data: { n: 2 } },
      { offset: 4, data: { n: 4 } },
      { offset: 3, data: { n: 3 } },
    ] });
    ws.receive({ type: 'publications', topic: 'other:topic', publications: [{ offset: 9, data: {} }] });
    ws.receive({ type: 'publications', topic: TOPIC, publications: 'not a list' });
    ws.receive({ type: 'publications', topic: TOPIC, publications: [{ offset: 5, data: { n: 5 } }] });
    assert.deepEqual(h.offsets(), [1, 2, 4, 5]);
    assert.deepEqual(h.calls[1], { data: { n: 2 }, publication: pub(2, { n: 2 }, { key: 'k' }) }, 'each handler call sees a publication frame');
    assert.deepEqual(client.topicPosition(TOPIC), { epoch: 'E1', offset: 5 });
    client.close();
  });

  test('a subscribed without since is where delivery starts, and the subscribed event shows it', async () => {
    const { client, seen, sockets } = makeClient();
    const h = recorder();
    client.subscribe(TOPIC, h);
    assert.equal(client.topicPosition(TOPIC), null, 'nothing known yet');
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive(subscribed(40, 'E1', false));
    assert.deepEqual(seen.subscribed.map((f) => [f.topic, f.offset, f.epoch, f.recovered]), [[TOPIC, 40, 'E1', false]]);
    assert.deepEqual(client.topicPosition(TOPIC), { epoch: 'E1', offset: 40 });
    ws.receive(pub(39)); // not a replay: nothing was asked for
    ws.receive(pub(41));
    assert.deepEqual(h.offsets(), [41]);
    client.close();
  });

  test('a reconnect resubscribes with since = the highest offset delivered and the last epoch, and the recovered replay is delivered once', async () => {
    const { client, seen, sockets } = makeClient();
    const h = recorder();
    client.subscribe(TOPIC, h);
    client.connect();
    const first = await connected(client, sockets, 0);
    first.receive(subscribed(10, 'E1', false));
    first.receive(pub(11));
    first.receive(pub(12));
    first.serverClose(1006);
    const second = await connected(client, sockets, 1);
    assert.deepEqual(second.frames('subscribe'), [{ type: 'subscribe', topic: TOPIC, batch: true, since: 12, epoch: 'E1', ref: REF }]);
    second.receive(subscribed(15, 'E1', true));
    for (const offset of [12, 13, 14, 15, 15, 16]) second.receive(pub(offset));
    assert.deepEqual(h.offsets(), [11, 12, 13, 14, 15, 16]);
    assert.deepEqual(seen.subscribed.map((f) => f.recovered), [false, true]);
    client.close();
  });

  test('a caller\'s since and epoch are kept for the resume until something newer is delivered', async () => {
    const { client, sockets } = makeClient();
    client.subscribe(TOPIC, recorder(), { since: 5, epoch: 'E1' });
    client.connect();
    const first = await connected(client, sockets, 0);
    first.serverClose(1006); // closed before the subscribed came
    const second = await connected(client, sockets, 1);
    assert.deepEqual(second.frames('subscribe'), [{ type: 'subscribe', topic: TOPIC, batch: true, since: 5, epoch: 'E1', ref: REF }]);
    client.close();
  });

  test('rooms and topics are both resumed after a reconnect', async () => {
    const { client, sockets } = makeClient();
    client.join('general', { since: 3 });
    client.subscribe(TOPIC, recorder());
    client.connect();
    const first = await connected(client, sockets, 0);
    first.receive(subscribed(2, 'E1', false));
    first.serverClose(1006);
    const second = await connected(client, sockets, 1);
    assert.deepEqual(second.frames('join').map((f) => [f.room, f.since]), [['general', 3]]);
    assert.deepEqual(second.frames('subscribe').map((f) => [f.topic, f.since, f.epoch]), [[TOPIC, 2, 'E1']]);
    client.close();
  });

  // --- epochs ---------------------------------------------------------------------------

  test('a new epoch while subscribed (recovered: false) is adopted and its replay with low offsets is delivered', async () => {
    const { client, seen, sockets } = makeClient();
    const h = recorder();
    client.subscribe(TOPIC, h);
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive(subscribed(50, 'E1', false));
    ws.receive(pub(51));
    ws.receive(pub(52));
    // Redis lost the history: the server says so by itself, then sends the latest values.
    ws.receive(subscribed(3, 'E2', false));
    ws.receive(pub(1, { v: 'a' }, { key: 'a' }));
    ws.receive(pub(3, { v: 'b' }, { key: 'b' }));
    ws.receive(pub(3, { v: 'b' }, { key: 'b' }));
    ws.receive(pub(4));
    assert.deepEqual(h.offsets(), [51, 52, 1, 3, 4]);
    assert.deepEqual(client.topicPosition(TOPIC), { epoch: 'E2', offset: 4 });
    assert.equal(seen.subscribed.at(-1).epoch, 'E2');
    ws.serverClose(1006);
    const again = await connected(client, sockets, 1);
    assert.deepEqual(again.frames('subscribe'), [{ type: 'subscribe', topic: TOPIC, batch: true, since: 4, epoch: 'E2', ref: REF }]);
    client.close();
  });

  test('a resume into a new epoch delivers its replay from the start', async () => {
    const { client, sockets } = makeClient();
    const h = recorder();
    client.subscribe(TOPIC, h, { since: 12, epoch: 'E1' });
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive(subscribed(3, 'E2', false));
    ws.receive(pub(2));
    ws.receive(pub(3));
    assert.deepEqual(h.offsets(), [2, 3]);
    assert.deepEqual(client.topicPosition(TOPIC), { epoch: 'E2', offset: 3 });
    client.close();
  });

  test('since: 0 without an epoch gets the current values', async () => {
    const { client, sockets } = makeClient();
    const h = recorder();
    client.subscribe(TOPIC, h, { since: 0 });
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive(subscribed(9, 'E1', false));
    ws.receive(pub(4, { v: 1 }, { key: 'x' }));
    ws.receive(pub(9, { v: 2 }, { key: 'y' }));
    assert.deepEqual(h.calls.map((c) => c.data), [{ v: 1 }, { v: 2 }]);
    client.close();
  });

  test('the same epoch with history aged out (recovered: false) does not deliver what was already delivered', async () => {
    const { client, sockets } = makeClient();
    const h = recorder();
    client.subscribe(TOPIC, h);
    client.connect();
    const first = await connected(client, sockets, 0);
    first.receive(subscribed(0, 'E1', false));
    first.receive(pub(1, { v: 'a1' }, { key: 'a' }));
    first.receive(pub(2, { v: 'b1' }, { key: 'b' }));
    first.serverClose(1006);
    const second = await connected(client, sockets, 1);
    // The latest value of each key: b's was delivered already (E1, 2), a's is newer.
    second.receive(subscribed(300, 'E1', false));
    second.receive(pub(2, { v: 'b1' }, { key: 'b' }));
    second.receive(pub(300, { v: 'a2' }, { key: 'a' }));
    assert.deepEqual(h.calls.map((c) => c.data.v), ['a1', 'b1', 'a2']);
    client.close();
  });

  // --- unsubscribe ----------------------------------------------------------------------

  test('only the last handler\'s unsubscribe sends unsubscribe; afterwards publications are dropped', async () => {
    const { client, sockets } = makeClient();
    client.connect();
    const ws = await connected(client, sockets);
    const a = recorder();
    const b = recorder();
    const offA = client.subscribe(TOPIC, a);
    const offB = client.subscribe(TOPIC, b);
    ws.receive(subscribed(0, 'E1', false));
    ws.receive(pub(1));
    offA();
    offA(); // twice is harmless
    assert.deepEqual(ws.frames('unsubscribe'), [], 'b still listens');
    ws.receive(pub(2));
    offB();
    assert.deepEqual(ws.frames('unsubscribe'), [{ type: 'unsubscribe', topic: TOPIC }]);
    ws.receive(pub(3)); // in flight before the server took the unsubscribe
    ws.receive({ type: 'unsubscribed', topic: TOPIC });
    assert.deepEqual(a.offsets(), [1]);
    assert.deepEqual(b.offsets(), [1, 2]);
    assert.equal(client.topicPosition(TOPIC), null);
    ws.serverClose(1006);
    const again = await connected(client, sockets, 1);
    assert.deepEqual(again.frames('subscribe'), [], 'not resubscribed');
    client.close();
  });

  test('a handler that unsubscribes another while a publication is delivered stops the other at once', async () => {
    const { client, sockets } = makeClient();
    client.connect();
    const ws = await connected(client, sockets);
    const b = recorder();
    let offB = null;
    client.subscribe(TOPIC, () => offB());
    offB = client.subscribe(TOPIC, b);
    ws.receive(subscribed(0, 'E1', false));
    ws.receive(pub(1));
    assert.deepEqual(b.offsets(), []);
    client.close();
  });

  test('subscribing again right after the last unsubscribe drops the old subscription\'s publications still in flight', async () => {
    const { client, sockets } = makeClient();
    client.connect();
    const ws = await connected(client, sockets);
    const off = client.subscribe(TOPIC, recorder());
    ws.receive(subscribed(0, 'E1', false));
    off();
    const h = recorder();
    client.subscribe(TOPIC, h);
    assert.deepEqual(ws.sent.filter((f) => f.topic === TOPIC).map((f) => f.type), ['subscribe', 'unsubscribe', 'subscribe']);
    ws.receive(pub(1)); // sent before the server took the unsubscribe
    ws.receive({ type: 'unsubscribed', topic: TOPIC });
    ws.receive(subscribed(1, 'E1', false));
    ws.receive(pub(2));
    assert.deepEqual(h.offsets(), [2]);
    client.close();
  });

  test('publications for topics not subscribed are dropped', async () => {
    const { client, seen, sockets } = makeClient();
    const h = recorder();
    client.subscribe(TOPIC, h);
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive(subscribed(0, 'E1', false));
    ws.receive({ type: 'publication', topic: 'public:other', offset: 1, data: {} });
    ws.receive({ ...subscribed(0, 'E9', false, 'public:other') });
    ws.receive(pub(1));
    assert.deepEqual(h.offsets(), [1]);
    assert.equal(client.topicPosition('public:other'), null);
    assert.deepEqual(seen.subscribed.map((f) => f.topic), [TOPIC], 'nor their subscribed frames');
    client.close();
  });

  // --- errors ---------------------------------------------------------------------------

  test('a refused subscribe reaches onError and the error event, and is not resubscribed', async () => {
    const { client, seen, sockets } = makeClient();
    const errors = [];
    const h = recorder();
    const off = client.subscribe('secret:plans', h, { onError: (e) => errors.push(e) });
    const other = recorder();
    client.subscribe(TOPIC, other);
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive({ type: 'error', code: 'NOT_FOUND', message: 'no such topic', ref: 'subscribe:secret:plans' });
    assert.deepEqual(errors, [{ type: 'error', code: 'NOT_FOUND', message: 'no such topic', ref: 'subscribe:secret:plans', topic: 'secret:plans' }]);
    assert.deepEqual(seen.error.map((e) => [e.code, e.topic]), [['NOT_FOUND', 'secret:plans']]);
    off(); // the subscription is over already: nothing to send
    assert.deepEqual(ws.frames('unsubscribe'), []);
    ws.serverClose(1006);
    const again = await connected(client, sockets, 1);
    assert.deepEqual(again.frames('subscribe').map((f) => f.topic), [TOPIC]);
    client.close();
  });

  test('a rate-limited subscribe is retried', async () => {
    const { client, sockets } = makeClient({ sendRetryBaseMs: 5 });
    const errors = [];
    const h = recorder();
    client.subscribe(TOPIC, h, { onError: (e) => errors.push(e.code) });
    client.connect();
    const ws = await connected(client, sockets);
    ws.receive({ type: 'error', code: 'RATE_LIMITED', message: 'slow down', ref: REF });
    assert.deepEqual(errors, ['RATE_LIMITED']);
    await waitFor(() => ws.frames('subscribe').length === 2, 'retry');
    ws.receive(subscribed(0, 'E1', false));
    ws.receive(pub(1));
    assert.deepEqual(h.offsets(), [1]);
    client.close();
  });

  test('a handler that throws does not stop the other handlers or later publications', async () => {
    const { client, sockets } = makeClient();
    const h = recorder();
    client.subscribe(TOPIC, () => {
      throw new Error('broken widget');
    });
    client.subscribe(TOPIC, h);
    client.connect();
    const ws = await connected(client, sockets);
    const logged = await capturingConsoleError(() => {
      ws.receive(subscribed(0, 'E1', false));
      ws.receive(pub(1));
      ws.receive(pub(2));
    });
    assert.deepEqual(h.offsets(), [1, 2]);
    assert.equal(logged.length, 2, 'each failure is logged');
    assert.match(logged[0][0], /public:scores/);
    client.close();
  });

  test('bad arguments are refused at once', () => {
    const { client } = makeClient();
    assert.throws(() => client.subscribe('', () => {}), TypeError);
    assert.throws(() => client.subscribe(TOPIC), TypeError);
    assert.throws(() => client.subscribe(TOPIC, () => {}, { since: -1 }), TypeError);
    assert.throws(() => client.subscribe(TOPIC, () => {}, { since: '3' }), TypeError);
    assert.throws(() => client.subscribe(TOPIC, () => {}, { epoch: 7 }), TypeError);
    assert.equal(client.topicPosition(TOPIC), null, 'nothing was subscribed');
  });
});
