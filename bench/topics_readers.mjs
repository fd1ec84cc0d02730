// The readers that keep reading, for bench/topics.py: many WebSocket
// subscribers in one Node process, so that the bench's client is not what
// limits a server that sends tens of thousands of frames a second (one
// Python process reads about a tenth of that).
//
//   node bench/topics_readers.mjs   (one JSON line of settings on stdin)
//
// Settings: {"readers": [{"index", "url", "token"}], "topic", "batch",
// "maxCloses"}. Each reader connects, subscribes (with "batch" if asked),
// and records every publication (`publication` frames, or the entries of
// `publications` frames): its offset, its key's latest (offset, n) and its
// latency (receipt time - data.t). On a close it reconnects and resumes
// with `since` + `epoch`, as client.js does (at most maxCloses times).
//
// Stdout, one JSON object per line:
//   {"connected": N}                      once every reader has `subscribed`
//   {"tick": true, "delivered", "minOffset", "open"}   every second
//   {"summary": {...}}                    after "finish FIRST FINAL" on stdin
// (the first and last offsets published). "stall START END" on stdin (wall-
// clock seconds) sets the window whose latencies are also counted apart.
// Latencies are kept as a histogram of 0.1 ms bins (merged by the bench).

import { createInterface } from 'node:readline';
import WebSocket from 'ws';

// Latencies in 0.1 ms bins up to 10 minutes (the last bin holds the rest):
// a typed array, cheap enough for hundreds of thousands a second.
const BINS_PER_MS = 10;
const LAST_BIN = 600_000 * BINS_PER_MS;

class Histogram {
  constructor() { this.bins = new Uint32Array(LAST_BIN + 1); this.count = 0; this.max = 0; this.sum = 0; }
  add(ms) {
    const bin = ms <= 0 ? 0 : Math.min(LAST_BIN, (ms * BINS_PER_MS) | 0);
    this.bins[bin] += 1;
    this.count += 1;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
  }
  toJSON() {
    const bins = {};
    this.bins.forEach((c, b) => { if (c) bins[b] = c; });
    return { bins, count: this.count, max: this.max, sum: this.sum };
  }
}

class Reader {
  constructor(spec, settings, shared) {
    Object.assign(this, spec);
    this.settings = settings;
    this.shared = shared;
    this.seen = new Uint8Array(1024); // offsets received (a bitmap that grows)
    this.count = 0;
    this.maxOffset = 0;
    this.duplicates = 0;
    this.outOfOrder = 0;
    this.last = {}; // key -> [offset, n]
    this.closes = [];
    this.epoch = null;
    this.running = true;
  }

  connect(since) {
    return new Promise((resolve, reject) => {
      const headers = this.token ? { Authorization: `Token ${this.token}` } : {};
      const ws = new WebSocket(this.url, { headers, perMessageDeflate: false, maxPayload: 1 << 20 });
      this.ws = ws;
      let subscribed = false;
      ws.on('open', () => {
        const frame = { type: 'subscribe', topic: this.settings.topic };
        if (this.settings.batch) frame.batch = true;
        if (since != null && this.epoch != null) Object.assign(frame, { since, epoch: this.epoch });
        ws.send(JSON.stringify(frame));
      });
      ws.on('message', (raw) => {
        const now = Date.now() / 1000;
        const frame = JSON.parse(raw);
        if (frame.type === 'publication') this.take(frame, now);
        else if (frame.type === 'publications') for (const entry of frame.publications) this.take(entry, now);
        else if (frame.type === 'subscribed') {
          this.epoch = frame.epoch;
          if (!subscribed) { subscribed = true; resolve(); }
        } else if (frame.type === 'error' && !subscribed) reject(new Error(`subscribe refused: ${raw}`));
      });
      ws.on('error', (err) => { if (!subscribed) reject(err); });
      ws.on('close', (code) => {
        if (!subscribed) return reject(new Error(`closed with ${code} before subscribed`));
        this.closes.push(code);
        if (this.running && this.closes.length <= this.settings.maxCloses) {
          this.connect(this.maxOffset).catch(() => { this.running = false; });
        }
      });
    });
  }

  take(entry, now) {
    const offset = entry.offset;
    if (offset >= this.seen.length * 8) {
      const grown = new Uint8Array(Math.max(this.seen.length * 2, (offset >> 3) + 1024));
      grown.set(this.seen);
      this.seen = grown;
    }
    const bit = 1 << (offset & 7);
    if (this.seen[offset >> 3] & bit) { this.duplicates += 1; return; }
    this.seen[offset >> 3] |= bit;
    if (offset < this.maxOffset) this.outOfOrder += 1;
    else this.maxOffset = offset;
    this.count += 1;
    this.shared.delivered += 1;
    const data = entry.data;
    const latency = (now - data.t) * 1000;
    this.shared.latency.add(latency);
    const stall = this.shared.stall;
    if (stall && now >= stall[0] && now < stall[1]) this.shared.latencyDuringStall.add(latency);
    if (entry.key != null) {
      const held = this.last[entry.key];
      if (!held || offset > held[0]) this.last[entry.key] = [offset, data.n];
    }
  }

  missed(first, final) {
    let got = 0;
    for (let offset = first; offset <= final; offset += 1) {
      if (offset < this.seen.length * 8 && this.seen[offset >> 3] & (1 << (offset & 7))) got += 1;
    }
    return final - first + 1 - got;
  }
}

async function main() {
  const lines = createInterface({ input: process.stdin });
  const iterator = lines[Symbol.asyncIterator]();
  const settings = JSON.parse((await iterator.next()).value);
  const shared = { delivered: 0, latency: new Histogram(), latencyDuringStall: new Histogram(), stall: null };
  const readers = settings.readers.map((spec) => new Reader(spec, settings, shared));
  // 50 handshakes at a time, as the Python readers connect.
  let next = 0;
  const worker = async () => {
    while (next < readers.length) await readers[next++].connect(null);
  };
  await Promise.all(Array.from({ length: 50 }, worker));
  console.log(JSON.stringify({ connected: readers.length }));
  const ticker = setInterval(() => {
    const open = readers.filter((r) => r.ws && r.ws.readyState === WebSocket.OPEN).length;
    const minOffset = Math.min(...readers.map((r) => r.maxOffset));
    console.log(JSON.stringify({ tick: true, delivered: shared.delivered, minOffset, open }));
  }, 1000);
  for (;;) {
    const { value, done } = await iterator.next();
    if (done) break;
    const [command, ...rest] = value.trim().split(/\s+/);
    if (command === 'stall') shared.stall = rest.map(Number);
    if (command !== 'finish') continue;
    const [first, final] = rest.map(Number);
    clearInterval(ticker);
    for (const r of readers) r.running = false;
    const summary = {
      latency: shared.latency.toJSON(),
      latencyDuringStall: shared.latencyDuringStall.toJSON(),
      readers: readers.map((r) => ({
        index: r.index,
        count: r.count,
        missed: final >= first ? r.missed(first, final) : 0,
        maxOffset: r.maxOffset,
        duplicates: r.duplicates,
        outOfOrder: r.outOfOrder,
        last: r.last,
        closes: r.closes,
      })),
    };
    for (const r of readers) r.ws && r.ws.terminate();
    // Exit once the line is written: a pipe takes 64 KiB at a time, and
    // process.exit() would drop the rest.
    process.stdout.write(`${JSON.stringify({ summary })}\n`, () => process.exit(0));
    return;
  }
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
