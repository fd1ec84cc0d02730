"""
Provides the Lua scripts of the Redis presence store: each change of presence
is one script, so the status before and after is computed in the step that
changes it and a transition is reported to exactly one process, on Redis's
clock. The keys, their shards and their lifetimes: docs/architecture.md,
"presence.scripts".
"""

CLOCK = r"""
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Give a key at least `ms` more to live, never less than it has (EXPIRE GT
-- cannot set a first expiry: a key without one counts as living forever).
local function keep(key, ms)
  local left = redis.call('PTTL', key)
  if left == -2 or left >= ms then return end
  redis.call('PEXPIRE', key, ms)
end
"""

PRELUDE = (
    r"""
local R = KEYS[1]
local DUE = KEYS[2]
"""
    + CLOCK
)

# The room functions, for any room key R (its list; every key of the room
# starts with it). DUE, the shard's sweep index, is bound before them.
ROOM_FUNCTIONS = r"""
local function seat_key(R, uid) return R .. ':user:' .. uid end
local function due_member(rid, ch) return 'r:' .. rid .. ':' .. ch end

-- A user's status in the room from their connections there; '' when none.
local function status_of(seat)
  local values = redis.call('HVALS', seat)
  if #values == 0 then return '' end
  for _, v in ipairs(values) do
    if v == 'online' then return 'online' end
  end
  return 'away'
end

-- After a user's connections in the room changed: update the room's list and
-- append {rid, slug, uid, username, status} to `changes` if the user's status
-- moved ('' is a leave).
local function settle(R, changes, rid, slug, uid, name, before)
  local after = status_of(seat_key(R, uid))
  if after == before then return end
  if name == '' then
    local listed = redis.call('HGET', R, uid)
    if listed then name = string.match(listed, '^[^:]*:(.*)$') or '' end
  end
  if after == '' then
    redis.call('HDEL', R, uid)
  else
    redis.call('HSET', R, uid, after .. ':' .. name)
  end
  for _, v in ipairs({rid, slug, uid, name, after}) do table.insert(changes, v) end
end

-- The connection joins the room or sets its status there, its lease
-- expiring at `expiry`.
local function join(R, changes, rid, slug, ch, uid, name, status, expiry, keep_ms)
  local seat = seat_key(R, uid)
  local before = status_of(seat)
  redis.call('HSET', seat, ch, status)
  redis.call('HSET', R .. ':conns', ch, uid .. ':' .. slug)
  redis.call('ZADD', R .. ':leases', expiry, ch)
  redis.call('ZADD', DUE, expiry, due_member(rid, ch))
  settle(R, changes, rid, slug, uid, name, before)
  for _, key in ipairs({seat, R, R .. ':conns', R .. ':leases', DUE}) do keep(key, keep_ms) end
end

-- The connection leaves the room: its seat, lease and index entry go.
local function leave(R, changes, rid, ch)
  local held = redis.call('HGET', R .. ':conns', ch)
  redis.call('HDEL', R .. ':conns', ch)
  redis.call('ZREM', R .. ':leases', ch)
  redis.call('ZREM', DUE, due_member(rid, ch))
  if not held then return end
  local uid, slug = string.match(held, '^([^:]*):(.*)$')
  local seat = seat_key(R, uid)
  if redis.call('HEXISTS', seat, ch) == 0 then return end
  local before = status_of(seat)
  redis.call('HDEL', seat, ch)
  settle(R, changes, rid, slug, uid, '', before)
end
"""

ROOM_PRELUDE = (
    PRELUDE
    + ROOM_FUNCTIONS
    + r"""
local LEASES = R .. ':leases'
local TYPING = R .. ':typing'
"""
)

USER_PRELUDE = (
    PRELUDE
    + r"""
local CONNS = R .. ':conns'
local function due_member(uid, ch) return 'u:' .. uid .. ':' .. ch end
"""
)

