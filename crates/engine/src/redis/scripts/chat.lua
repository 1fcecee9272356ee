#!lua name=chat
--[[
The chat library: slot-local building blocks for storing and delivering messages.

Key layout (see crates/engine/src/redis/keys.rs):
  chat:{c:<a>:<b>}:msgs              conversation stream (fields f, t, b, s, q, n?);
                                     q = the message's sequence number
  chat:{c:<a>:<b>}:meta              hash: s = message count, last = last id,
                                     lm = last message JSON, r:<user> = read marker
                                     (sequence number), ru:<user> = its message id
  chat:{c:<a>:<b>}:n:<from>:<nonce>  nonce key, value = the stored message's id (keys
                                     written before 2026-12 hold its JSON)
  chat:{u:<id>}:inbox                inbox stream (fields p = previous id, e = event JSON)
  chat:{u:<id>}:convs                sorted set: peer id -> last message ms
  chat:{u:<id>}:ch                   sharded pub/sub channel
  chat:{u:<id>}:pres                 presence hash: node -> open connections (read
                                     here only, written by presence.lua)

On a single Redis, chat_send does a whole send in one call. On Redis Cluster the
conversation and the two inboxes live in different slots: chat_conv_append, then
chat_inbox_append for each participant (concurrently); likewise chat_read is
chat_read_marker then two chat_inbox_append. Every cluster-mode function touches the
keys of one slot only. Every numeric argument 0 means "unlimited".
Unread = s - r:<user>: the sender's marker moves to each message it sends, and
chat_read moves a reader's marker forward, so the count is exact and never scanned.
Presence functions are a separate library (presence.lua).
]]

-- The message JSON, fields in a fixed order (as serde writes chat_protocol::Message).
local function message_json(id, conversation, from, to, body, sent_at)
  return '{"id":' .. cjson.encode(id)
    .. ',"conversation":' .. cjson.encode(conversation)
    .. ',"from":' .. cjson.encode(from)
    .. ',"to":' .. cjson.encode(to)
    .. ',"body":' .. cjson.encode(body)
    .. ',"sent_at":' .. cjson.encode(sent_at) .. '}'
end

-- The inbox event JSON of a message (without cursor).
local function message_event(msg)
  return '{"type":"message","message":' .. msg .. '}'
end

-- The message a nonce key names (its value is the message id; older keys hold the
-- message JSON itself). If retention trimmed the message from the conversation, it is
-- rebuilt from the retried request, which carries the same body.
local function stored_message(msgs, stored, a)
  if string.sub(stored, 1, 1) == '{' then
    return stored
  end
  local found = redis.call('XRANGE', msgs, stored, stored)
  if #found == 0 then
    return message_json(stored, a.conversation, a.from, a.to, a.body, a.sent_at)
  end
  local f = {}
  local fields = found[1][2]
  for i = 1, #fields, 2 do
    f[fields[i]] = fields[i + 1]
  end
  return message_json(stored, a.conversation, f.f, f.t, f.b, f.s)
end

-- Appends a message to a conversation unless its nonce was seen.
-- msgs, meta: keys; nonce_key: key or nil (no nonce).
-- a: {conversation, from, to, body, sent_at, nonce, nonce_ttl, max_len, max_age}
-- Returns dup (0 or 1), message JSON, and the new id (nil for a duplicate).
local function conv_append(msgs, meta, nonce_key, a)
  if nonce_key then
    local stored = redis.call('GET', nonce_key)
    if stored then
      return 1, stored_message(msgs, stored, a)
    end
  end
  local max_len = tonumber(a.max_len) or 0
  local max_age = tonumber(a.max_age) or 0
  local min_id = nil
  if max_age > 0 then
    local t = redis.call('TIME')
    local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    min_id = string.format('%d', now_ms - max_age * 1000)
  end
  -- Numbers reach redis.call as the strings they came in as: every Lua number
  -- passed to Redis is formatted again (snprintf), every string read as a number parsed.
  local xadd
  if max_len > 0 then
    xadd = {'XADD', msgs, 'MAXLEN', '~', a.max_len}
  elseif min_id then
    xadd = {'XADD', msgs, 'MINID', '~', min_id}
  else
    xadd = {'XADD', msgs}
  end
  local n = #xadd
  xadd[n + 1], xadd[n + 2], xadd[n + 3], xadd[n + 4], xadd[n + 5] = '*', 'f', a.from, 't', a.to
  xadd[n + 6], xadd[n + 7], xadd[n + 8], xadd[n + 9] = 'b', a.body, 's', a.sent_at
  n = n + 9
  if nonce_key then
    xadd[n + 1], xadd[n + 2] = 'n', a.nonce
    n = n + 2
  end
  local seq = tostring(redis.call('HINCRBY', meta, 's', 1))
  xadd[n + 1], xadd[n + 2] = 'q', seq
  local id = redis.call(unpack(xadd))
  if max_len > 0 and min_id then
    redis.call('XTRIM', msgs, 'MINID', '~', min_id)
  end
  local msg = message_json(id, a.conversation, a.from, a.to, a.body, a.sent_at)
  -- One's own messages are never unread: the sender has read up to this one.
  redis.call('HSET', meta, 'last', id, 'lm', msg, 'r:' .. a.from, seq, 'ru:' .. a.from, id)
  if nonce_key then
    local ttl = tonumber(a.nonce_ttl) or 0
    if ttl > 0 then
      redis.call('SET', nonce_key, id, 'EX', a.nonce_ttl)
    else
      redis.call('SET', nonce_key, id)
    end
  end
  return 0, msg, id
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

