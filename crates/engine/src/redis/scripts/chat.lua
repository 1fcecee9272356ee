#!lua name=chat
--[[
The chat library: slot-local building blocks for storing and delivering messages.

Key layout (see crates/engine/src/redis/keys.rs):
  chat:{c:<a>:<b>}:msgs              conversation stream (one field m: the message's
                                     sequence number, sender, sent_at, body; see
                                     conv_entry)
  chat:{c:<a>:<b>}:meta              hash: s = message count, last = last id,
                                     lm = last message JSON, r:<user> = read marker
                                     (sequence number), ru:<user> = its message id
  chat:{c:<a>:<b>}:n:<ttl>:<window>  nonces of one window of ttl seconds (a hash,
                                     see nonce_place)
  chat:{u:<id>}:inbox                inbox stream (one field m or r: the event
                                     without what the owner implies; see
                                     message_entry)
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

-- A conversation stream entry is one field, m = '<sequence> <sender> <sent_at> <body>'
-- (the recipient is the conversation's other participant; ids and times hold no
-- spaces, the body is the rest). Parsed by the node in redis/mod.rs `history`.
local function conv_entry(fields)
  local seq, from, sent_at, body = string.match(fields[2], '^(%d+) (%S+) (%S+) (.*)$')
  return seq, from, sent_at, body
end

-- The message a nonce named (`stored`: its id). If retention trimmed it from the
-- conversation, it is rebuilt from the retried request, which carries the same body.
-- a: {conversation, from, to, body, sent_at}
local function stored_message(msgs, stored, a)
  local found = redis.call('XRANGE', msgs, stored, stored)
  if #found == 0 then
    return message_json(stored, a.conversation, a.from, a.to, a.body, a.sent_at)
  end
  local _, from, sent_at, body = conv_entry(found[1][2])
  local to = a.to
  if from ~= a.from then
    to = a.from
  end
  return message_json(stored, a.conversation, from, to, body, sent_at)
end

-- Nonces live in hashes, one per conversation and window of `ttl` seconds of Redis's
-- clock: chat:{c:<a>:<b>}:n:<ttl>:<window>, field = '<' or '>' (the sender is the
-- conversation's first or second participant) .. nonce, value = the message id. Each
-- hash expires two windows after its own starts, so a nonce is remembered at least
-- `ttl` and less than 2 * `ttl` seconds, with no key per message. The conversation's
-- meta hash records, per ttl, the newest window that got a nonce (nw:<ttl>) and the
-- one before it (np:<ttl>), so only hashes that exist are read and a hash's expiry is
-- set once, when it is created.
-- Returns the hashes' key prefix (append the window), the field, the current window
-- and the ttl in seconds.
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
  return base, side .. a.nonce, w, ttl
end

-- Appends a message to a conversation unless its nonce was seen (see conv_entry).
-- msgs, meta: keys; a: {conversation, from, to, body, sent_at, nonce ('' = none),
-- nonce_ttl, tail}; o: {max_len, min_id (nil = no age limit), now (Redis's clock, s)}
-- (strings, as they came in: Redis formats every Lua number passed to it again).
-- Returns dup (0 or 1), message JSON, and the new id (nil for a duplicate).
local function conv_append(msgs, meta, a, o)
  local base, field, w, ttl
  local state
  if a.nonce ~= '' then
    base, field, w, ttl = nonce_place(msgs, a, o.now)
    state = redis.call('HMGET', meta, 's', 'nw:' .. a.nonce_ttl, 'np:' .. a.nonce_ttl)
    local nw, np = tonumber(state[2]), tonumber(state[3])
    local stored = nil
    if nw == w then
      stored = redis.call('HGET', base .. state[2], field)
    end
    if not stored and (nw == w - 1 or (nw == w and np == w - 1)) then
      stored = redis.call('HGET', base .. string.format('%d', w - 1), field)
    end
    if stored then
      return 1, stored_message(msgs, stored, a)
    end
  else
    state = redis.call('HMGET', meta, 's')
  end
  local seq = tostring((tonumber(state[1]) or 0) + 1)
  local id
  local entry = seq .. ' ' .. a.from .. ' ' .. a.sent_at .. ' ' .. a.body
  if o.trim then
    id = redis.call('XADD', msgs, 'MAXLEN', '~', o.max_len, '*', 'm', entry)
  elseif o.min_id then
    id = redis.call('XADD', msgs, 'MINID', '~', o.min_id, '*', 'm', entry)
  else
    id = redis.call('XADD', msgs, '*', 'm', entry)
  end
  if o.trim and o.min_id then
    redis.call('XTRIM', msgs, 'MINID', '~', o.min_id)
  end
  local msg = message_from_tail(id, a.tail)
  -- One's own messages are never unread: the sender has read up to this one.
  if base and tonumber(state[2]) ~= w then
    -- The first nonce of a new window: its hash is created, with its expiry.
    local window = string.format('%d', w)
    redis.call('HSET', base .. window, field, id)
    if ttl > 0 then
      redis.call('EXPIREAT', base .. window, string.format('%d', (w + 2) * ttl))
    end
    redis.call('HSET', meta, 's', seq, 'last', id, 'lm', msg, 'r:' .. a.from, seq,
      'ru:' .. a.from, id, 'nw:' .. a.nonce_ttl, window, 'np:' .. a.nonce_ttl, state[2] or '')
  else
    if base then
      redis.call('HSET', base .. state[2], field, id)
    end
    redis.call('HSET', meta, 's', seq, 'last', id, 'lm', msg, 'r:' .. a.from, seq,
      'ru:' .. a.from, id)
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

-- The inbox options of a call: {max_len, ttl, head_ttl} (strings; head_ttl nil
-- without an inbox ttl).
local function inbox_opts(max_len, ttl)
  local o = {max_len = max_len, ttl = ttl}
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

-- Appends an event to a user's inbox, indexes the conversation and publishes it live.
-- inbox, head, convs, ch: the user's keys (convs nil: not a message, leave the index
-- alone); event: the event JSON, published live; kind, entry: the stored form (see
-- message_entry, read_entry); peer: the other participant; score: message ms;
-- o: inbox_opts.
-- trace: a W3C traceparent carried only in the live payload ('' or nil = none).
-- publish false: no live publish (the calling node delivers to the user's
-- connections itself, and the user has none elsewhere).
-- The live payload carries the entry's id and the previous one, so a node sees a gap;
-- the stream itself needs no link (its entries are in order: the node reading it
-- knows each entry's predecessor).
-- Returns the new entry id and the previous one ('0-0' for the first).
local function inbox_append(inbox, head, convs, ch, event, kind, entry, peer, score, o,
                            trace, publish)
  local id
  if o.max_len ~= '0' and o.max_len ~= '' then
    id = redis.call('XADD', inbox, 'MAXLEN', '~', o.max_len, '*', kind, entry)
  else
    id = redis.call('XADD', inbox, '*', kind, entry)
  end
  local prev = move_head(inbox, head, id, o)
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

-- Moves `reader`'s marker in a conversation to the newest message at or before
-- `up_to`, only forward. Returns the marker's new message id, or nil.
local function read_marker(msgs, meta, reader, up_to)
  local found = redis.call('XREVRANGE', msgs, up_to, '-', 'COUNT', 1)
  if #found == 0 then
    return nil
  end
  local id = found[1][1]
  local seq = tonumber((conv_entry(found[1][2]))) or 0
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
    max_len = args[first], trim = args[first] ~= '0' and args[first] ~= '',
    min_id = min_id(args[first + 1], args[first + 2]), now = now_secs(),
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
Returns 4 values per message: 0, the new message's id, the sender's new inbox entry
id and the one before it; or for a duplicate (nothing written or published) 1, the
stored message's JSON, '', ''. The node builds a new message's JSON from its id and
the tail it passed. ]]
redis.register_function('chat_send', function(keys, args)
  local o = conv_opts(args, 1)
  local io = inbox_opts(args[4], args[5])
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
      local id, prev = inbox_append(keys[k + 3], keys[k + 4], keys[k + 5], keys[k + 6], event,
        'm', message_entry(mid, a.to, '>', a.body, a.sent_at), a.to, score, io, trace, publish)
      inbox_append(keys[k + 8], keys[k + 9], keys[k + 10], keys[k + 11], event,
        'm', message_entry(mid, a.from, '<', a.body, a.sent_at), a.from, score, io, trace, true)
      out[r + 1], out[r + 2], out[r + 3], out[r + 4] = 0, mid, id, prev
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
already holds it (a retried send; window 0: a first attempt, not searched).
Returns {id, prev, appended (0 or 1)}. ]]
redis.register_function('chat_inbox_append', function(keys, args)
  local kind, ref, other, dir = args[2], args[3], args[4], args[5]
  local convs = keys[3]
  local entry
  if kind == 'm' then
    local window = tonumber(args[11]) or 0
    if window > 0 then
      local id, prev = inbox_find(keys[1], ref, window)
      if id then
        return {id, prev, 0}
      end
    end
    entry = message_entry(ref, other, dir, args[6], args[7])
  else
    kind = 'r'
    convs = nil
    entry = read_entry(ref, other, dir)
  end
  local node = args[13]
  local publish = node == '' or elsewhere(keys[5], node)
  local id, prev = inbox_append(keys[1], keys[2], convs, keys[4], args[1], kind, entry, other,
    args[8], inbox_opts(args[9], args[10]), args[12], publish)
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
  local io = inbox_opts(args[4], args[5])
  inbox_append(keys[3], keys[4], nil, keys[5], event, 'r', read_entry(id, peer, '>'), nil, nil,
    io, '', true)
  inbox_append(keys[6], keys[7], nil, keys[8], event, 'r', read_entry(id, reader, '<'), nil, nil,
    io, '', true)
  return id
end)