# KEYS: due, then the room of each join. ARGV: ttl_ms, keep_ms, then per
# join: rid, slug, channel, uid, username, status, listed ('1' or '0').
# Each connection joins its room or sets its status there, in turn (also a
# heartbeat's re-registration of a lease that was lost): the joins a process
# made meanwhile, in one call. Returns per join its changes; listed,
# {changes, the room's list just after it} (flat uid, "status:username").
ROOM_JOINS = (
    r"""
local DUE = KEYS[1]
"""
    + CLOCK
    + ROOM_FUNCTIONS
    + r"""
local ttl, keep_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local expiry = now_ms() + ttl
local replies = {}
local a = 3
for k = 2, #KEYS do
  local R = KEYS[k]
  local changes = {}
  join(R, changes, ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5],
       expiry, keep_ms)
  if ARGV[a + 6] == '1' then
    replies[k - 1] = {changes, redis.call('HGETALL', R)}
  else
    replies[k - 1] = changes
  end
  a = a + 7
end
return replies
"""
)

# KEYS: room, due. ARGV: rid, channel. The connection leaves the room.
ROOM_EXIT = (
    ROOM_PRELUDE
    + r"""
local changes = {}
leave(R, changes, ARGV[1], ARGV[2])
return changes
"""
)

# KEYS: room, due. ARGV: rid, count of channels n, channel*n, typing member*.
# Ends the room's due leases and typing leases among those named (a sweep
# found them in the due index); an entry renewed since is left alone.
# Returns {changes, lapsed typing members}.
ROOM_SWEEP = (
    ROOM_PRELUDE
    + r"""
local rid, n = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local changes, lapsed = {}, {}
for i = 3, 2 + n do
  local ch = ARGV[i]
  local expiry = tonumber(redis.call('ZSCORE', LEASES, ch))
  if not expiry or expiry <= now then
    leave(R, changes, rid, ch)
  end
end
for i = 3 + n, #ARGV do
  local member = ARGV[i]
  local expiry = tonumber(redis.call('ZSCORE', TYPING, member))
  if not expiry or expiry <= now then
    redis.call('ZREM', DUE, 't:' .. rid .. ':' .. member)
    if expiry then
      redis.call('ZREM', TYPING, member)
      table.insert(lapsed, member)
    end
  end
end
return {changes, lapsed}
"""
)

# KEYS: room, due. ARGV: rid, member, ttl_ms, keep_ms. A typist's lease,
# refreshed by each `true`.
TYPING_START = (
    ROOM_PRELUDE
    + r"""
local expiry = now_ms() + tonumber(ARGV[3])
redis.call('ZADD', TYPING, expiry, ARGV[2])
redis.call('ZADD', DUE, expiry, 't:' .. ARGV[1] .. ':' .. ARGV[2])
keep(TYPING, tonumber(ARGV[4])); keep(DUE, tonumber(ARGV[4]))
return 1
"""
)

# KEYS: room, due. ARGV: rid, member. Ends a typing lease; 1 if it was there.
TYPING_STOP = (
    ROOM_PRELUDE
    + r"""
redis.call('ZREM', DUE, 't:' .. ARGV[1] .. ':' .. ARGV[2])
return redis.call('ZREM', TYPING, ARGV[2])
"""
)

# KEYS: due, then the user of each connection. ARGV: ttl_ms, keep_ms, then
# per connection: uid, channel. Connections of the users opened (or their
# lost leases registered again): those a process opened meanwhile, in one
# call. Returns a 1 per connection.
USER_OPENS = (
    r"""
local DUE = KEYS[1]
"""
    + CLOCK
    + r"""
local ttl, keep_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local expiry = now_ms() + ttl
local replies = {}
local a = 3
for k = 2, #KEYS do
  local conns = KEYS[k] .. ':conns'
  redis.call('ZADD', conns, expiry, ARGV[a + 1])
  redis.call('ZADD', DUE, expiry, 'u:' .. ARGV[a] .. ':' .. ARGV[a + 1])
  keep(conns, keep_ms)
  replies[k - 1] = 1
  a = a + 2
end
keep(DUE, keep_ms)
return replies
"""
)

