"""
Provides the Lua scripts of the Redis presence store.

Every change of presence state is one script, so it runs atomically in Redis:
the status a user had before and after is computed in the same step that
changes it, and a transition is reported to exactly one caller, whichever of
many processes made it. Times are Redis's clock (TIME), never a process's, so
processes on machines with skewed clocks agree on which lease has expired.

Keys (P is the prefix, PRESENCE_REDIS_PREFIX):

    P..'conns'                 ZSET   channel -> lease expiry (ms)
    P..'conn:'..channel        HASH   u=user id, n=username, r:<room>=status, s:<room>=slug
    P..'user:'..uid            SET    the user's open channels, on any process
    P..'room:'..rid            HASH   uid -> '<status>:<username>', the room's presence list
    P..'room:'..rid..':user:'..uid  HASH  channel -> status, the user's connections there
    P..'typing'                ZSET   '[rid, slug, uid, username]' -> typing expiry (ms)

Nothing grows without bound: a connection's entries are removed when it
closes or its lease is swept, Redis deletes a hash, set or zset once it is
empty, and every key also carries an expiry twice the TTL past the last
heartbeat that touched it, a safety net for a Redis every process abandoned.

The scripts name their keys from the prefix (ARGV[1]) rather than KEYS, so
they need one Redis, not a Redis Cluster.
"""

PRELUDE = r"""
local P = ARGV[1]
local CONNS = P .. 'conns'
local TYPING = P .. 'typing'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function conn_key(ch) return P .. 'conn:' .. ch end
local function user_key(uid) return P .. 'user:' .. uid end
local function room_key(rid) return P .. 'room:' .. rid end
local function seat_key(rid, uid) return P .. 'room:' .. rid .. ':user:' .. uid end

-- Give a key at least `ms` more to live, never less than it has (EXPIRE GT
-- cannot set a first expiry: a key without one counts as living forever).
local function keep(key, ms)
  local left = redis.call('PTTL', key)
  if left == -2 or left >= ms then return end
  redis.call('PEXPIRE', key, ms)
end

-- A user's status in a room from their connections there; '' when none.
local function status_of(seat)
  local values = redis.call('HVALS', seat)
  if #values == 0 then return '' end
  for _, v in ipairs(values) do
    if v == 'online' then return 'online' end
  end
  return 'away'
end

-- After a user's connections in a room changed: update the room's list and
-- append {rid, slug, uid, username, status} to `changes` if the user's status
-- moved ('' is a leave).
local function settle(changes, rid, slug, uid, name, before)
  local after = status_of(seat_key(rid, uid))
  if after == before then return end
  local room = room_key(rid)
  if name == '' then
    local listed = redis.call('HGET', room, uid)
    if listed then name = string.match(listed, '^[^:]*:(.*)$') or '' end
  end
  if after == '' then
    redis.call('HDEL', room, uid)
  else
    redis.call('HSET', room, uid, after .. ':' .. name)
  end
  for _, v in ipairs({rid, slug, uid, name, after}) do table.insert(changes, v) end
end

local function leave_room(changes, ch, rid, slug, uid, name)
  local seat = seat_key(rid, uid)
  if redis.call('HEXISTS', seat, ch) == 0 then return end
  local before = status_of(seat)
  redis.call('HDEL', seat, ch)
  settle(changes, rid, slug, uid, name, before)
end

-- Close a connection: out of every room it is in, its lease gone; a user
-- whose last connection this was goes to `offline`.
local function drop(changes, offline, ch, uid_hint)
  local ckey = conn_key(ch)
  local fields = redis.call('HGETALL', ckey)
  local info = {}
  for i = 1, #fields, 2 do info[fields[i]] = fields[i + 1] end
  local uid = info['u'] or uid_hint
  local name = info['n'] or ''
  if uid then
    for i = 1, #fields, 2 do
      local f = fields[i]
      if string.sub(f, 1, 2) == 'r:' then
        local rid = string.sub(f, 3)
        leave_room(changes, ch, rid, info['s:' .. rid] or '', uid, name)
      end
    end
  end
  redis.call('DEL', ckey)
  redis.call('ZREM', CONNS, ch)
  if uid and uid ~= '' then
    local ukey = user_key(uid)
    if redis.call('SREM', ukey, ch) == 1 and redis.call('SCARD', ukey) == 0 then
      table.insert(offline, uid)
    end
  end
end
"""

