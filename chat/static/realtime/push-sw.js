/**
 * The push service worker (contract §11), served by notifications.views at
 * the notifications prefix. A push's payload is the WebSocket's
 * `notification` frame; it is shown, and a click opens (or focuses) the room
 * it is about, else the site. `?prefix=` is chat.urls' prefix ("" or "/rt").
 */

const prefix = new URL(self.location.href).searchParams.get('prefix') || '';

function describe(notification) {
  const data = notification.data || {};
  const room = typeof data.room === 'string' ? data.room : null;
  const who = data.from && typeof data.from.username === 'string' ? data.from.username : 'Someone';
  let title = 'Notification';
  if (notification.kind === 'mention') title = room ? `${who} mentioned you in #${room}` : `${who} mentioned you`;
  else if (notification.kind === 'announcement') title = 'Announcement';
  const body = String(data.excerpt || data.text || '');
  const url = room ? `${prefix}/rooms/${encodeURIComponent(room)}/` : `${prefix}/`;
  return { title, body, url };
}

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (event) => event.waitUntil(self.clients.claim()));

self.addEventListener('push', (event) => {
  let frame = {};
  try {
    frame = event.data ? event.data.json() : {};
  } catch {
    frame = {};
  }
  const notification = (frame && frame.notification) || {};
  const { title, body, url } = describe(notification);
  event.waitUntil(
    self.registration.showNotification(title, {
      body,
      tag: notification.id ? `notification-${notification.id}` : undefined,
      data: { url },
    }),
  );
});

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const target = new URL((event.notification.data && event.notification.data.url) || '/', self.location.origin).href;
  event.waitUntil(
    self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then((windows) => {
      for (const client of windows) {
        if (client.url === target && 'focus' in client) return client.focus();
      }
      return self.clients.openWindow(target);
    }),
  );
});
