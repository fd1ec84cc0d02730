"""
Provides shared documents (contract §9): Yjs documents of a room that stock
`yjs` + `y-websocket` clients edit together at `/ws/docs/{room}/{name}`.

- `protocol` reads and writes the y-websocket messages (pycrdt's helpers);
- `selectors` and `services` read and write the documents: every update is
  stored under the document's next gap-free `seq` before anyone is told,
  and snapshots compact the log;
- `events` rings the doorbell through django_realtime.bus after commit;
- `hub` keeps, per process, the documents its editors have open: the CRDT in
  memory (pycrdt), the cursor that applies the log in `seq` order, the
  editors and their awareness;
- `consumers` is the WebSocket endpoint, `views` the REST API.
"""