# ARGV: P, channel, uid, username, ttl_ms, keep_ms, then (rid, slug, status)*.
# Opens or refreshes a connection's lease and sets its status in each room
# given: `connect` (no rooms), `enter` (one) and a heartbeat's re-registration
# of a connection whose lease was lost (all of its rooms).
JOIN = (
    PRELUDE
    + r"""
local ch, uid, name = ARGV[2], ARGV[3], ARGV[4]
local ttl, keep_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local ckey = conn_key(ch)
redis.call('ZADD', CONNS, now_ms() + ttl, ch)
redis.call('HSET', ckey, 'u', uid, 'n', name)
redis.call('SADD', user_key(uid), ch)
keep(CONNS, keep_ms); keep(ckey, keep_ms); keep(user_key(uid), keep_ms)
local changes = {}
for i = 7, #ARGV, 3 do
  local rid, slug, status = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local seat = seat_key(rid, uid)
  local before = status_of(seat)
  redis.call('HSET', seat, ch, status)
  redis.call('HSET', ckey, 'r:' .. rid, status, 's:' .. rid, slug)
  settle(changes, rid, slug, uid, name, before)
  keep(seat, keep_ms); keep(room_key(rid), keep_ms)
end
return changes
"""
)

# ARGV: P, channel, uid, rid. The connection leaves one room.
EXIT = (
    PRELUDE
    + r"""
local ch, uid, rid = ARGV[2], ARGV[3], ARGV[4]
local ckey = conn_key(ch)
local name = redis.call('HGET', ckey, 'n') or ''
local slug = redis.call('HGET', ckey, 's:' .. rid) or ''
redis.call('HDEL', ckey, 'r:' .. rid, 's:' .. rid)
local changes = {}
leave_room(changes, ch, rid, slug, uid, name)
return changes
"""
)

# ARGV: P, channel, uid. The connection closed. Returns {changes, offline uids}.
DISCONNECT = (
    PRELUDE
    + r"""
local changes, offline = {}, {}
drop(changes, offline, ARGV[2], ARGV[3])
return {changes, offline}
"""
)

# ARGV: P, ttl_ms, keep_ms, channel*. Refreshes the leases of one process's
# connections; returns the channels that had none any more (swept while the
# process stalled, or Redis lost them), for the caller to register again.
HEARTBEAT = (
    PRELUDE
    + r"""
local ttl, keep_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
local expiry = now_ms() + ttl
local missing = {}
for i = 4, #ARGV do
  local ch = ARGV[i]
  if redis.call('ZSCORE', CONNS, ch) then
    redis.call('ZADD', CONNS, 'XX', expiry, ch)
    local ckey = conn_key(ch)
    keep(ckey, keep_ms)
    local fields = redis.call('HGETALL', ckey)
    local uid = nil
    for j = 1, #fields, 2 do
      if fields[j] == 'u' then uid = fields[j + 1] end
    end
    if uid then
      keep(user_key(uid), keep_ms)
      for j = 1, #fields, 2 do
        if string.sub(fields[j], 1, 2) == 'r:' then
          local rid = string.sub(fields[j], 3)
          keep(room_key(rid), keep_ms); keep(seat_key(rid, uid), keep_ms)
        end
      end
    end
  else
    table.insert(missing, ch)
  end
end
keep(CONNS, keep_ms)
return missing
"""
)

# ARGV: P, limit. Ends up to `limit` expired connection leases and typing
# leases. Safe in many processes at once: a lease is removed in the same
# atomic step that reports it, so each expiry is reported once.
# Returns {changes, offline uids, lapsed typing members, expired count}.
SWEEP = (
    PRELUDE
    + r"""
local limit = tonumber(ARGV[2])
local now = now_ms()
local changes, offline = {}, {}
local expired = redis.call('ZRANGEBYSCORE', CONNS, '-inf', now, 'LIMIT', 0, limit)
for _, ch in ipairs(expired) do drop(changes, offline, ch, nil) end
local lapsed = redis.call('ZRANGEBYSCORE', TYPING, '-inf', now, 'LIMIT', 0, limit)
for _, member in ipairs(lapsed) do redis.call('ZREM', TYPING, member) end
return {changes, offline, lapsed, #expired}
"""
)

# ARGV: P, member, ttl_ms, keep_ms. A typist's lease, refreshed by each `true`.
TYPING_START = (
    PRELUDE
    + r"""
redis.call('ZADD', TYPING, now_ms() + tonumber(ARGV[3]), ARGV[2])
keep(TYPING, tonumber(ARGV[4]))
return 1
"""
)

ALL = {
    "join": JOIN,
    "exit": EXIT,
    "disconnect": DISCONNECT,
    "heartbeat": HEARTBEAT,
    "sweep": SWEEP,
    "typing_start": TYPING_START,
}