-- Appends an event to a user's inbox, indexes the conversation and publishes it live.
-- inbox, convs, ch: keys (convs nil: not a message, leave the index alone);
-- event: JSON; peer: the other participant; score: message ms.
-- trace: a W3C traceparent carried only in the live payload ('' or nil = none).
-- publish false: no live publish (the calling node delivers to the user's
-- connections itself, and the user has none elsewhere).
-- Returns the new entry id and the previous one ('0-0' for the first).
local function inbox_append(inbox, convs, ch, event, peer, score, max_len, ttl, trace, publish)
  local last = redis.call('XREVRANGE', inbox, '+', '-', 'COUNT', 1)
  local prev = '0-0'
  if #last > 0 then
    prev = last[1][1]
  end
  local id
  if (tonumber(max_len) or 0) > 0 then
    id = redis.call('XADD', inbox, 'MAXLEN', '~', max_len, '*', 'p', prev, 'e', event)
  else
    id = redis.call('XADD', inbox, '*', 'p', prev, 'e', event)
  end
  local ttl_secs = tonumber(ttl) or 0
  if ttl_secs > 0 and expiry_due(prev, id, ttl_secs) then
    redis.call('EXPIRE', inbox, ttl)
  end
  if convs then
    redis.call('ZADD', convs, score, peer)
  end
  if publish == false then
    return id, prev
  end
  if trace and trace ~= '' then
    redis.call('SPUBLISH', ch, id .. ' ' .. prev .. ' t=' .. trace .. ' ' .. event)
  else
    redis.call('SPUBLISH', ch, id .. ' ' .. prev .. ' ' .. event)
  end
  return id, prev
end

-- The entry among the inbox's newest `window` whose event starts with `prefix`
-- (id, prev), or nil.
local function inbox_find(inbox, prefix, window)
  local n = #prefix
  for _, entry in ipairs(redis.call('XREVRANGE', inbox, '+', '-', 'COUNT', window)) do
    local fields = entry[2]
    local prev = nil
    local found = false
    for i = 1, #fields, 2 do
      if fields[i] == 'p' then
        prev = fields[i + 1]
      elseif fields[i] == 'e' and string.sub(fields[i + 1], 1, n) == prefix then
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

local function conv_args(args, first)
  return {
    conversation = args[first], from = args[first + 1], to = args[first + 2],
    body = args[first + 3], sent_at = args[first + 4], nonce = args[first + 5],
    nonce_ttl = args[first + 6], max_len = args[first + 7], max_age = args[first + 8],
  }
end

--[[ chat_send: a whole 1:1 send on a single Redis (all keys in one slot set).
KEYS: 1 msgs, 2 meta, 3 nonce key (ignored when ARGV[6] is ''),
      4 inbox(from), 5 convs(from), 6 ch(from), 7 inbox(to), 8 convs(to), 9 ch(to),
      10 pres(from) (optional)
ARGV: 1 conversation, 2 from, 3 to, 4 body, 5 sent_at, 6 nonce ('' = none),
      7 nonce_ttl, 8 history_max_len, 9 history_max_age_secs,
      10 inbox_max_len, 11 inbox_ttl_secs, 12 traceparent ('' = none),
      13 sending node ('' or absent = none)
With a sending node, the sender's own live event is published only if the sender
has connections on another node: the sending node delivers it to its own.
Returns {dup, message JSON}; when dup = 1 nothing was written or published;
otherwise also the sender's inbox entry id and the one before it:
{0, message JSON, id, prev}. ]]
redis.register_function('chat_send', function(keys, args)
  local a = conv_args(args, 1)
  local nonce_key = nil
  if a.nonce ~= '' then
    nonce_key = keys[3]
  end
  local dup, msg, id = conv_append(keys[1], keys[2], nonce_key, a)
  if dup == 1 then
    return {1, msg}
  end
  local event = message_event(msg)
  local score = string.match(id, '^(%d+)')
  local node = args[13] or ''
  local publish = node == '' or elsewhere(keys[10], node)
  local id, prev = inbox_append(keys[4], keys[5], keys[6], event, a.to, score, args[10], args[11],
    args[12], publish)
  inbox_append(keys[7], keys[8], keys[9], event, a.from, score, args[10], args[11], args[12])
  return {0, msg, id, prev}
end)

