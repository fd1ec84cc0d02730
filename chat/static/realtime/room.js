/**
 * Provides the live room page (templates/chat/room.html) on top of
 * RealtimeClient: messages, pending sends, typing, presence, "seen by", read
 * receipts and the connection banner.
 *
 * Every piece of user content (messages, user names, room names, server
 * error texts) reaches the DOM through textContent, never innerHTML.
 */
import { RealtimeClient } from './client.js';
import { api, errorText } from './http.js';
import { config, roomsApi, wsUrl } from './config.js';

const TYPING_SEND_EVERY_MS = 2000; // one `typing: true` per 2 s while keys are pressed
const TYPING_IDLE_MS = 5000; // say "stopped" after 5 s without input
const TYPING_SHOW_MS = 6000; // the contract's lapse: drop a typist not refreshed for 6 s
const AWAY_AFTER_HIDDEN_MS = 60000; // a tab hidden for a minute is "away"
const MAX_CHARS = 4000; // CHAT_MAX_CONTENT_CHARS; the server has the last word
const PAGE = 50;

const $ = (id) => document.getElementById(id);

function readJSON(id) {
  const node = $(id);
  if (!node) return null;
  try {
    return JSON.parse(node.textContent);
  } catch {
    return null;
  }
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

const dateFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });

function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return { short: '', long: '' };
  const today = new Date().toDateString() === d.toDateString();
  return { short: today ? timeFmt.format(d) : dateFmt.format(d), long: d.toLocaleString() };
}

// --- page data -----------------------------------------------------------------------

const root = $('room');
const slug = root.dataset.slug;
const canPost = root.dataset.canPost === 'true';
const me = readJSON('me-data') || { id: null, username: '' };
const history = readJSON('history-data') || [];

const messagesEl = $('messages');
const scroller = $('scroller');
const typingEl = $('typing');
const presenceEl = $('presence');
const presenceCount = $('presence-count');
const connEl = $('conn');
const connText = $('conn-text');
const connRetry = $('conn-retry');
const connDot = $('conn-dot');
const alertEl = $('room-alert');
const toastEl = $('toast');
const loadOlderBtn = $('load-older');
const composer = $('composer');
const input = $('composer-input');
const counter = $('composer-count');

const byId = new Map(); // message id -> <li>
const pendingByClientId = new Map(); // client_id -> <li> of a message not yet stored
const receipts = new Map(); // user id -> {user, seq}
const presence = new Map(); // user id -> {user, status}
const typists = new Map(); // user id -> {user, timer}
let newestSeq = 0;
let oldestSeq = null;
let readSent = 0;
let removed = false; // kicked, or refused at join

const client = new RealtimeClient({ userId: me.id, url: wsUrl(), apiBase: config.prefix });

// --- messages --------------------------------------------------------------------------

function nearBottom() {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 120;
}

function scrollToBottom() {
  scroller.scrollTop = scroller.scrollHeight;
}

