/**
 * Provides the "Notify me on this device" control (contract §11): on a click
 * it registers the push service worker (notifications' push-sw.js), asks for
 * permission, subscribes with the site's application server key
 * (GET api/push/key/) and stores the subscription (POST
 * api/push/subscriptions/). Whatever stops it (no push on this site, no
 * permission, a browser that cannot reach its push service) is said in the
 * control's status line, never swallowed.
 */

import { api, errorText } from './http.js';
import { config } from './config.js';

const nav = document.querySelector('.topbar-right');
// notifications.urls' prefix: the notifications API's URL without "api/notifications/".
const base = config.notifications ? config.notifications.replace(/api\/notifications\/$/, '') : null;

function keyBytes(text) {
  const padded = (text + '='.repeat((4 - (text.length % 4)) % 4)).replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function build() {
  const wrap = document.createElement('span');
  wrap.className = 'push-control';
  const button = document.createElement('button');
  button.type = 'button';
  button.id = 'push-enable';
  button.className = 'link';
  button.textContent = 'Notify me on this device';
  const status = document.createElement('span');
  status.id = 'push-status';
  status.className = 'muted';
  status.setAttribute('role', 'status');
  wrap.append(button, status);
  nav.prepend(wrap);
  return { button, status };
}

async function registerWorker() {
  const url = `${base}push-sw.js?prefix=${encodeURIComponent(config.prefix)}`;
  const registration = await navigator.serviceWorker.register(url, { scope: base });
  await navigator.serviceWorker.ready;
  return registration;
}

async function enable(status) {
  if (!('serviceWorker' in navigator) || !('PushManager' in window) || !('Notification' in window)) {
    status.textContent = 'This browser cannot show push notifications; you will get e-mail instead.';
    return;
  }
  status.textContent = 'Setting up…';
  let registration;
  try {
    registration = await registerWorker();
  } catch (error) {
    status.textContent = `Could not install the notification worker: ${error.message || error}`;
    return;
  }
  const key = await api('GET', `${base}api/push/key/`);
  if (key.status === 404) {
    status.textContent = 'Push notifications are not set up on this site.';
    return;
  }
  if (!key.ok) {
    status.textContent = errorText(key.data, key.status);
    return;
  }
  const permission = await Notification.requestPermission();
  if (permission !== 'granted') {
    status.textContent = 'Notifications are blocked for this site in the browser’s settings.';
    return;
  }
  let subscription;
  try {
    subscription =
      (await registration.pushManager.getSubscription()) ||
      (await registration.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: keyBytes(key.data.public_key),
      }));
  } catch (error) {
    status.textContent =
      'Push is unavailable: this browser cannot reach its push service ' +
      `(${error.message || error.name}). You will get e-mail instead.`;
    return;
  }
  const stored = await api('POST', `${base}api/push/subscriptions/`, subscription.toJSON());
  status.textContent = stored.ok
    ? 'This device will be notified.'
    : `Push is unavailable: ${errorText(stored.data, stored.status)}`;
}

if (nav && base !== null) {
  const { button, status } = build();
  button.addEventListener('click', () => {
    button.disabled = true;
    enable(status).finally(() => {
      button.disabled = false;
    });
  });
}
