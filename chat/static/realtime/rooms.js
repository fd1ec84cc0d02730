/**
 * Keeps the room list (templates/chat/index.html) live: the server publishes
 * every creation, rename and deletion of a public room on the topic
 * `public:rooms` (chat/live.py, docs/topics.md) as
 * `{event: 'created' | 'updated' | 'deleted', room: {slug, name}}`, keyed by
 * the slug, and this module applies them to the list without a reload.
 *
 * - Every change is an upsert or a removal by slug, so applying one twice
 *   (a replay after a reconnect) is harmless.
 * - A new room goes in slug order (code-unit order: what the server's
 *   `ORDER BY slug` gives under the C collation; slugs are ASCII).
 * - The list is one page of the rooms (`data-after`: the slug it starts
 *   after, "" for the first; `data-until`: its last slug when more follow,
 *   "" when it runs to the end); a room outside that window is not shown.
 * - Whenever a subscription starts without a full recovery (the first one,
 *   or a resume after the topic's history was lost) the list is reconciled
 *   once with the same page of GET api/rooms/ (`{results, next, previous}`),
 *   which also covers the moment between the page's render and the
 *   subscription. Rooms changed live while that request is out keep their
 *   live state (it is at least as new).
 * - Room names are user input: they reach the DOM through textContent only.
 *
 * The list says where it stands in `data-live`: 'connecting', 'live' (the
 * topic is subscribed), 'reconnecting', 'offline', 'unauthorized', 'retrying'
 * or 'failed' (the subscription was refused).
 */
import { RealtimeClient } from './client.js';
import { api } from './http.js';
import { config, roomPage, roomsApi, wsUrl } from './config.js';

const TOPIC = 'public:rooms';
const list = document.getElementById('room-list');

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function validRoom(room) {
  return !!room && typeof room === 'object' && typeof room.slug === 'string' && room.slug !== '';
}

function items() {
  return [...list.children].filter((li) => li.classList.contains('room-item'));
}

function find(slug) {
  return items().find((li) => li.dataset.slug === slug) || null;
}

/** Keep the "No rooms yet" line in step with the list. */
function syncEmpty() {
  const placeholder = [...list.children].find((li) => li.classList.contains('room-empty'));
  const any = items().length > 0;
  if (any && placeholder) placeholder.remove();
  if (!any && !placeholder) list.append(el('li', 'muted room-empty', 'No rooms yet. Create the first one.'));
}

function setName(li, name) {
  const span = li.querySelector('.room-name');
  if (span && typeof name === 'string' && span.textContent !== name) span.textContent = name;
}

function setPrivate(li, isPrivate) {
  const link = li.querySelector('a');
  const tag = link.querySelector('.tag');
  if (isPrivate && !tag) {
    const t = el('span', 'tag', 'private');
    t.title = 'Private: members only';
    link.querySelector('.room-slug').after(t);
  } else if (!isPrivate && tag) {
    tag.remove();
  }
}

function setUnread(li, count) {
  const n = Number.isSafeInteger(count) && count > 0 ? count : 0;
  const link = li.querySelector('a');
  let badge = link.querySelector('.badge');
  li.classList.toggle('has-unread', n > 0);
  if (!n) {
    if (badge) badge.remove();
    return;
  }
  if (!badge) {
    badge = el('span', 'badge');
    link.append(badge);
  }
  badge.textContent = String(n);
  badge.setAttribute('aria-label', `${n} unread`);
}

/** A list item like the server renders one. */
function roomItem(room) {
  const li = el('li', 'room-item');
  li.dataset.slug = room.slug;
  const link = el('a');
  link.href = roomPage(room.slug);
  link.append(el('span', 'room-name', typeof room.name === 'string' ? room.name : room.slug), el('span', 'room-slug', `#${room.slug}`));
  li.append(link);
  return li;
}

/** Whether a slug belongs on this page of the list. */
function inWindow(slug) {
  const { after = '', until = '' } = list.dataset;
  return (!after || slug > after) && (!until || slug <= until);
}

function insertInOrder(li) {
  const slug = li.dataset.slug;
  const next = items().find((other) => other.dataset.slug > slug);
  if (next) next.before(li);
  else {
    const placeholder = [...list.children].find((x) => x.classList.contains('room-empty'));
    if (placeholder) placeholder.before(li);
    else list.append(li);
  }
}

/**
 * Add or update a room. A live change only knows slug and name: an existing
 * item keeps its unread count and tag. `full` (a REST row) sets those too.
 */
function upsert(room, { full = false } = {}) {
  if (!inWindow(room.slug)) return;
  let li = find(room.slug);
  if (!li) {
    li = roomItem(room);
    insertInOrder(li);
  } else {
    setName(li, room.name);
  }
  if (full) {
    setPrivate(li, room.is_private === true);
    setUnread(li, room.unread_count);
  }
  syncEmpty();
}

function remove(slug) {
  const li = find(slug);
  if (li) li.remove();
  syncEmpty();
}

// --- reconciling with REST ---------------------------------------------------------------

let touched = null; // slugs changed live while a reconcile's request is out
let reconciling = 0;

async function reconcile() {
  const generation = ++reconciling;
  touched = new Set();
  let res = null;
  try {
    const { after = '', limit = '50' } = list.dataset;
    const query = new URLSearchParams({ limit });
    if (after) query.set('after', after);
    res = await api('GET', `${roomsApi()}?${query}`);
  } catch {
    // offline: the live changes still apply; the next subscribe reconciles
  }
  if (generation !== reconciling) return; // a newer reconcile took over
  const live = touched;
  touched = null;
  if (!res || !res.ok || !res.data || !Array.isArray(res.data.results)) return;
  const results = res.data.results.filter(validRoom);
  // The page's window as the server has it now: it ends at its last row
  // when more follow.
  list.dataset.until = res.data.next && results.length ? results[results.length - 1].slug : '';
  const rows = new Map(results.map((r) => [r.slug, r]));
  for (const li of items()) {
    const slug = li.dataset.slug;
    if (!inWindow(slug) || (!rows.has(slug) && !live.has(slug))) li.remove();
  }
  for (const row of rows.values()) {
    if (!live.has(row.slug)) upsert(row, { full: true });
  }
  syncEmpty();
}

// --- live ----------------------------------------------------------------------------------

function onChange(data) {
  if (!data || typeof data !== 'object' || !validRoom(data.room)) return;
  const { slug } = data.room;
  if (data.event === 'deleted') remove(slug);
  else if (data.event === 'created' || data.event === 'updated') upsert(data.room);
  else return;
  if (touched) touched.add(slug);
}

if (list) {
  // Only subscribes: no outbox, so nothing of the room pages' is touched.
  const client = new RealtimeClient({ url: wsUrl(), apiBase: config.prefix, storage: null });
  let refused = false;
  client.on('state', ({ state }) => {
    if (state !== 'online' && !refused) list.dataset.live = state;
  });
  client.on('subscribed', (frame) => {
    if (frame.topic !== TOPIC) return;
    list.dataset.live = 'live';
    if (!frame.recovered) reconcile();
  });
  client.subscribe(TOPIC, onChange, {
    // RATE_LIMITED and UNAVAILABLE are retried by the client; anything else
    // ends the subscription, and the list stays as rendered.
    onError: (err) => {
      const retried = err.code === 'RATE_LIMITED' || err.code === 'UNAVAILABLE';
      refused = !retried;
      list.dataset.live = retried ? 'retrying' : 'failed';
      if (!retried && globalThis.console) console.warn(`realtime: no live room list (${err.code}): ${err.message || ''}`);
    },
  });
  client.connect();
}
