// Where the page's server parts are, as the page says (a JSON script
// `rt-config` that chat/pages.py fills from `reverse`): the site chooses the
// prefixes, so nothing here is hard-coded. Defaults are the demo's.

function read() {
  const el = globalThis.document && document.getElementById('rt-config');
  if (!el) return {};
  try {
    return JSON.parse(el.textContent) || {};
  } catch {
    return {};
  }
}

const given = read();

export const config = {
  // The prefix chat.urls is included at, without its trailing slash ("" or "/rt").
  prefix: typeof given.prefix === 'string' ? given.prefix : '',
  // The notifications API (notifications.urls), with a trailing slash; null
  // when the site did not include it (the bell then stays hidden).
  notifications: 'notifications' in given ? given.notifications : '/api/notifications/',
  // The WebSocket path on this host.
  ws: given.ws || '/ws/',
  login: given.login || '/accounts/login/',
};

export const roomsApi = (slug) => `${config.prefix}/api/rooms/${slug === undefined ? '' : `${encodeURIComponent(slug)}/`}`;
export const roomPage = (slug) => `${config.prefix}/rooms/${encodeURIComponent(slug)}/`;

export function wsUrl() {
  const loc = globalThis.location;
  return `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}${config.ws}`;
}
