#!lua name=chat_presence
--[[
Presence: who is online, across the cluster, and the transitions' announcements.

Key layout (see crates/engine/src/redis/keys.rs):
  chat:{u:<id>}:pres        hash: node -> open connections of the user on that node
  chat:{u:<id>}:convs       the user's conversation index (its members are the
                            partners told about transitions)
  chat:{u:<id>}:ch          a user's live channel (sharded pub/sub)
  chat:user:<id>            user hash; seen = RFC 3339 time the user went offline
  chat:node:<node>:users    set: users with connections on the node
  chat:node:<node>:alive    heartbeat, SET EX ttl
  chat:nodes                sorted set: node -> last heartbeat ms

A user is online while their pres hash is not empty. On the transitions 0 -> 1 and
1 -> 0 (of the whole hash) the presence frame is published to every partner's
channel as an ephemeral payload ("- - <frame>") and on the global presence channel
(plain PUBLISH, "<user id> <frame>"), within the same atomic call, so two nodes can
never both announce (or both miss) a transition. Keys of partners and of a dead
node's users are built here from their ids.
]]

local function presence_frame(user, online, seen)
  local frame = '{"type":"presence","user":' .. cjson.encode(user)
  if online then
    return frame .. ',"online":true}'
  end
  return frame .. ',"online":false,"last_seen_at":' .. cjson.encode(seen) .. '}'
end

-- Publishes a transition of `user` to its partners and on the global channel.
local function announce(convs, user, frame, global)
  local payload = '- - ' .. frame
  for _, peer in ipairs(redis.call('ZRANGE', convs, 0, -1)) do
    redis.call('SPUBLISH', 'chat:{u:' .. peer .. '}:ch', payload)
  end
  redis.call('PUBLISH', global, user .. ' ' .. frame)
end

-- The user's open connections across the cluster.
local function total(pres)
  local n = 0
  for _, v in ipairs(redis.call('HVALS', pres)) do
    n = n + (tonumber(v) or 0)
  end
  return n
end

-- After the node's field of a user went away: goes offline if it was the last.
local function maybe_offline(pres, convs, user_hash, user, now, global)
  if redis.call('HLEN', pres) == 0 then
    redis.call('HSET', user_hash, 'seen', now)
    announce(convs, user, presence_frame(user, false, now), global)
  end
end

