// The site's JSON calls to its own REST API: same-origin cookies, the CSRF
// token on writes, and errors as text a person can read. Used by site.js and
// room.js.

export function csrfToken() {
  const input = document.querySelector('input[name="csrfmiddlewaretoken"]');
  if (input && input.value) return input.value;
  const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : '';
}

export async function api(method, url, body) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (method !== 'GET') {
    init.headers['Content-Type'] = 'application/json';
    init.headers['X-CSRFToken'] = csrfToken();
    init.body = JSON.stringify(body === undefined ? {} : body);
  }
  const res = await fetch(url, init);
  let data = null;
  try {
    data = await res.json();
  } catch {
    // empty or not JSON
  }
  return { ok: res.ok, status: res.status, data };
}

export function errorText(data, status) {
  if (data && typeof data.detail === 'string') return data.detail;
  if (data && typeof data === 'object') {
    const parts = [];
    for (const [field, value] of Object.entries(data)) {
      const text = Array.isArray(value) ? value.join(' ') : String(value);
      parts.push(field === 'non_field_errors' || field === 'code' ? text : `${field}: ${text}`);
    }
    if (parts.length) return parts.join(' ');
  }
  return `Request failed (HTTP ${status}).`;
}
