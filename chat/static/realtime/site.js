/**
 * Provides what every signed-in page shares: the notification bell (unread
 * count and a small list) and, on the room list, the "create a room" form.
 * No inline scripts anywhere, so a `script-src 'self'` CSP can be added.
 *
 * The bell is built against the REST contract (api/notifications/…); if those
 * endpoints are not there it stays quietly at zero. The room page forwards live
 * `notification` frames as a `realtime:notification` DOM event.
 */

import { api, errorText } from './http.js';
import { config, roomPage, roomsApi } from './config.js';

const $ = (id) => document.getElementById(id);

// --- bell ---------------------------------------------------------------------------------

const bell = $('bell');
const badge = $('bell-count');
const panel = $('bell-panel');
const list = $('bell-list');
const empty = $('bell-empty');
let unread = 0;

function setUnread(n) {
  unread = Math.max(0, n | 0);
  if (!badge) return;
  badge.textContent = unread > 99 ? '99+' : String(unread);
  badge.hidden = unread === 0;
  bell.setAttribute('aria-label', unread ? `Notifications (${unread} unread)` : 'Notifications');
}

function roomSlugOf(data) {
  if (!data) return null;
  if (typeof data.room === 'string') return data.room;
  if (data.room && typeof data.room.slug === 'string') return data.room.slug;
  if (typeof data.room_slug === 'string') return data.room_slug;
  return null;
}

/** A line of plain text for a notification whose `data` shape depends on its kind. */
function describe(n) {
  const d = n.data && typeof n.data === 'object' ? n.data : {};
  const who = (d.user && d.user.username) || (d.by && d.by.username) || (d.from && d.from.username) || d.username;
  const room = roomSlugOf(d);
  const text = d.text || d.message || d.content || d.excerpt || d.title || '';
  if (n.kind === 'mention') return `${who || 'Someone'} mentioned you${room ? ` in #${room}` : ''}${text ? `: ${text}` : ''}`;
  if (text) return String(text);
  return String(n.kind || 'notification');
}

function notificationItem(n) {
  const li = document.createElement('li');
  li.className = n.read ? 'read' : 'unread';
  const slug = roomSlugOf(n.data);
  const link = document.createElement(slug ? 'a' : 'span');
  if (slug) link.href = roomPage(slug);
  link.textContent = describe(n);
  link.addEventListener('click', () => {
    if (!n.read && n.id !== undefined) {
      n.read = true;
      li.className = 'read';
      setUnread(unread - 1);
      api('POST', `${config.notifications}${encodeURIComponent(n.id)}/read/`).catch(() => {});
    }
  });
  const time = document.createElement('time');
  if (n.created_at) {
    time.dateTime = n.created_at;
    const d = new Date(n.created_at);
    time.textContent = Number.isNaN(d.getTime()) ? '' : d.toLocaleString();
  }
  li.append(link, time);
  return li;
}

async function refreshCount() {
  try {
    const { ok, data } = await api('GET', `${config.notifications}unread-count/`);
    if (ok && data && Number.isInteger(data.count)) setUnread(data.count);
  } catch {
    // offline or not available: keep what we have
  }
}

async function loadList() {
  try {
    const { ok, data } = await api('GET', config.notifications);
    const rows = ok && data ? (Array.isArray(data) ? data : data.results || []) : null;
    if (!rows) {
      empty.textContent = 'Notifications are not available.';
      empty.hidden = false;
      list.replaceChildren();
      return;
    }
    list.replaceChildren(...rows.slice(0, 20).map(notificationItem));
    empty.textContent = 'Nothing new.';
    empty.hidden = rows.length > 0;
  } catch {
    empty.textContent = 'Could not load notifications.';
    empty.hidden = false;
  }
}

function togglePanel(open) {
  const show = open === undefined ? panel.hidden : open;
  panel.hidden = !show;
  bell.setAttribute('aria-expanded', String(show));
  if (show) loadList();
}

if (bell && panel && config.notifications) {
  bell.addEventListener('click', (e) => {
    e.preventDefault();
    togglePanel();
  });
  document.addEventListener('click', (e) => {
    if (!panel.hidden && !panel.contains(e.target) && !bell.contains(e.target)) togglePanel(false);
  });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !panel.hidden) {
      togglePanel(false);
      bell.focus();
    }
  });
  $('bell-read-all').addEventListener('click', async () => {
    const { ok } = await api('POST', `${config.notifications}read-all/`).catch(() => ({ ok: false }));
    if (ok) {
      setUnread(0);
      for (const li of list.querySelectorAll('li.unread')) li.className = 'read';
    }
  });
  document.addEventListener('realtime:notification', (e) => {
    const n = e.detail;
    if (!n) return;
    if (!n.read) setUnread(unread + 1);
    if (!panel.hidden) {
      list.prepend(notificationItem(n));
      empty.hidden = true;
    }
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') refreshCount();
  });
  refreshCount();
}

// --- create a room (room list) ---------------------------------------------------------------

const createForm = $('create-room');
if (createForm) {
  const nameInput = $('room-name');
  const slugInput = $('room-slug');
  const privateInput = $('room-private');
  const errorEl = $('create-error');
  let slugEdited = false;

  const slugify = (s) =>
    s
      .normalize('NFKD')
      .replace(/[\u0300-\u036f]/g, '')
      .toLowerCase()
      .replace(/[^a-z0-9_-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 64);

  nameInput.addEventListener('input', () => {
    if (!slugEdited) slugInput.value = slugify(nameInput.value);
  });
  slugInput.addEventListener('input', () => {
    slugEdited = slugInput.value !== '';
  });

  createForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    errorEl.hidden = true;
    const slug = slugInput.value.trim();
    const name = nameInput.value.trim();
    if (!name || !slug) {
      errorEl.textContent = 'A room needs a name and an address.';
      errorEl.hidden = false;
      return;
    }
    const button = createForm.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      const { ok, status, data } = await api('POST', roomsApi(), { slug, name, is_private: privateInput.checked });
      if (ok) {
        window.location.assign(roomPage((data && data.slug) || slug));
        return;
      }
      errorEl.textContent = errorText(data, status);
      errorEl.hidden = false;
    } catch {
      errorEl.textContent = 'Could not reach the server.';
      errorEl.hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}
