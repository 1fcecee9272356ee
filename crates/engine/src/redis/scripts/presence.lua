--[[ presence.lua: who is online, across the cluster, and the transitions'
announcements.

A user is online while their pres hash is not empty. On the transitions 0 -> 1 and
1 -> 0 (of the whole hash) the presence frame is published to every partner's
channel (the ephemeral payload) and on the global presence channel (plain PUBLISH,
the presence payload), within the same atomic call, so two nodes can never both
announce (or both miss) a transition. The node passes both payloads ready-made
(redis/payload.rs); only chat_reap_batch, whose users it learns here, splices each
user id between bytes the node passed. Keys of partners and of a dead node's users
are built here from their ids. ]]

-- The partners told of a transition: the `limit` most recent ones of the index
-- `convs` (limit '0' or missing: all), so a transition's work is bounded whatever
-- the number of partners.
local function partners(convs, limit)
  local n = tonumber(limit) or 0
  if n > 0 then
    return redis.call('ZREVRANGE', convs, 0, n - 1)
  end
  return redis.call('ZRANGE', convs, 0, -1)
end

-- Publishes a transition: `partner` to each of the most recent `limit` partners'
-- channels, `global` on the global channel `channel`.
local function announce(convs, partner, channel, global, limit)
  for _, peer in ipairs(partners(convs, limit)) do
    redis.call('SPUBLISH', 'chat:{u:' .. peer .. '}:ch', partner)
  end
  redis.call('PUBLISH', channel, global)
end

-- The user's open connections across the cluster.
local function total(pres)
  local n = 0
  for _, v in ipairs(redis.call('HVALS', pres)) do
    n = n + (tonumber(v) or 0)
  end
  return n
end

-- After the node's field of a user went away: goes offline if it was the last
-- (`seen` = now, the offline payloads published).
local function maybe_offline(pres, convs, user_hash, now, partner, channel, global, limit)
  if redis.call('HLEN', pres) == 0 then
    redis.call('HSET', user_hash, 'seen', now)
    announce(convs, partner, channel, global, limit)
  end
end

--[[ chat_conn_open: a connection of the user opened on a node.
KEYS: 1 pres(user), 2 node users set, 3 convs(user)
ARGV: 1 user id, 2 node, 3 global presence channel, 4 the online partner payload,
      5 the online global payload, 6 partners told at most (0 = all)
Returns the user's open connections across the cluster, after this one. ]]
redis.register_function('chat_conn_open', function(keys, args)
  redis.call('HINCRBY', keys[1], args[2], 1)
  redis.call('SADD', keys[2], args[1])
  local n = total(keys[1])
  if n == 1 then
    announce(keys[3], args[4], args[3], args[5], args[6])
  end
  return n
end)

--[[ chat_conn_close: a connection of the user closed on a node.
KEYS: 1 pres(user), 2 node users set, 3 convs(user), 4 user hash
ARGV: 1 user id, 2 node, 3 global presence channel, 4 now (RFC 3339), 5 the offline
      partner payload, 6 the offline global payload, 7 partners told at most (0 = all)
A close without a matching open (the node was reaped meanwhile) changes nothing.
Returns the user's open connections across the cluster, after this one. ]]
redis.register_function('chat_conn_close', function(keys, args)
  local n = redis.call('HINCRBY', keys[1], args[2], -1)
  if n <= 0 then
    redis.call('HDEL', keys[1], args[2])
    redis.call('SREM', keys[2], args[1])
  end
  if n == 0 then
    maybe_offline(keys[1], keys[3], keys[4], args[4], args[5], args[3], args[6], args[7])
  end
  return total(keys[1])
end)

--[[ chat_conn_drop: the node has no connection of the user any more, whatever its
count says (a chat_conn_close was lost while Redis was unreachable).
KEYS and ARGV: as chat_conn_close.
Drops the node's field; goes offline (announced) if it was the last. Idempotent.
Returns the user's open connections across the cluster. ]]
redis.register_function('chat_conn_drop', function(keys, args)
  redis.call('SREM', keys[2], args[1])
  if redis.call('HDEL', keys[1], args[2]) == 1 then
    maybe_offline(keys[1], keys[3], keys[4], args[4], args[5], args[3], args[6], args[7])
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
ARGV: 1 node, 2 global presence channel, 3 now (RFC 3339), 4 batch size, 5 the
      partner payload's bytes before the user id, 6 the global payload's bytes
      between the user id and the frame's user id, 7 the bytes after the frame's
      user id (see redis/payload.rs, ReapTemplate), 8 partners told at most (0 = all)
Each user popped from the set loses the node's field of its pres hash, and goes
offline (announced) when that was the last. Returns how many users are left. ]]
redis.register_function('chat_reap_batch', function(keys, args)
  local node, channel, now = args[1], args[2], args[3]
  local before, between, after = args[5], args[6], args[7]
  local users = redis.call('SPOP', keys[1], tonumber(args[4]) or 100)
  for _, user in ipairs(users) do
    local pres = 'chat:{u:' .. user .. '}:pres'
    if redis.call('HDEL', pres, node) == 1 then
      maybe_offline(pres, 'chat:{u:' .. user .. '}:convs', 'chat:user:' .. user, now,
        before .. user .. after, channel, user .. between .. user .. after, args[8])
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

--[[ chat_pres_open: KEYS 1 pres(user), 2 convs(user); ARGV 1 node, 2 partners returned
at most (the most recent; 0 = all).
Returns {open connections after this one, partners (only when it went online)}. ]]
redis.register_function('chat_pres_open', function(keys, args)
  redis.call('HINCRBY', keys[1], args[1], 1)
  local n = total(keys[1])
  if n == 1 then
    return {n, partners(keys[2], args[2])}
  end
  return {n, {}}
end)

--[[ chat_pres_close: KEYS 1 pres(user), 2 convs(user); ARGV 1 node, 2 as chat_pres_open.
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
    return {left, 1, partners(keys[2], args[2])}
  end
  return {left, 0, {}}
end)

--[[ chat_pres_drop: a dead node's connections of one user are gone.
KEYS 1 pres(user), 2 convs(user); ARGV 1 node, 2 as chat_pres_open.
Returns {offline (1 when the user went offline), partners (only when offline)}. ]]
redis.register_function('chat_pres_drop', function(keys, args)
  if redis.call('HDEL', keys[1], args[1]) == 1 and redis.call('HLEN', keys[1]) == 0 then
    return {1, partners(keys[2], args[2])}
  end
  return {0, {}}
end)
