// The room page's "Notes" panel: the room's shared document `notes`
// (contract §9), edited together by everyone in the room through the stock
// `yjs` + `y-websocket` clients. Bundled by esbuild (`npm run build`, which
// `make install` and the wheel build run) into build/notes.bundle.js; the
// page loads only that bundle, so the strict CSP (script-src 'self') holds.
import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import { wsUrl } from './config.js';

// What changed between two strings: one splice (prefix, removed, inserted),
// enough for typing, pasting and deleting in a textarea.
export function splice(before, after) {
  let start = 0;
  const shortest = Math.min(before.length, after.length);
  while (start < shortest && before[start] === after[start]) start++;
  let end = 0;
  while (
    end < shortest - start &&
    before[before.length - 1 - end] === after[after.length - 1 - end]
  ) end++;
  return { index: start, remove: before.length - start - end, insert: after.slice(start, after.length - end) };
}

export function bindNotes({ textarea, status, slug, name = 'notes' }) {
  const doc = new Y.Doc();
  const text = doc.getText('content');
  const provider = new WebsocketProvider(`${wsUrl().replace(/\/$/, '')}/docs`, `${slug}/${name}`, doc);
  let shown = '';

  const show = () => {
    const value = text.toString();
    if (value === textarea.value) {
      shown = value;
      return;
    }
    // Keep the caret where it was relative to the text around it.
    const { selectionStart, selectionEnd } = textarea;
    const change = splice(shown, value);
    const shift = (pos) => (pos <= change.index ? pos : Math.max(change.index, pos - change.remove) + (pos > change.index ? change.insert.length : 0));
    textarea.value = value;
    shown = value;
    if (document.activeElement === textarea) textarea.setSelectionRange(shift(selectionStart), shift(selectionEnd));
  };

  text.observe((event) => {
    if (!event.transaction.local) show();
  });
  textarea.addEventListener('input', () => {
    const change = splice(shown, textarea.value);
    shown = textarea.value;
    doc.transact(() => {
      if (change.remove) text.delete(change.index, change.remove);
      if (change.insert) text.insert(change.index, change.insert);
    });
  });
  provider.on('status', ({ status: state }) => {
    status.textContent = state === 'connected' ? '' : 'reconnecting…';
  });
  provider.on('sync', (synced) => {
    if (synced) {
      textarea.disabled = false;
      show();
    }
  });
  provider.on('connection-close', (event) => {
    if (event && event.code === 4404) {
      status.textContent = 'not available';
      provider.disconnect();
    }
  });
  return { doc, provider };
}

const panel = globalThis.document && document.getElementById('notes');
if (panel) {
  const room = document.getElementById('room');
  const textarea = document.getElementById('notes-text');
  // A muted member reads only: the server drops their updates.
  textarea.readOnly = room.dataset.canPost === 'false';
  bindNotes({
    textarea,
    status: document.getElementById('notes-status'),
    slug: room.dataset.slug,
  });
}
