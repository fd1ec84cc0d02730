// A Socket.IO 4.8 chat server, the Node peer of bench/loadtest.py's targets
// socketio and socketio-pg: one process, the in-memory adapter, default
// options but compression off (as our servers under daphne have none).
//
//   node server.js PORT          rooms joined by a "join" event; a posted
//                                "message" is broadcast to its room, sender
//                                included; nothing stored
//   node server.js PORT --pg     the same, storing each message first in the
//                                PostgreSQL at $DATABASE_URL, in one statement
//                                that takes the room's next seq; the broadcast
//                                carries the row's id and seq
//
// A room's posts are stored and broadcast one after another, so its members
// get them in seq order (posts from different rooms run concurrently).
//
// Events: join "room3" -> joined {room}; message {room, content, client_id}
// -> message {room, content[, id, seq]} to the room; a repeated client_id is
// stored once and answered to its sender alone with ack {id, seq}; bad input
// is answered with refused {reason}, never dropped silently.
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
const stored = process.argv.includes("--pg");
if (!Number.isInteger(port) || port <= 0) {
  console.error("usage: node server.js PORT [--pg]");
  process.exit(2);
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS rooms (
  id text PRIMARY KEY,
  last_seq bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
  id bigserial PRIMARY KEY,
  room_id text NOT NULL REFERENCES rooms (id),
  seq bigint NOT NULL,
  client_id text NOT NULL UNIQUE,
  content text NOT NULL,
  created_at timestamptz NOT NULL,
  UNIQUE (room_id, seq)
);`;

// One statement per post: the room's row lock orders concurrent posts, and a
// failed insert (a repeated client_id) rolls the bump back with it.
const POST = `
WITH bump AS (UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq)
INSERT INTO messages (room_id, seq, client_id, content, created_at)
SELECT $1, last_seq, $2, $3, now() FROM bump
RETURNING id, seq`;

const MAX_ROOM = 100;
const MAX_CONTENT = 4000;

// Each room's posts in turn: a task starts when the room's previous one is
// done (each answers its own errors; anything else is logged, and the room
// goes on).
const tails = new Map();
function inTurn(room, task) {
  const next = (tails.get(room) || Promise.resolve())
    .then(task)
    .catch((err) => console.error("post:", err));
  tails.set(room, next);
  next.then(() => {
    if (tails.get(room) === next) tails.delete(room);
  });
}

async function acknowledge(pool, socket, clientId) {
  try {
    const { rows } = await pool.query("SELECT id, seq FROM messages WHERE client_id = $1", [
      clientId,
    ]);
    socket.emit("ack", { client_id: clientId, id: Number(rows[0].id), seq: Number(rows[0].seq) });
  } catch (err) {
    socket.emit("refused", { reason: "not stored" });
  }
}

async function store(pool, io, socket, room, content, clientId) {
  let row;
  try {
    ({
      rows: [row],
    } = await pool.query(POST, [room, clientId, content]));
  } catch (err) {
    if (err.code === "23505" && err.constraint === "messages_client_id_key") {
      // A retry of a stored post: its sender learns where it went; the room
      // already had it.
      await acknowledge(pool, socket, clientId);
    } else {
      socket.emit("refused", { reason: "not stored" });
    }
    return;
  }
  io.to(room).emit("message", { room, content, id: Number(row.id), seq: Number(row.seq) });
}

async function main() {
  let pool = null;
  const rooms = new Set(); // rooms known to have their row (pg)
  if (stored) {
    const { Pool } = require("pg");
    if (!process.env.DATABASE_URL) throw new Error("--pg needs DATABASE_URL");
    pool = new Pool({ connectionString: process.env.DATABASE_URL });
    pool.on("error", (err) => console.error("idle database connection:", err.message));
    await pool.query(SCHEMA);
  }

  const httpServer = http.createServer();
  const io = new Server(httpServer, { perMessageDeflate: false, httpCompression: false });

  io.on("connection", (socket) => {
    socket.on("join", async (room) => {
      if (typeof room !== "string" || room.length === 0 || room.length > MAX_ROOM) {
        socket.emit("refused", { reason: "room must be a name of 1 to 100 characters" });
        return;
      }
      if (pool && !rooms.has(room)) {
        try {
          await pool.query("INSERT INTO rooms (id) VALUES ($1) ON CONFLICT DO NOTHING", [room]);
        } catch (err) {
          socket.emit("refused", { reason: "unavailable" });
          return;
        }
        rooms.add(room);
      }
      socket.join(room);
      socket.emit("joined", { room });
    });

    socket.on("message", (frame) => {
      const { room, content, client_id: clientId } = frame || {};
      if (typeof room !== "string" || !socket.rooms.has(room)) {
        socket.emit("refused", { reason: "join the room first" });
        return;
      }
      if (typeof content !== "string" || content.length > MAX_CONTENT) {
        socket.emit("refused", { reason: "content must be text of at most 4000 characters" });
        return;
      }
      if (!pool) {
        io.to(room).emit("message", { room, content });
        return;
      }
      if (typeof clientId !== "string" || clientId.length === 0 || clientId.length > 64) {
        socket.emit("refused", { reason: "client_id must be 1 to 64 characters" });
        return;
      }
      inTurn(room, () => store(pool, io, socket, room, content, clientId));
    });
  });

  httpServer.listen(port, "127.0.0.1");
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
