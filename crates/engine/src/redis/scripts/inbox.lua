--[[
inbox.lua: the first part of the chat library, which registers nothing. The library is
one Redis Functions library named chat: redis/functions/mod.rs loads inbox.lua,
send.lua, receipts.lua, presence.lua and rooms.lua, in that order, and each other file
has its Rust module beside it (redis/functions/<file>.rs) holding its functions' names,
keys, arguments and reply parsing. This file holds what they share: inbox appends and
their live publish.

Every registered function opens by naming its KEYS and ARGV as locals, the same names
in the same order as its Rust module lists them (functions/tests.rs checks both
sides); nothing else reads KEYS or ARGV. Every numeric argument 0 means "unlimited".
Every function replies with a fixed number of values.

Keys: crates/engine/src/redis/keys.rs names and describes each (a few are built here
from user ids, for users a function discovers; keys.rs's lua_builds_the_same_keys test
keeps both in step). On a single Redis, chat_send does whole sends, a batch of them in
one call, and chat_read a whole read receipt. On Redis Cluster the conversation and the
two inboxes live in different slots: chat_conv_append, then chat_inbox_append for each
participant (concurrently); likewise chat_read_marker then two chat_inbox_append. Every
cluster-mode function touches the keys of one slot only.

The node builds every JSON text it can (the events come from the protocol crate);
where only this library knows an id (a new message's, an inbox entry's, a read
marker's, a dead node's users) it splices the id between bytes the node passed, and
the engine's lua_shapes tests compare what it wrote with the protocol crate's bytes.
]]

-- Whether the user of presence hash `pres` has connections on a node other than
-- `node`. With `node` '' (the caller does not deliver locally): always true.
-- A connection counts from before it reads its inbox (it subscribes, then counts
-- itself, then recovers), so one not yet counted finds the event in its inbox.
local function elsewhere(pres, node)
  if node == '' then
    return true
  end
  for _, n in ipairs(redis.call('HKEYS', pres)) do
    if n ~= node then
      return true
    end
  end
  return false
end

-- The inbox options of a call: {max_len, ttl, head_ttl, convs_max} (strings;
-- head_ttl nil without an inbox ttl; convs_max: conversations kept in a user's index,
-- nil or 0 = unlimited).
local function inbox_opts(max_len, ttl, convs_max)
  local o = {max_len = max_len, ttl = ttl, convs_max = tonumber(convs_max) or 0}
  local secs = tonumber(ttl) or 0
  if secs > 0 then
    o.head_ttl = string.format('%d', math.max(1, math.floor(secs / 64)))
  end
  return o
end

-- Moves the inbox's head key (a plain string: the newest id) to `id`, the entry just
-- appended, and returns the previous head: the id before `id`. The head key expires
-- after ttl/64; when it is missing (a new inbox, or the last refresh is that old) it
-- is made again from the stream, and the inbox's expiry is refreshed with it: an idle
-- inbox lives between 63/64 and all of its ttl after its last append, for one EXPIRE
-- per ttl/64 instead of one per append.
local function move_head(inbox, head, id, o)
  local prev = redis.call('SET', head, id, 'GET', 'KEEPTTL')
  if prev then
    return prev
  end
  if o.head_ttl then
    redis.call('EXPIRE', head, o.head_ttl)
    redis.call('EXPIRE', inbox, o.ttl)
  end
  local last = redis.call('XREVRANGE', inbox, '+', '-', 'COUNT', 2)
  if #last > 1 then
    return last[2][1]
  end
  return '0-0'
end

-- An event reaches a user's inbox in up to three steps, each named for what it does
-- (a function appending a message does all three, in this order):
--   local id, prev = inbox_add(inbox, head, kind, entry, o)
--   index_conversation(convs, peer, score, o)         (messages only)
--   publish_entry(ch, id, prev, trace, event)         (unless the caller delivers it)

-- Appends an entry of `kind` to a user's inbox (`entry`: its stored form, see
-- message_entry and read_entry) and moves the inbox's head. o: inbox_opts.
-- Returns the new entry id and the previous one ('0-0' for the first).
local function inbox_add(inbox, head, kind, entry, o)
  local id
  if o.max_len ~= '0' and o.max_len ~= '' then
    id = redis.call('XADD', inbox, 'MAXLEN', '~', o.max_len, '*', kind, entry)
  else
    id = redis.call('XADD', inbox, '*', kind, entry)
  end
  return id, move_head(inbox, head, id, o)
end

-- Puts the conversation with `peer` first in a user's conversation index `convs`, at
-- `score` (the message's ms). A new peer may take the index over its bound
-- (o.convs_max): the oldest conversations go.
local function index_conversation(convs, peer, score, o)
  if redis.call('ZADD', convs, score, peer) == 1 and o.convs_max > 0
      and redis.call('ZCARD', convs) > o.convs_max then
    redis.call('ZREMRANGEBYRANK', convs, 0, -(o.convs_max + 1))
  end
end

-- Publishes inbox entry `id` (after `prev`) live on the user's channel `ch`: the
-- payload (redis/payload.rs: '<id> <prev> [t=<trace> ]<event>') carries the entry's id
-- and the previous one, so a node sees a gap; the stream itself needs no link (its
-- entries are in order: the node reading it knows each entry's predecessor). trace: a
-- W3C traceparent carried only in the live payload ('' = none); event: the event JSON.
local function publish_entry(ch, id, prev, trace, event)
  if trace ~= '' then
    redis.call('SPUBLISH', ch, id .. ' ' .. prev .. ' t=' .. trace .. ' ' .. event)
  else
    redis.call('SPUBLISH', ch, id .. ' ' .. prev .. ' ' .. event)
  end
end

-- An inbox entry is one field holding the event without what the inbox's owner
-- implies (the node rebuilds the JSON when it reads the inbox: redis/inbox.rs):
--   m = '<d><other> <message id> <sent_at> <body>'  a message
--   r = '<d><other> <id read up to>'                a read receipt
-- where <other> is the conversation's other participant and <d> is '>' when the owner
-- sent (or read) and '<' when the other participant did.
local function message_entry(mid, other, dir, body, sent_at)
  return dir .. other .. ' ' .. mid .. ' ' .. sent_at .. ' ' .. body
end

local function read_entry(up_to, other, dir)
  return dir .. other .. ' ' .. up_to
end

-- The entry among the inbox's newest `window` that holds message `mid`: its id and
-- the id before it, or nil.
local function inbox_find(inbox, mid, window)
  local entries = redis.call('XREVRANGE', inbox, '+', '-', 'COUNT', window + 1)
  for i = 1, math.min(window, #entries) do
    local fields = entries[i][2]
    if fields[1] == 'm' and string.match(fields[2], '^%S+ (%S+)') == mid then
      local prev = '0-0'
      if entries[i + 1] then
        prev = entries[i + 1][1]
      end
      return entries[i][1], prev
    end
  end
  return nil
end
