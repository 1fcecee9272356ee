#!lua name=chat
--[[
The chat library: slot-local building blocks for storing and delivering messages.

Key layout (see crates/engine/src/redis/keys.rs):
  chat:{c:<a>:<b>}:msgs              conversation stream (fields f = sender, b, s, n =
                                     nonce or '', q = the message's sequence number)
  chat:{c:<a>:<b>}:meta              hash: s = message count, last = last id,
                                     lm = last message JSON, r:<user> = read marker
                                     (sequence number), ru:<user> = its message id
  chat:{c:<a>:<b>}:n:<ttl>:<window>  nonces of one window of ttl seconds (a hash,
                                     see nonce_place)
  chat:{u:<id>}:inbox                inbox stream (fields p = previous id, then the
                                     event without what the owner implies: see
                                     message_fields)
  chat:{u:<id>}:head                 the inbox's newest id (expires with the inbox)
  chat:{u:<id>}:convs                sorted set: peer id -> last message ms
  chat:{u:<id>}:ch                   sharded pub/sub channel
  chat:{u:<id>}:pres                 presence hash: node -> open connections (read
                                     here only, written by presence.lua)

On a single Redis, chat_send does whole sends, a batch of them, in one call. On Redis Cluster the
conversation and the two inboxes live in different slots: chat_conv_append, then
chat_inbox_append for each participant (concurrently); likewise chat_read is
chat_read_marker then two chat_inbox_append. Every cluster-mode function touches the
keys of one slot only. Every numeric argument 0 means "unlimited".
Unread = s - r:<user>: the sender's marker moves to each message it sends, and
chat_read moves a reader's marker forward, so the count is exact and never scanned.
Presence functions are a separate library (presence.lua).
]]

-- The message JSON, fields in a fixed order (as serde writes chat_protocol::Message).
-- Only for a retried nonce whose original is rebuilt; a new message's JSON is
-- prebuilt by the node (see message_from_tail).
local function message_json(id, conversation, from, to, body, sent_at)
  return '{"id":' .. cjson.encode(id)
    .. ',"conversation":' .. cjson.encode(conversation)
    .. ',"from":' .. cjson.encode(from)
    .. ',"to":' .. cjson.encode(to)
    .. ',"body":' .. cjson.encode(body)
    .. ',"sent_at":' .. cjson.encode(sent_at) .. '}'
end

-- A new message's JSON: the node serialized the message with an empty id and passes
-- what follows the id (`tail`); stream ids need no escaping.
local function message_from_tail(id, tail)
  return '{"id":"' .. id .. '"' .. tail
end

-- The inbox event JSON of a message (without cursor).
local function message_event(msg)
  return '{"type":"message","message":' .. msg .. '}'
end

-- The message a nonce named (`stored`: its id). If retention trimmed it from the
-- conversation, it is rebuilt from the retried request, which carries the same body.
-- a: {conversation, from, to, body, sent_at}
local function stored_message(msgs, stored, a)
  local found = redis.call('XRANGE', msgs, stored, stored)
  if #found == 0 then
    return message_json(stored, a.conversation, a.from, a.to, a.body, a.sent_at)
  end
  local f = {}
  local fields = found[1][2]
  for i = 1, #fields, 2 do
    f[fields[i]] = fields[i + 1]
  end
  local to = a.to
  if f.f ~= a.from then
    to = a.from
  end
  return message_json(stored, a.conversation, f.f, to, f.b, f.s)
end

-- Nonces live in hashes, one per conversation and window of `ttl` seconds of Redis's
-- clock (`now`, seconds): chat:{c:<a>:<b>}:n:<ttl>:<window>, field = '<' or '>' (the
-- sender is the conversation's first or second participant) .. nonce, value = the
-- message id. Each hash expires two windows after its own starts, so a nonce is
-- remembered at least `ttl` and less than 2 * `ttl` seconds, with no key per message.
-- Returns the current and the previous window's keys, their expiry and the field.
local function nonce_place(msgs, a, now)
  local ttl = tonumber(a.nonce_ttl) or 0
  local w = 0
  if ttl > 0 then
    w = math.floor(now / ttl)
  end
  local base = string.sub(msgs, 1, -5) .. 'n:' .. a.nonce_ttl .. ':'
  local side = '>'
  if string.sub(a.conversation, 4, 3 + #a.from + 1) == a.from .. ':' then
    side = '<'
  end
  local expire_at = nil
  if ttl > 0 then
    expire_at = string.format('%d', (w + 2) * ttl)
  end
  return base .. string.format('%d', w), base .. string.format('%d', w - 1), expire_at,
    side .. a.nonce
end

-- Appends a message to a conversation unless its nonce was seen. Every entry has the
-- same fields (n is '' without a nonce), so the stream stores their names once; the
-- recipient is not stored (it is the conversation's other participant).
-- msgs, meta: keys; a: {conversation, from, to, body, sent_at, nonce ('' = none),
-- nonce_ttl, tail}; o: {max_len, min_id (nil = no age limit), now (Redis's clock, s)}
-- (strings, as they came in: Redis formats every Lua number passed to it again).
-- Returns dup (0 or 1), message JSON, and the new id (nil for a duplicate).
local function conv_append(msgs, meta, a, o)
  local nonce_key, field, expire_at
  if a.nonce ~= '' then
    local previous
    nonce_key, previous, expire_at, field = nonce_place(msgs, a, o.now)
    local stored = redis.call('HGET', nonce_key, field)
    if not stored and expire_at then
      stored = redis.call('HGET', previous, field)
    end
    if stored then
      return 1, stored_message(msgs, stored, a)
    end
  end
  local seq = tostring(redis.call('HINCRBY', meta, 's', 1))
  local id
  local trim = o.max_len ~= '0' and o.max_len ~= ''
  if trim then
    id = redis.call('XADD', msgs, 'MAXLEN', '~', o.max_len, '*', 'f', a.from,
      'b', a.body, 's', a.sent_at, 'n', a.nonce, 'q', seq)
  elseif o.min_id then
    id = redis.call('XADD', msgs, 'MINID', '~', o.min_id, '*', 'f', a.from,
      'b', a.body, 's', a.sent_at, 'n', a.nonce, 'q', seq)
  else
    id = redis.call('XADD', msgs, '*', 'f', a.from, 'b', a.body, 's', a.sent_at,
      'n', a.nonce, 'q', seq)
  end
  if trim and o.min_id then
    redis.call('XTRIM', msgs, 'MINID', '~', o.min_id)
  end
  local msg = message_from_tail(id, a.tail)
  -- One's own messages are never unread: the sender has read up to this one.
  redis.call('HSET', meta, 'last', id, 'lm', msg, 'r:' .. a.from, seq, 'ru:' .. a.from, id)
  if nonce_key then
    redis.call('HSET', nonce_key, field, id)
    if expire_at then
      redis.call('EXPIREAT', nonce_key, expire_at)
    end
  end
  return 0, msg, id
end

-- Redis's clock in seconds (one TIME per call).
local function now_secs()
  return tonumber(redis.call('TIME')[1])
end

-- The oldest id that history_max_age_secs keeps, from the node's clock (ms), or nil.
local function min_id(max_age, now_ms)
  local age = tonumber(max_age) or 0
  if age <= 0 then
    return nil
  end
  local now = tonumber(now_ms)
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return string.format('%d', now - age * 1000)
end

-- Whether an inbox append must refresh the inbox's expiry. Refreshing on every append
-- costs a command per event; refreshing when the append starts a new slice of ttl/64
-- (or the inbox is new) keeps an idle inbox between 63/64 and all of `ttl` seconds.
local function expiry_due(prev, id, ttl)
  if prev == '0-0' then
    return true
  end
  local step = math.max(1, math.floor(ttl * 1000 / 64))
  local before = tonumber(string.match(prev, '^(%d+)')) or 0
  local now = tonumber(string.match(id, '^(%d+)')) or 0
  return math.floor(before / step) ~= math.floor(now / step)
end

-- Whether the user of presence hash `pres` has connections on a node other than
-- `node`. With `node` '' or nil (the caller does not deliver locally): always true.
-- A connection counts from before it reads its inbox (it subscribes, then counts
-- itself, then recovers), so one not yet counted finds the event in its inbox.
local function elsewhere(pres, node)
  if node == nil or node == '' then
    return true
  end
  for _, n in ipairs(redis.call('HKEYS', pres)) do
    if n ~= node then
      return true
    end
  end
  return false
end

-- The inbox's newest id: kept in the head key (a plain string, set with every append
-- and expiring with the inbox), read from the stream only when the head key is missing.
local function inbox_head(inbox, head)
  local h = redis.call('GET', head)
  if h then
    return h
  end
  local last = redis.call('XREVRANGE', inbox, '+', '-', 'COUNT', 1)
  if #last > 0 then
    return last[1][1]
  end
  return '0-0'
end

-- Appends an event to a user's inbox, indexes the conversation and publishes it live.
-- u: the user's keys {inbox, head, convs, ch} (convs nil: not a message, leave the
-- index alone); event: the event JSON, published live; stored: the entry's fields
-- after p (see inbox_fields); peer: the other participant; score: message ms.
-- o: {inbox_max_len, inbox_ttl} (strings).
-- trace: a W3C traceparent carried only in the live payload ('' or nil = none).
-- publish false: no live publish (the calling node delivers to the user's
-- connections itself, and the user has none elsewhere).
-- Returns the new entry id and the previous one ('0-0' for the first).
local function inbox_append(u, event, stored, peer, score, o, trace, publish)
  local inbox, head = u.inbox, u.head
  local prev = inbox_head(inbox, head)
  local id
  if o.inbox_max_len ~= '0' and o.inbox_max_len ~= '' then
    id = redis.call('XADD', inbox, 'MAXLEN', '~', o.inbox_max_len, '*', 'p', prev, unpack(stored))
  else
    id = redis.call('XADD', inbox, '*', 'p', prev, unpack(stored))
  end
  -- The head key keeps the inbox's expiry: both are given the same one together.
  redis.call('SET', head, id, 'KEEPTTL')
  local ttl_secs = tonumber(o.inbox_ttl) or 0
  if ttl_secs > 0 and expiry_due(prev, id, ttl_secs) then
    redis.call('EXPIRE', inbox, o.inbox_ttl)
    redis.call('EXPIRE', head, o.inbox_ttl)
  end
  if u.convs then
    redis.call('ZADD', u.convs, score, peer)
  end
  if publish == false then
    return id, prev
  end
  if trace and trace ~= '' then
    redis.call('SPUBLISH', u.ch, id .. ' ' .. prev .. ' t=' .. trace .. ' ' .. event)
  else
    redis.call('SPUBLISH', u.ch, id .. ' ' .. prev .. ' ' .. event)
  end
  return id, prev
end

-- An inbox entry stores the event without what the inbox's owner implies (the node
-- rebuilds the JSON when it reads the inbox, chat-engine's redis/inbox.rs):
--   a message: m = message id, o = the other participant, d = '>' sent / '<' received,
--              b = body, s = sent_at
--   a read receipt: r = the id read up to, o = the other participant,
--              d = '>' the owner read / '<' the other participant read
local function message_fields(mid, other, dir, body, sent_at)
  return {'m', mid, 'o', other, 'd', dir, 'b', body, 's', sent_at}
end

local function read_fields(up_to, other, dir)
  return {'r', up_to, 'o', other, 'd', dir}
end

-- The entry among the inbox's newest `window` that holds message `mid` (id, prev),
-- or nil.
local function inbox_find(inbox, mid, window)
  for _, entry in ipairs(redis.call('XREVRANGE', inbox, '+', '-', 'COUNT', window)) do
    local fields = entry[2]
    local prev = nil
    local found = false
    for i = 1, #fields, 2 do
      if fields[i] == 'p' then
        prev = fields[i + 1]
      elseif fields[i] == 'm' and fields[i + 1] == mid then
        found = true
      end
    end
    if found then
      return entry[1], prev
    end
  end
  return nil
end

-- Moves `reader`'s marker in a conversation to the newest message at or before
-- `up_to`, only forward. Returns the marker's new message id, or nil.
local function read_marker(msgs, meta, reader, up_to)
  local found = redis.call('XREVRANGE', msgs, up_to, '-', 'COUNT', 1)
  if #found == 0 then
    return nil
  end
  local id, fields = found[1][1], found[1][2]
  local seq = 0
  for i = 1, #fields, 2 do
    if fields[i] == 'q' then
      seq = tonumber(fields[i + 1]) or 0
    end
  end
  local marker = tonumber(redis.call('HGET', meta, 'r:' .. reader)) or 0
  if seq <= marker then
    return nil
  end
  redis.call('HSET', meta, 'r:' .. reader, seq, 'ru:' .. reader, id)
  return id
end

local function read_event(conversation, reader, id)
  return '{"type":"read","conversation":' .. cjson.encode(conversation)
    .. ',"by":' .. cjson.encode(reader) .. ',"up_to":' .. cjson.encode(id) .. '}'
end

-- The history options every send shares, from ARGV starting at `first`:
-- history_max_len, history_max_age_secs, now_ms; and Redis's clock for the nonces.
local function conv_opts(args, first)
  return {
    max_len = args[first], min_id = min_id(args[first + 1], args[first + 2]),
    now = now_secs(),
  }
end

-- One message's arguments from ARGV starting at `first`: conversation, from, to, body,
-- sent_at, nonce ('' = none), nonce_ttl, tail (the message JSON after its id).
local function conv_args(args, first)
  return {
    conversation = args[first], from = args[first + 1], to = args[first + 2],
    body = args[first + 3], sent_at = args[first + 4], nonce = args[first + 5],
    nonce_ttl = args[first + 6], tail = args[first + 7],
  }
end

--[[ chat_send: a batch of 1:1 sends on a single Redis (every key in one slot set), in
order, in one atomic call. The node batches the sends that arrive while its previous
call is in flight.
KEYS: 11 per message, the message's keys starting at 11 * (i - 1) + 1:
      1 msgs, 2 meta, 3 inbox(from), 4 head(from), 5 convs(from), 6 ch(from),
      7 pres(from), 8 inbox(to), 9 head(to), 10 convs(to), 11 ch(to)
ARGV: 1 history_max_len, 2 history_max_age_secs, 3 now_ms (the node's clock, for the
      age limit), 4 inbox_max_len, 5 inbox_ttl_secs, then 10 per message starting at
      10 * (i - 1) + 6: conversation, from, to, body, sent_at, nonce ('' = none),
      nonce_ttl, tail (the message JSON after its id), traceparent ('' = none),
      sending node ('' = none)
With a sending node, the sender's own live event is published only if the sender
has connections on another node: the sending node delivers it to its own.
Returns 4 values per message: dup (0 or 1), message JSON, the sender's new inbox
entry id and the one before it ('' and '' for a duplicate: nothing was written or
published). ]]
redis.register_function('chat_send', function(keys, args)
  local o = conv_opts(args, 1)
  local io = {inbox_max_len = args[4], inbox_ttl = args[5]}
  local out = {}
  local n = (#args - 5) / 10
  for i = 0, n - 1 do
    local k, j = 11 * i, 10 * i + 6
    local a = conv_args(args, j)
    local trace, node = args[j + 8], args[j + 9]
    local dup, msg, mid = conv_append(keys[k + 1], keys[k + 2], a, o)
    local r = 4 * i
    if dup == 1 then
      out[r + 1], out[r + 2], out[r + 3], out[r + 4] = 1, msg, '', ''
    else
      local event = message_event(msg)
      local score = string.match(mid, '^(%d+)')
      local publish = node == '' or elsewhere(keys[k + 7], node)
      local sender = {inbox = keys[k + 3], head = keys[k + 4], convs = keys[k + 5], ch = keys[k + 6]}
      local id, prev = inbox_append(sender, event,
        message_fields(mid, a.to, '>', a.body, a.sent_at), a.to, score, io, trace, publish)
      local recipient = {inbox = keys[k + 8], head = keys[k + 9], convs = keys[k + 10],
        ch = keys[k + 11]}
      inbox_append(recipient, event, message_fields(mid, a.from, '<', a.body, a.sent_at),
        a.from, score, io, trace, true)
      out[r + 1], out[r + 2], out[r + 3], out[r + 4] = 0, msg, id, prev
    end
  end
  return out
end)

--[[ chat_conv_append: the conversation half of a send (cluster mode).
KEYS: 1 msgs, 2 meta
ARGV: 1 history_max_len, 2 history_max_age_secs, 3 now_ms, 4 conversation, 5 from,
      6 to, 7 body, 8 sent_at, 9 nonce ('' = none), 10 nonce_ttl, 11 tail
Returns {dup, message JSON}. ]]
redis.register_function('chat_conv_append', function(keys, args)
  local dup, msg = conv_append(keys[1], keys[2], conv_args(args, 4), conv_opts(args, 1))
  return {dup, msg}
end)

--[[ chat_inbox_append: one inbox append with its live publish (cluster mode).
KEYS: 1 inbox, 2 head, 3 convs, 4 ch, 5 pres (all of one user)
ARGV: 1 event JSON (published), 2 kind ('m' a message: the conversation index is
      updated; 'r' a read receipt), 3 message id or the id read up to, 4 the other
      participant, 5 direction ('>' the user sent / read, '<' the other one did),
      6 body, 7 sent_at (messages; '' otherwise), 8 score (message ms),
      9 inbox_max_len, 10 inbox_ttl_secs, 11 window, 12 traceparent ('' = none),
      13 calling node that delivers to the user's connections itself ('' = none:
      publish; otherwise publish only if the user has connections elsewhere)
A message is not appended again when one of the inbox's newest `window` entries
already holds it (a retried send, or fred writing the call again after a reconnect).
Returns {id, prev, appended (0 or 1)}. ]]
redis.register_function('chat_inbox_append', function(keys, args)
  local kind, ref, other, dir = args[2], args[3], args[4], args[5]
  local u = {inbox = keys[1], head = keys[2], convs = keys[3], ch = keys[4]}
  local stored
  if kind == 'm' then
    local id, prev = inbox_find(keys[1], ref, tonumber(args[11]) or 16)
    if id then
      return {id, prev, 0}
    end
    stored = message_fields(ref, other, dir, args[6], args[7])
  else
    u.convs = nil
    stored = read_fields(ref, other, dir)
  end
  local node = args[13]
  local publish = node == '' or elsewhere(keys[5], node)
  local id, prev = inbox_append(u, args[1], stored, other, args[8],
    {inbox_max_len = args[9], inbox_ttl = args[10]}, args[12], publish)
  return {id, prev, 1}
end)

--[[ chat_read_marker: the conversation half of chat_read (cluster mode).
KEYS: 1 msgs, 2 meta
ARGV: 1 conversation, 2 reader, 3 up_to (a message id)
Moves the marker like chat_read. Returns {marker id, read event JSON}, or nil when
nothing moved; the caller then appends the event to both inboxes
(chat_inbox_append with kind 'r'). ]]
redis.register_function('chat_read_marker', function(keys, args)
  local id = read_marker(keys[1], keys[2], args[2], args[3])
  if not id then
    return false
  end
  return {id, read_event(args[1], args[2], id)}
end)

--[[ chat_read: moves a reader's read marker forward and tells both participants.
KEYS: 1 msgs, 2 meta (the conversation), 3 inbox(reader), 4 head(reader),
      5 ch(reader), 6 inbox(peer), 7 head(peer), 8 ch(peer)
ARGV: 1 conversation, 2 reader, 3 up_to (a message id), 4 inbox_max_len,
      5 inbox_ttl_secs, 6 peer
The marker moves to the newest message at or before up_to (so it is clamped to the
last message) if that message is newer than the marker; then the event
{"type":"read","conversation","by","up_to"} is appended to both inboxes and published.
Returns the new marker's id, or nil when nothing moved. ]]
redis.register_function('chat_read', function(keys, args)
  local reader, peer = args[2], args[6]
  local id = read_marker(keys[1], keys[2], reader, args[3])
  if not id then
    return false
  end
  local event = read_event(args[1], reader, id)
  local io = {inbox_max_len = args[4], inbox_ttl = args[5]}
  inbox_append({inbox = keys[3], head = keys[4], ch = keys[5]}, event,
    read_fields(id, peer, '>'), nil, nil, io, '', true)
  inbox_append({inbox = keys[6], head = keys[7], ch = keys[8]}, event,
    read_fields(id, reader, '<'), nil, nil, io, '', true)
  return id
end)
