// What a wheel built without npm carries in place of build/notes.bundle.js
// (setup.py): the room page says the Notes panel is unavailable, and the
// rest of the page works. Shared documents themselves (/ws/docs/, REST) do.
const status = globalThis.document && document.getElementById('notes-status');
if (status) {
  status.textContent = 'unavailable';
  const textarea = document.getElementById('notes-text');
  if (textarea) {
    textarea.disabled = true;
    textarea.placeholder =
      'The Notes panel is unavailable: this install was built without npm ' +
      '(pip install from a clone needs npm on the PATH, or run make install).';
  }
}