--[[ chat_conv_append: the conversation half of a send (cluster mode).
KEYS: 1 msgs, 2 meta, 3 nonce key (only when ARGV[6] is not '')
ARGV: 1 conversation, 2 from, 3 to, 4 body, 5 sent_at, 6 nonce ('' = none),
      7 nonce_ttl, 8 history_max_len, 9 history_max_age_secs
Returns {dup, message JSON}. ]]
redis.register_function('chat_conv_append', function(keys, args)
  local a = conv_args(args, 1)
  local nonce_key = nil
  if a.nonce ~= '' then
    nonce_key = keys[3]
  end
  local dup, msg = conv_append(keys[1], keys[2], nonce_key, a)
  return {dup, msg}
end)

--[[ chat_inbox_append: one inbox append with its live publish (cluster mode).
KEYS: 1 inbox, 2 convs, 3 ch, 4 pres (optional) (all of one user)
ARGV: 1 event JSON, 2 peer id ('' = not a message: the conversation index is left
      alone), 3 score (message ms), 4 inbox_max_len, 5 inbox_ttl_secs,
      6 message id ('' = none), 7 window, 8 traceparent ('' = none),
      9 calling node that delivers to the user's connections itself ('' or absent =
      none: publish; otherwise publish only if the user has connections elsewhere)
With a message id, the append is skipped when one of the inbox's newest `window`
entries already holds that message (a retried send, or fred writing the call again
after a reconnect): the retry does not duplicate it.
Returns {id, prev, appended (0 or 1)}. ]]
redis.register_function('chat_inbox_append', function(keys, args)
  local mid = args[6] or ''
  if mid ~= '' then
    local prefix = '{"type":"message","message":{"id":' .. cjson.encode(mid) .. ','
    local id, prev = inbox_find(keys[1], prefix, tonumber(args[7]) or 16)
    if id then
      return {id, prev, 0}
    end
  end
  local convs = keys[2]
  if args[2] == '' then
    convs = nil
  end
  local node = args[9] or ''
  local publish = node == '' or elsewhere(keys[4], node)
  local id, prev = inbox_append(keys[1], convs, keys[3], args[1], args[2], args[3], args[4], args[5],
    args[8], publish)
  return {id, prev, 1}
end)

--[[ chat_read_marker: the conversation half of chat_read (cluster mode).
KEYS: 1 msgs, 2 meta
ARGV: 1 conversation, 2 reader, 3 up_to (a message id)
Moves the marker like chat_read. Returns {marker id, read event JSON}, or nil when
nothing moved; the caller then appends the event to both inboxes
(chat_inbox_append with peer ''). ]]
redis.register_function('chat_read_marker', function(keys, args)
  local id = read_marker(keys[1], keys[2], args[2], args[3])
  if not id then
    return false
  end
  return {id, read_event(args[1], args[2], id)}
end)

--[[ chat_read: moves a reader's read marker forward and tells both participants.
KEYS: 1 msgs, 2 meta (the conversation), 3 inbox(reader), 4 ch(reader),
      5 inbox(peer), 6 ch(peer)
ARGV: 1 conversation, 2 reader, 3 up_to (a message id), 4 inbox_max_len,
      5 inbox_ttl_secs
The marker moves to the newest message at or before up_to (so it is clamped to the
last message) if that message is newer than the marker; then the event
{"type":"read","conversation","by","up_to"} is appended to both inboxes and published.
Returns the new marker's id, or nil when nothing moved. ]]
redis.register_function('chat_read', function(keys, args)
  local id = read_marker(keys[1], keys[2], args[2], args[3])
  if not id then
    return false
  end
  local event = read_event(args[1], args[2], id)
  inbox_append(keys[3], nil, keys[4], event, nil, nil, args[4], args[5])
  inbox_append(keys[5], nil, keys[6], event, nil, nil, args[4], args[5])
  return id
end)
