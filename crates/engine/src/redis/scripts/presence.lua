--[[ presence.lua: who is online, across the cluster, and the transitions'
announcements.

A user is online while their pres hash is not empty. On the transitions 0 -> 1 and
1 -> 0 (of the whole hash) the presence frame is published to every partner's
channel (the ephemeral payload) and on the global presence channel (plain PUBLISH,
the presence payload), within the same atomic call, so two nodes can never both
announce (or both miss) a transition. The node passes both payloads ready-made
(redis/payload.rs); only chat_reap_batch, whose users it learns here, splices each
user id between bytes the node passed. Keys of partners and of a dead node's users
are built here from their ids. Rust side: redis/functions/presence.rs. ]]

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
Returns the user's open connections across the cluster, after this one. ]]
redis.register_function('chat_conn_open', function(keys, args)
  local pres, node_users, convs = keys[1], keys[2], keys[3] -- node_users: the node's set
  local user, node = args[1], args[2]
  local channel = args[3] -- the global presence channel
  local online_partner, online_global = args[4], args[5] -- the online payloads
  local fanout = args[6] -- partners told at most (0 = all)
  redis.call('HINCRBY', pres, node, 1)
  redis.call('SADD', node_users, user)
  local n = total(pres)
  if n == 1 then
    announce(convs, online_partner, channel, online_global, fanout)
  end
  return n
end)

--[[ chat_conn_close: a connection of the user closed on a node.
A close without a matching open (the node was reaped meanwhile) changes nothing.
Returns the user's open connections across the cluster, after this one. ]]
redis.register_function('chat_conn_close', function(keys, args)
  local pres, node_users, convs, user_hash = keys[1], keys[2], keys[3], keys[4]
  local user, node = args[1], args[2]
  local channel = args[3] -- the global presence channel
  local now = args[4] -- RFC 3339: the user's seen, should they go offline
  local offline_partner, offline_global = args[5], args[6] -- the offline payloads
  local fanout = args[7] -- partners told at most (0 = all)
  local n = redis.call('HINCRBY', pres, node, -1)
  if n <= 0 then
    redis.call('HDEL', pres, node)
    redis.call('SREM', node_users, user)
  end
  if n == 0 then
    maybe_offline(pres, convs, user_hash, now, offline_partner, channel, offline_global, fanout)
  end
  return total(pres)
end)

--[[ chat_conn_drop: the node has no connection of the user any more, whatever its
count says (a chat_conn_close was lost while Redis was unreachable). Keys and
arguments as chat_conn_close's.
Drops the node's field; goes offline (announced) if it was the last. Idempotent.
Returns the user's open connections across the cluster. ]]
redis.register_function('chat_conn_drop', function(keys, args)
  local pres, node_users, convs, user_hash = keys[1], keys[2], keys[3], keys[4]
  local user, node, channel, now = args[1], args[2], args[3], args[4]
  local offline_partner, offline_global, fanout = args[5], args[6], args[7]
  redis.call('SREM', node_users, user)
  if redis.call('HDEL', pres, node) == 1 then
    maybe_offline(pres, convs, user_hash, now, offline_partner, channel, offline_global, fanout)
  end
  return total(pres)
end)

--[[ chat_heartbeat: the node is alive for ttl_secs more seconds. ]]
redis.register_function('chat_heartbeat', function(keys, args)
  local alive, nodes = keys[1], keys[2] -- the node's alive key, chat:nodes
  local node, ttl_secs, now_ms = args[1], args[2], args[3]
  redis.call('SET', alive, now_ms, 'EX', ttl_secs)
  redis.call('ZADD', nodes, now_ms, node)
  return 1
end)

--[[ chat_reap_batch: closes a dead node's connections of up to `batch` users.
Each user popped from the node's set loses the node's field of its pres hash, and goes
offline (announced) when that was the last. Returns how many users are left. ]]
redis.register_function('chat_reap_batch', function(keys, args)
  local node_users = keys[1] -- the dead node's set of users
  local node, channel, now, batch = args[1], args[2], args[3], args[4]
  -- The offline payloads around each user id (redis/payload.rs, ReapTemplate): the
  -- partner payload is before .. user .. after, the global one
  -- user .. between .. user .. after.
  local before, between, after = args[5], args[6], args[7]
  local fanout = args[8] -- partners told at most (0 = all)
  local users = redis.call('SPOP', node_users, tonumber(batch) or 100)
  for _, user in ipairs(users) do
    local pres = 'chat:{u:' .. user .. '}:pres'
    if redis.call('HDEL', pres, node) == 1 then
      maybe_offline(pres, 'chat:{u:' .. user .. '}:convs', 'chat:user:' .. user, now,
        before .. user .. after, channel, user .. between .. user .. after, fanout)
    end
  end
  return redis.call('SCARD', node_users)
end)

--[[ Cluster mode. On Redis Cluster a user's presence hash and conversation index share
the user's slot, but the node's set, the user hash and the partners' channels do not:
these functions do the slot-local part (the count and the transition, decided
atomically as above) and return the partners to tell; the engine then updates the
node's set and the user hash and publishes (SPUBLISH to each partner's channel,
PUBLISH on the global channel) itself. ]]

--[[ chat_pres_open: a connection of the user opened on a node.
Returns {open connections after this one, partners (only when it went online)}. ]]
redis.register_function('chat_pres_open', function(keys, args)
  local pres, convs = keys[1], keys[2]
  local node, fanout = args[1], args[2] -- fanout: partners returned at most (0 = all)
  redis.call('HINCRBY', pres, node, 1)
  local n = total(pres)
  if n == 1 then
    return {n, partners(convs, fanout)}
  end
  return {n, {}}
end)

--[[ chat_pres_close: a connection of the user closed on a node.
Returns {left (1 when the node has no connection of the user any more), offline (1
when the user went offline), partners (only when offline)}. A close without a
matching open changes nothing. ]]
redis.register_function('chat_pres_close', function(keys, args)
  local pres, convs = keys[1], keys[2]
  local node, fanout = args[1], args[2] -- as chat_pres_open's
  local n = redis.call('HINCRBY', pres, node, -1)
  local left = 0
  if n <= 0 then
    redis.call('HDEL', pres, node)
    left = 1
  end
  if n == 0 and redis.call('HLEN', pres) == 0 then
    return {left, 1, partners(convs, fanout)}
  end
  return {left, 0, {}}
end)

--[[ chat_pres_drop: a dead node's connections of one user are gone.
Returns {offline (1 when the user went offline), partners (only when offline)}. ]]
redis.register_function('chat_pres_drop', function(keys, args)
  local pres, convs = keys[1], keys[2]
  local node, fanout = args[1], args[2] -- as chat_pres_open's
  if redis.call('HDEL', pres, node) == 1 and redis.call('HLEN', pres) == 0 then
    return {1, partners(convs, fanout)}
  end
  return {0, {}}
end)