# KEYS: user, due. ARGV: uid, channel. The connection closed; 1 if it was the
# user's last one (they went offline), else 0.
USER_CLOSE = (
    USER_PRELUDE
    + r"""
redis.call('ZREM', DUE, due_member(ARGV[1], ARGV[2]))
if redis.call('ZREM', CONNS, ARGV[2]) == 1 and redis.call('ZCARD', CONNS) == 0 then
  return 1
end
return 0
"""
)

# KEYS: due, then one room or user key (R or U) per entry. ARGV: ttl_ms,
# keep_ms, then per entry: kind ('r' or 'u'), its id, a count n, n channels.
# Renews the leases of one process's connections in many rooms and users at
# once (one call instead of one per room and per user: a process with
# thousands of users renews them in a few calls); returns, flat, the
# {kind, id, channel} that had no lease any more (swept while the process
# stalled, or Redis lost them). It names other keys than KEYS[1..2], like
# every script here, so it needs one Redis per shard, not Redis Cluster.
HEARTBEAT = (
    CLOCK
    + r"""
local DUE = KEYS[1]
local ttl, keep_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local expiry = now_ms() + ttl
local missing = {}
local a = 3
for k = 2, #KEYS do
  local key, kind, id, n = KEYS[k], ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  if kind == 'r' then
    local leases, conns = key .. ':leases', key .. ':conns'
    for i = a, a + n - 1 do
      local ch = ARGV[i]
      local held = redis.call('HGET', conns, ch)
      if held and redis.call('ZSCORE', leases, ch) then
        redis.call('ZADD', leases, 'XX', expiry, ch)
        redis.call('ZADD', DUE, expiry, 'r:' .. id .. ':' .. ch)
        keep(key .. ':user:' .. string.match(held, '^([^:]*):'), keep_ms)
      else
        table.insert(missing, kind); table.insert(missing, id); table.insert(missing, ch)
      end
    end
    for _, suffix in ipairs({'', ':conns', ':leases', ':typing'}) do
      keep(key .. suffix, keep_ms)
    end
  else
    local conns = key .. ':conns'
    for i = a, a + n - 1 do
      local ch = ARGV[i]
      if redis.call('ZSCORE', conns, ch) then
        redis.call('ZADD', conns, 'XX', expiry, ch)
        redis.call('ZADD', DUE, expiry, 'u:' .. id .. ':' .. ch)
      else
        table.insert(missing, kind); table.insert(missing, id); table.insert(missing, ch)
      end
    end
    keep(conns, keep_ms)
  end
  a = a + n
end
keep(DUE, keep_ms)
return missing
"""
)

# KEYS: user, due. ARGV: uid, channel*. Ends the user's due connection
# leases among those named; 1 if that left the user with none (offline).
USER_SWEEP = (
    USER_PRELUDE
    + r"""
local uid = ARGV[1]
local now = now_ms()
local ended = false
for i = 2, #ARGV do
  local ch = ARGV[i]
  local expiry = tonumber(redis.call('ZSCORE', CONNS, ch))
  if not expiry or expiry <= now then
    redis.call('ZREM', DUE, due_member(uid, ch))
    if expiry then
      redis.call('ZREM', CONNS, ch)
      ended = true
    end
  end
end
if ended and redis.call('ZCARD', CONNS) == 0 then return 1 end
return 0
"""
)

# KEYS: due. ARGV: limit. The shard's due index entries, up to `limit`.
DUE = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""

ALL = {
    "room_joins": ROOM_JOINS,
    "room_exit": ROOM_EXIT,
    "room_sweep": ROOM_SWEEP,
    "typing_start": TYPING_START,
    "typing_stop": TYPING_STOP,
    "user_opens": USER_OPENS,
    "user_close": USER_CLOSE,
    "heartbeat": HEARTBEAT,
    "user_sweep": USER_SWEEP,
    "due": DUE,
}