--[[ chat_conn_open: a connection of the user opened on a node.
KEYS: 1 pres(user), 2 node users set, 3 convs(user)
ARGV: 1 user id, 2 node, 3 global presence channel
Returns the user's open connections across the cluster, after this one. ]]
redis.register_function('chat_conn_open', function(keys, args)
  redis.call('HINCRBY', keys[1], args[2], 1)
  redis.call('SADD', keys[2], args[1])
  local n = total(keys[1])
  if n == 1 then
    announce(keys[3], args[1], presence_frame(args[1], true), args[3])
  end
  return n
end)

--[[ chat_conn_close: a connection of the user closed on a node.
KEYS: 1 pres(user), 2 node users set, 3 convs(user), 4 user hash
ARGV: 1 user id, 2 node, 3 global presence channel, 4 now (RFC 3339)
A close without a matching open (the node was reaped meanwhile) changes nothing.
Returns the user's open connections across the cluster, after this one. ]]
redis.register_function('chat_conn_close', function(keys, args)
  local n = redis.call('HINCRBY', keys[1], args[2], -1)
  if n <= 0 then
    redis.call('HDEL', keys[1], args[2])
    redis.call('SREM', keys[2], args[1])
  end
  if n == 0 then
    maybe_offline(keys[1], keys[3], keys[4], args[1], args[4], args[3])
  end
  return total(keys[1])
end)

--[[ chat_conn_drop: the node has no connection of the user any more, whatever its
count says (a chat_conn_close was lost while Redis was unreachable).
KEYS: 1 pres(user), 2 node users set, 3 convs(user), 4 user hash
ARGV: 1 user id, 2 node, 3 global presence channel, 4 now (RFC 3339)
Drops the node's field; goes offline (announced) if it was the last. Idempotent.
Returns the user's open connections across the cluster. ]]
redis.register_function('chat_conn_drop', function(keys, args)
  redis.call('SREM', keys[2], args[1])
  if redis.call('HDEL', keys[1], args[2]) == 1 then
    maybe_offline(keys[1], keys[3], keys[4], args[1], args[4], args[3])
  end
  return total(keys[1])
end)

--[[ chat_heartbeat: the node is alive for ttl more seconds.
KEYS: 1 node alive key, 2 chat:nodes
ARGV: 1 node, 2 ttl seconds, 3 now (ms) ]]
redis.register_function('chat_heartbeat', function(keys, args)
  redis.call('SET', keys[1], args[3], 'EX', args[2])
  redis.call('ZADD', keys[2], args[3], args[1])
  return 1
end)

--[[ chat_reap_batch: closes a dead node's connections of up to `batch` users.
KEYS: 1 node users set
ARGV: 1 node, 2 global presence channel, 3 now (RFC 3339), 4 batch size
Each user popped from the set loses the node's field of its pres hash, and goes
offline (announced) when that was the last. Returns how many users are left. ]]
redis.register_function('chat_reap_batch', function(keys, args)
  local node, global, now = args[1], args[2], args[3]
  local users = redis.call('SPOP', keys[1], tonumber(args[4]) or 100)
  for _, user in ipairs(users) do
    local pres = 'chat:{u:' .. user .. '}:pres'
    if redis.call('HDEL', pres, node) == 1 then
      maybe_offline(pres, 'chat:{u:' .. user .. '}:convs', 'chat:user:' .. user, user, now, global)
    end
  end
  return redis.call('SCARD', keys[1])
end)

--[[ Cluster mode. On Redis Cluster a user's presence hash and conversation index share
the user's slot, but the node's set, the user hash and the partners' channels do not:
these functions do the slot-local part (the count and the transition, decided
atomically as above) and return the partners to tell; the engine then updates the
node's set and the user hash and publishes (SPUBLISH to each partner's channel,
PUBLISH on the global channel) itself. ]]

--[[ chat_pres_open: KEYS 1 pres(user), 2 convs(user); ARGV 1 node.
Returns {open connections after this one, partners (only when it went online)}. ]]
redis.register_function('chat_pres_open', function(keys, args)
  redis.call('HINCRBY', keys[1], args[1], 1)
  local n = total(keys[1])
  if n == 1 then
    return {n, redis.call('ZRANGE', keys[2], 0, -1)}
  end
  return {n, {}}
end)

--[[ chat_pres_close: KEYS 1 pres(user), 2 convs(user); ARGV 1 node.
Returns {left (1 when the node has no connection of the user any more), offline (1
when the user went offline), partners (only when offline)}. A close without a
matching open changes nothing. ]]
redis.register_function('chat_pres_close', function(keys, args)
  local n = redis.call('HINCRBY', keys[1], args[1], -1)
  local left = 0
  if n <= 0 then
    redis.call('HDEL', keys[1], args[1])
    left = 1
  end
  if n == 0 and redis.call('HLEN', keys[1]) == 0 then
    return {left, 1, redis.call('ZRANGE', keys[2], 0, -1)}
  end
  return {left, 0, {}}
end)

--[[ chat_pres_drop: a dead node's connections of one user are gone.
KEYS 1 pres(user), 2 convs(user); ARGV 1 node.
Returns {offline (1 when the user went offline), partners (only when offline)}. ]]
redis.register_function('chat_pres_drop', function(keys, args)
  if redis.call('HDEL', keys[1], args[1]) == 1 and redis.call('HLEN', keys[1]) == 0 then
    return {1, redis.call('ZRANGE', keys[2], 0, -1)}
  end
  return {0, {}}
end)