function mentionsMe(content) {
  if (!me.username) return false;
  const escaped = me.username.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(^|[^\\w@])@${escaped}(?![\\w])`, 'i').test(content);
}

function messageNode(m, { pending = false } = {}) {
  const li = el('li', 'msg');
  const mine = pending || (m.user && m.user.id === me.id);
  if (mine) li.classList.add('mine');
  if (pending) li.classList.add('pending');
  else if (mentionsMe(m.content)) li.classList.add('mention');
  if (!pending) {
    li.dataset.id = String(m.id);
    li.dataset.seq = String(m.seq);
    li.dataset.user = String(m.user.id);
  }
  li.dataset.clientId = m.client_id;

  const head = el('div', 'msg-head');
  head.append(el('span', 'msg-user', pending ? me.username : m.user.username));
  const time = el('time', 'msg-time');
  const t = formatTime(m.created_at);
  if (m.created_at) time.dateTime = m.created_at;
  time.textContent = t.short;
  time.title = t.long;
  head.append(time);
  if (pending) head.append(el('span', 'msg-status', 'Sending…'));
  li.append(head, el('div', 'msg-body', m.content));
  const seen = el('div', 'msg-seen');
  seen.hidden = true;
  li.append(seen);
  return li;
}

/** Insert a stored message by seq: after older ones, before any pending ones. */
function insertBySeq(li, seq) {
  const firstPending = messagesEl.querySelector('.msg.pending');
  let node = firstPending ? firstPending.previousElementSibling : messagesEl.lastElementChild;
  while (node && Number(node.dataset.seq) > seq) node = node.previousElementSibling;
  messagesEl.insertBefore(li, node ? node.nextElementSibling : messagesEl.firstElementChild);
}

function addMessage(m) {
  if (!m || m.room !== slug || byId.has(m.id)) return false;
  if (m.user && m.user.id === me.id) {
    const pendingLi = pendingByClientId.get(m.client_id);
    if (pendingLi) {
      pendingLi.remove();
      pendingByClientId.delete(m.client_id);
    }
  }
  const li = messageNode(m);
  byId.set(m.id, li);
  insertBySeq(li, m.seq);
  newestSeq = Math.max(newestSeq, m.seq);
  oldestSeq = oldestSeq === null ? m.seq : Math.min(oldestSeq, m.seq);
  return true;
}

function addPending(item) {
  if (pendingByClientId.has(item.client_id)) return;
  const li = messageNode(item, { pending: true });
  pendingByClientId.set(item.client_id, li);
  messagesEl.append(li);
}

function markFailed(clientId, reason) {
  const li = pendingByClientId.get(clientId);
  if (!li) return;
  pendingByClientId.delete(clientId);
  li.classList.add('failed');
  const status = li.querySelector('.msg-status');
  status.textContent = `Not sent: ${reason}`;
  const dismiss = el('button', 'link msg-dismiss', 'Dismiss');
  dismiss.type = 'button';
  dismiss.addEventListener('click', () => li.remove());
  status.after(dismiss);
}

function onLiveMessage(m) {
  const stick = nearBottom();
  if (!addMessage(m)) return;
  const typist = typists.get(m.user.id);
  if (typist) {
    clearTimeout(typist.timer);
    typists.delete(m.user.id);
    renderTyping();
  }
  scheduleSeen();
  markRead();
  if (stick || m.user.id === me.id) scrollToBottom();
}

// --- "seen by" --------------------------------------------------------------------------

let seenFrame = 0;
function scheduleSeen() {
  if (seenFrame) return;
  seenFrame = requestAnimationFrame(() => {
    seenFrame = 0;
    renderSeen();
  });
}

/**
 * Each reader (other than me) is shown under the newest message they have read
 * (seq <= their read position), so the last message lists everyone who has
 * seen it. A reader is not shown under their own message.
 */
function renderSeen() {
  const stick = nearBottom(); // a "Seen by" line under the last message must not push it out of view
  const items = [...messagesEl.querySelectorAll('.msg[data-seq]')];
  for (const li of messagesEl.querySelectorAll('.msg-seen')) {
    li.hidden = true;
    li.textContent = '';
  }
  if (!items.length) return;
  const seqs = items.map((li) => Number(li.dataset.seq));
  const groups = new Map();
  for (const { user, seq } of receipts.values()) {
    if (user.id === me.id) continue;
    let lo = 0;
    let hi = seqs.length - 1;
    let at = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (seqs[mid] <= seq) {
        at = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    if (at < 0) continue;
    const li = items[at];
    if (li.dataset.user === String(user.id)) continue;
    if (!groups.has(li)) groups.set(li, []);
    groups.get(li).push(user.username);
  }
  for (const [li, names] of groups) {
    const seen = li.querySelector('.msg-seen');
    names.sort((a, b) => a.localeCompare(b));
    seen.textContent = `Seen by ${names.join(', ')}`;
    seen.hidden = false;
  }
  if (stick) scrollToBottom();
}

function setReceipt(user, seq) {
  if (!user || !Number.isInteger(seq)) return;
  const current = receipts.get(user.id);
  if (current && current.seq >= seq) return;
  receipts.set(user.id, { user, seq });
  scheduleSeen();
}

async function loadReceipts() {
  try {
    const { ok, data } = await api('GET', `${roomsApi(slug)}receipts/`);
    if (ok && Array.isArray(data)) for (const r of data) setReceipt(r.user, r.seq);
  } catch {
    // offline: live receipts and the next join bring them
  }
}

/**
 * After a reconnect, drop the shown messages a moderator hid while we were
 * away: their `message_deleted` went to no one, and a resume only replays
 * newer seqs. REST history leaves hidden messages out, so a shown message in
 * the page's newest RECHECK_LIMIT that REST does not return was hidden.
 */
const RECHECK_LIMIT = 100;
async function dropHiddenWhileAway() {
  const shown = [...byId.values()].map((li) => Number(li.dataset.seq)).sort((a, b) => a - b);
  if (!shown.length) return;
  const after = shown[Math.max(0, shown.length - RECHECK_LIMIT)] - 1;
  try {
    const url = `${roomsApi(slug)}messages/?after=${after}&limit=${RECHECK_LIMIT}`;
    const { ok, data } = await api('GET', url);
    if (!ok || !data || !Array.isArray(data.results)) return;
    const kept = new Set(data.results.map((m) => m.id));
    // Judge only what this page covers, and only what was shown when it was
    // asked for (a live message may arrive meanwhile).
    const pageEnd = data.next && data.results.length ? data.results[data.results.length - 1].seq : Infinity;
    const covered = Math.min(pageEnd, shown[shown.length - 1]);
    for (const [id, li] of byId) {
      const seq = Number(li.dataset.seq);
      if (seq > after && seq <= covered && !kept.has(id)) {
        li.remove();
        byId.delete(id);
      }
    }
    scheduleSeen();
  } catch {
    // offline again: the next reconnect checks again
  }
}

// --- reading ------------------------------------------------------------------------------

let readTimer = 0;
function markRead() {
  if (document.visibilityState !== 'visible' || newestSeq <= readSent || removed) return;
  clearTimeout(readTimer);
  readTimer = setTimeout(() => {
    if (document.visibilityState === 'visible' && newestSeq > readSent) {
      client.read(slug, newestSeq);
      readSent = newestSeq;
    }
  }, 300);
}

// --- typing -----------------------------------------------------------------------------

function renderTyping() {
  const names = [...typists.values()].map((t) => t.user.username).sort((a, b) => a.localeCompare(b));
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length === 3) text = `${names[0]}, ${names[1]} and ${names[2]} are typing…`;
  else if (names.length > 3) text = 'Several people are typing…';
  typingEl.textContent = text;
}

function onTyping(f) {
  if (f.room !== slug || !f.user || f.user.id === me.id) return;
  const existing = typists.get(f.user.id);
  if (existing) clearTimeout(existing.timer);
  if (f.is_typing) {
    const timer = setTimeout(() => {
      typists.delete(f.user.id);
      renderTyping();
    }, TYPING_SHOW_MS);
    typists.set(f.user.id, { user: f.user, timer });
  } else {
    typists.delete(f.user.id);
  }
  renderTyping();
}

let typingSentAt = 0;
let amTyping = false;
let typingIdle = 0;

function noteTyping() {
  if (!input.value.trim()) {
    stopTyping();
    return;
  }
  const now = Date.now();
  if (now - typingSentAt >= TYPING_SEND_EVERY_MS && client.typing(slug, true)) {
    typingSentAt = now;
    amTyping = true;
  }
  clearTimeout(typingIdle);
  typingIdle = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
  clearTimeout(typingIdle);
  if (amTyping) {
    client.typing(slug, false);
    amTyping = false;
  }
}

// --- presence ---------------------------------------------------------------------------

function renderPresence() {
  const people = [...presence.values()].sort((a, b) => a.user.username.localeCompare(b.user.username));
  const items = people.map(({ user, status }) => {
    const li = el('li', `person ${status === 'away' ? 'away' : 'online'}`);
    li.append(el('span', 'dot'));
    li.append(el('span', 'person-name', user.username));
    if (user.id === me.id) li.append(el('span', 'muted small', ' (you)'));
    li.append(el('span', 'person-status muted small', status === 'away' ? 'away' : 'online'));
    return li;
  });
  presenceEl.replaceChildren(...items);
  presenceCount.textContent = people.length ? `(${people.length})` : '';
}

// --- banners ------------------------------------------------------------------------------

let toastTimer = 0;
function toast(text) {
  toastEl.textContent = text;
  toastEl.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    toastEl.hidden = true;
  }, 5000);
}

function showAlert(text, { disable = false } = {}) {
  alertEl.textContent = text;
  alertEl.hidden = false;
  if (disable) {
    removed = true;
    root.classList.add('removed');
    if (input) input.disabled = true;
    const send = $('composer-send');
    if (send) send.disabled = true;
  }
}

let countdown = 0;
function renderState(s) {
  clearInterval(countdown);
  root.dataset.conn = s.state;
  connEl.dataset.state = s.state;
  connRetry.hidden = true;
  const waiting = pendingByClientId.size;
  const queued = waiting ? ` ${waiting} message${waiting === 1 ? '' : 's'} will be sent when it is back.` : '';
  const tick = (label) => {
    const secs = Math.max(0, Math.ceil(((s.retryAt || Date.now()) - Date.now()) / 1000));
    connText.textContent = `${label} ${secs > 0 ? `Reconnecting in ${secs} s…` : 'Reconnecting…'}${queued}`;
  };
  switch (s.state) {
    case 'online':
      connText.textContent = 'Online';
      break;
    case 'connecting':
      connText.textContent = s.attempt ? `Connecting (attempt ${s.attempt + 1})…` : 'Connecting…';
      break;
    case 'reconnecting':
    case 'offline': {
      const label = s.state === 'offline' ? 'You are offline.' : 'Connection lost.';
      tick(label);
      countdown = setInterval(() => tick(label), 1000);
      connRetry.hidden = false;
      break;
    }
    case 'unauthorized': {
      connText.textContent = 'Your session has ended. ';
      const a = el('a', '', 'Log in again');
      a.href = `${config.login}?next=${encodeURIComponent(window.location.pathname)}`;
      connText.append(a);
      break;
    }
    default:
      connText.textContent = 'Disconnected.';
  }
  connDot.dataset.state = s.state;
  connDot.title = s.state;
}

// --- wiring ---------------------------------------------------------------------------------

client.on('state', renderState);
client.on('message', onLiveMessage);
client.on('typing', onTyping);

let joinedBefore = false;
client.on('joined', (f) => {
  if (f.room !== slug) return;
  presence.clear();
  for (const p of f.presence || []) presence.set(p.user.id, p);
  renderPresence();
  loadReceipts(); // positions may have moved while we were away
  if (joinedBefore) dropHiddenWhileAway();
  joinedBefore = true;
  markRead();
});

client.on('presence', (f) => {
  if (f.room !== slug) return;
  for (const p of f.joins || []) presence.set(p.user.id, p);
  for (const p of f.leaves || []) presence.delete(p.user.id);
  renderPresence();
});

client.on('receipt', (f) => {
  if (f.room === slug) setReceipt(f.user, f.seq);
});

client.on('message_deleted', (f) => {
  if (f.room !== slug) return;
  const li = byId.get(f.id);
  if (li) {
    li.remove();
    byId.delete(f.id);
    scheduleSeen();
  }
});

client.on('ack', (f) => {
  if (f.room !== slug) return;
  const li = pendingByClientId.get(f.client_id);
  if (!li) return;
  if (byId.has(f.id)) {
    li.remove();
    pendingByClientId.delete(f.client_id);
  } else {
    // stored; the message frame itself is on its way
    li.classList.add('acked');
    li.querySelector('.msg-status').textContent = 'Sent';
  }
});

client.on('send_failed', (f) => markFailed(f.client_id, f.message || f.code));

client.on('outbox_overflow', ({ dropped }) => {
  for (const item of dropped) markFailed(item.client_id, 'too many unsent messages; this one was dropped');
});

client.on('kicked', (f) => {
  if (f.room !== slug) return;
  showAlert(`You were removed from this room${f.reason ? `: ${f.reason}` : '.'}`, { disable: true });
  // No more presence or typing frames come for this room: do not show a frozen list.
  presence.clear();
  renderPresence();
  for (const t of typists.values()) clearTimeout(t.timer);
  typists.clear();
  renderTyping();
});

client.on('error', (f) => {
  if (f.ref === 'typing' || f.ref === 'read' || f.code === 'GAP_FILL_FAILED' || f.code === 'CONNECT_FAILED') return;
  if (typeof f.ref === 'string' && f.ref === `join:${slug}`) {
    if (f.code !== 'UNAVAILABLE') showAlert(`You cannot join this room: ${f.message}`, { disable: true });
    return;
  }
  if (f.client_id) {
    if (f.code === 'RATE_LIMITED') toast('You are sending too fast; your message will be retried.');
    else if (f.code === 'UNAVAILABLE') toast('The server is busy; your message will be retried.');
    return; // permanent failures arrive as send_failed
  }
  if (f.message) toast(f.message);
});

client.on('notification', (f) => {
  document.dispatchEvent(new CustomEvent('realtime:notification', { detail: f.notification }));
});

client.on('unauthorized', () => {
  if (input) input.disabled = true;
});

connRetry.addEventListener('click', () => client.reconnectNow());

// --- composer -------------------------------------------------------------------------------

function updateCounter() {
  if (!counter) return;
  const n = [...input.value].length;
  counter.textContent = n > MAX_CHARS - 200 ? `${n}/${MAX_CHARS}.` : '';
  counter.classList.toggle('over', n > MAX_CHARS);
}

function autoGrow() {
  input.style.height = 'auto';
  input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}

function submit() {
  if (removed) return;
  const content = input.value;
  if (!content.trim()) return;
  if ([...content].length > MAX_CHARS) {
    toast(`A message can have at most ${MAX_CHARS} characters.`);
    return;
  }
  let clientId;
  try {
    clientId = client.send(slug, content);
  } catch (err) {
    toast(err.message);
    return;
  }
  addPending({ client_id: clientId, room: slug, content, created_at: new Date().toISOString() });
  input.value = '';
  autoGrow();
  updateCounter();
  stopTyping();
  scrollToBottom();
}

if (composer && canPost) {
  composer.addEventListener('submit', (e) => {
    e.preventDefault();
    submit();
    input.focus();
  });
  input.addEventListener('keydown', (e) => {
    // isComposing / 229: Enter that confirms an IME candidate must not send
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submit();
    }
  });
  input.addEventListener('input', () => {
    autoGrow();
    updateCounter();
    noteTyping();
  });
  input.addEventListener('blur', stopTyping);
}

// --- older history ------------------------------------------------------------------------

async function loadOlder() {
  if (oldestSeq === null) return;
  loadOlderBtn.disabled = true;
  try {
    const { ok, status, data } = await api('GET', `${roomsApi(slug)}messages/?before=${oldestSeq}&limit=${PAGE}`);
    if (!ok) {
      toast(errorText(data, status));
      return;
    }
    const before = scroller.scrollHeight;
    const top = scroller.scrollTop;
    for (const m of data.results || []) addMessage(m);
    scroller.scrollTop = top + (scroller.scrollHeight - before);
    loadOlderBtn.hidden = !data.next;
    scheduleSeen();
  } catch {
    toast('Could not load older messages.');
  } finally {
    loadOlderBtn.disabled = false;
  }
}
loadOlderBtn.addEventListener('click', loadOlder);

// --- invite (private rooms) -----------------------------------------------------------------

const inviteForm = $('invite');
if (inviteForm) {
  const status = $('invite-status');
  inviteForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const field = $('invite-username');
    const username = field.value.trim();
    if (!username) return;
    const button = inviteForm.querySelector('button');
    button.disabled = true;
    status.hidden = false;
    status.classList.remove('error');
    status.textContent = 'Inviting…';
    try {
      const { ok, status: code, data } = await api('POST', `${roomsApi(slug)}members/`, { username });
      if (ok) {
        status.textContent = `${data && data.user ? data.user.username : username} can now join this room.`;
        field.value = '';
      } else {
        status.textContent = errorText(data, code);
        status.classList.add('error');
      }
    } catch {
      status.textContent = 'Could not reach the server.';
      status.classList.add('error');
    } finally {
      button.disabled = false;
    }
  });
}

// --- visibility: read receipts and away ---------------------------------------------------

let awayTimer = 0;
function onVisibility() {
  clearTimeout(awayTimer);
  if (document.visibilityState === 'visible') {
    client.setPresence('online');
    markRead();
  } else {
    awayTimer = setTimeout(() => client.setPresence('away'), AWAY_AFTER_HIDDEN_MS);
  }
}
document.addEventListener('visibilitychange', onVisibility);
window.addEventListener('focus', markRead);

// --- start ------------------------------------------------------------------------------------

const myDelivered = new Set();
for (const m of history) {
  addMessage(m);
  if (m.user && m.user.id === me.id) myDelivered.add(m.client_id);
}
// Messages written before a reload (or in another tab) that are not stored yet.
for (const item of client.pending(slug)) {
  if (!myDelivered.has(item.client_id)) addPending(item);
}
loadOlderBtn.hidden = !(history.length && history[0].seq > 1);
if (window.matchMedia && window.matchMedia('(max-width: 760px)').matches) {
  for (const d of document.querySelectorAll('.room-side details')) d.open = false; // keep the messages in view on phones
}
renderPresence();
scrollToBottom();
client.join(slug, { since: history.length ? history[history.length - 1].seq : 0 });
client.connect(); // each `joined` loads the receipts
onVisibility();
