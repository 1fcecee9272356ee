--[[ send.lua: storing messages (chat_send on a single Redis; chat_conv_append and
chat_inbox_append on a cluster). ]]

-- A new message's JSON: the node serialized the message with an empty id and passes
-- what follows the id (`tail`); stream ids need no escaping.
local function message_from_tail(id, tail)
  return '{"id":"' .. id .. '"' .. tail
end

-- The inbox event of a message (chat_protocol::Event::Message).
local function message_event(msg)
  return '{"type":"message","message":' .. msg .. '}'
end

-- A conversation stream entry is one field, m = '<sequence> <sender> <sent_at> <body>'
-- (the recipient is the conversation's other participant; ids and times hold no
-- spaces, the body is the rest). Parsed by the node in redis/inbox.rs.
local function conv_seq(fields)
  return string.match(fields[2], '^(%d+) ')
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

-- Appends a message to a conversation unless its nonce was seen (see conv_seq).
-- msgs, meta: keys; a: {conversation, from, to, body, sent_at, nonce ('' = none),
-- nonce_ttl, tail}; o: {max_len, min_id (nil = no age limit), now (Redis's clock, s)}
-- (strings, as they came in: Redis formats every Lua number passed to it again).
-- Returns dup (0 or 1), the message id, and: for a new message its JSON; for a
-- duplicate the stored conversation entry ('' when retention trimmed it: the node
-- rebuilds the message from the retried request, which carries the same body).
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
      local found = redis.call('XRANGE', msgs, stored, stored)
      if #found == 0 then
        return 1, stored, ''
      end
      return 1, stored, found[1][2][2]
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
  return 0, id, msg
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
      age limit), 4 inbox_max_len, 5 inbox_ttl_secs, 6 convs_max (conversations kept
      per user index, oldest dropped; 0 = unlimited), then 10 per message starting at
      10 * (i - 1) + 7: conversation, from, to, body, sent_at, nonce ('' = none),
      nonce_ttl, tail (the message JSON after its id), traceparent ('' = none),
      sending node ('' = none)
With a sending node, the sender's own live event is published only if the sender
has connections on another node: the sending node delivers it to its own.
Returns 4 values per message: 0, the new message's id, the sender's new inbox entry
id and the one before it; or for a duplicate (nothing written or published) 1, the
stored message's id, its conversation entry ('' if trimmed), ''. The node builds a new
message's JSON from its id and the tail it passed. ]]
redis.register_function('chat_send', function(keys, args)
  local o = conv_opts(args, 1)
  local io = inbox_opts(args[4], args[5], args[6])
  local out = {}
  local n = (#args - 6) / 10
  for i = 0, n - 1 do
    local k, j = 11 * i, 10 * i + 7
    local a = conv_args(args, j)
    local trace, node = args[j + 8], args[j + 9]
    local dup, mid, msg = conv_append(keys[k + 1], keys[k + 2], a, o)
    local r = 4 * i
    if dup == 1 then
      out[r + 1], out[r + 2], out[r + 3], out[r + 4] = 1, mid, msg, ''
    else
      local event = message_event(msg)
      local score = string.match(mid, '^(%d+)')
      local publish = elsewhere(keys[k + 7], node)
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
Returns {dup, message id, stored conversation entry ('' for a new message, or a
duplicate whose entry was trimmed)}. ]]
redis.register_function('chat_conv_append', function(keys, args)
  local dup, mid, msg = conv_append(keys[1], keys[2], conv_args(args, 4), conv_opts(args, 1))
  if dup == 0 then
    return {0, mid, ''}
  end
  return {1, mid, msg}
end)

--[[ chat_inbox_append: one inbox append with its live publish (cluster mode).
KEYS: 1 inbox, 2 head, 3 convs, 4 ch, 5 pres (all of one user)
ARGV: 1 event JSON (published), 2 kind ('m' a message: the conversation index is
      updated; 'r' a read receipt), 3 message id or the id read up to, 4 the other
      participant, 5 direction ('>' the user sent / read, '<' the other one did),
      6 body, 7 sent_at (messages; '' otherwise), 8 score (message ms),
      9 inbox_max_len, 10 inbox_ttl_secs, 11 window, 12 traceparent ('' = none),
      13 calling node that delivers to the user's connections itself ('' = none:
      publish; otherwise publish only if the user has connections elsewhere),
      14 convs_max (as chat_send's)
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
  local publish = elsewhere(keys[5], args[13])
  local id, prev = inbox_append(keys[1], keys[2], convs, keys[4], args[1], kind, entry, other,
    args[8], inbox_opts(args[9], args[10], args[14]), args[12], publish)
  return {id, prev, 1}
end)

-- Whether stream id `a` is older than `b` (ids are '<ms>-<seq>'; '' is older than all).
local function id_older(a, b)
  if a == '' then
    return b ~= ''
  end
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if not bms then
    return false
  end
  if not ams then
    return true
  end
  if tonumber(ams) ~= tonumber(bms) then
    return tonumber(ams) < tonumber(bms)
  end
  return tonumber(aseq) < tonumber(bseq)
end

--[[ chat_conv_clear: deletes a conversation's history (its stream and meta hash).
KEYS: 1 msgs, 2 meta
Returns the id of the newest message it held ('' when it held none); the node then
tells both participants (chat_inbox_clear). ]]
redis.register_function('chat_conv_clear', function(keys, args)
  local newest = redis.call('XREVRANGE', keys[1], '+', '-', 'COUNT', 1)
  local up_to = redis.call('HGET', keys[2], 'last') or ''
  if #newest > 0 and id_older(up_to, newest[1][1]) then
    up_to = newest[1][1]
  end
  redis.call('DEL', keys[1], keys[2])
  return up_to
end)

--[[ chat_inbox_clear: one participant of a cleared conversation is told.
KEYS: 1 inbox, 2 head, 3 ch, 4 clr (all of one user)
ARGV: 1 the cleared event JSON (published), 2 the other participant, 3 up_to (the
      newest message the clear deleted), 4 inbox_max_len, 5 inbox_ttl_secs
Records up_to in clr (field: the other participant; only forward; the hash expires
with the inbox), so reads skip the conversation's messages up to it, then appends the
cleared entry (c = '><other> <up_to>') and publishes the event.
Returns {id, prev}. ]]
redis.register_function('chat_inbox_clear', function(keys, args)
  local other, up_to = args[2], args[3]
  local marker = redis.call('HGET', keys[4], other) or ''
  if id_older(marker, up_to) then
    redis.call('HSET', keys[4], other, up_to)
  end
  local ttl = tonumber(args[5]) or 0
  if ttl > 0 then
    redis.call('EXPIRE', keys[4], args[5])
  end
  local id, prev = inbox_append(keys[1], keys[2], nil, keys[3], args[1], 'c',
    '>' .. other .. ' ' .. up_to, other, nil, inbox_opts(args[4], args[5]), '', true)
  return {id, prev}
end)
