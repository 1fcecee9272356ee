--[[ send.lua: storing 1:1 messages (chat_send on a single Redis; chat_conv_append and
chat_inbox_append on a cluster) and clearing conversations (chat_conv_clear, then
chat_inbox_clear for each participant). Rust side: redis/functions/send.rs. ]]

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

-- The history options every send shares: history_max_len, history_max_age_secs,
-- now_ms (the node's clock, for the age limit); and Redis's clock for the nonces.
local function conv_opts(max_len, max_age, now_ms)
  return {
    max_len = max_len, trim = max_len ~= '0' and max_len ~= '',
    min_id = min_id(max_age, now_ms), now = now_secs(),
  }
end

--[[ chat_send: a batch of 1:1 sends on a single Redis (every key in one call, whatever
its slot), in order, in one atomic call. The node batches the sends that arrive while
its previous call is in flight.
With a sending node, the sender's own live event is published only if the sender
has connections on another node: the sending node delivers it to its own.
Returns 4 values per message: 0, the new message's id, the sender's new inbox entry
id and the one before it; or for a duplicate (nothing written or published) 1, the
stored message's id, its conversation entry ('' if trimmed), ''. The node builds a new
message's JSON from its id and the tail it passed. ]]
redis.register_function('chat_send', function(keys, args)
  local history_max_len, history_max_age_secs, now_ms = args[1], args[2], args[3]
  local inbox_max_len, inbox_ttl_secs = args[4], args[5]
  local convs_max = args[6] -- conversations kept per user index, the oldest dropped
  local o = conv_opts(history_max_len, history_max_age_secs, now_ms)
  local io = inbox_opts(inbox_max_len, inbox_ttl_secs, convs_max)
  local out = {}
  -- Then per message 11 keys (from k + 1) and 10 arguments (from j + 1).
  for m = 0, (#args - 6) / 10 - 1 do
    local k, j = 11 * m, 6 + 10 * m
    local msgs, meta = keys[k + 1], keys[k + 2]
    local from_inbox, from_head, from_convs = keys[k + 3], keys[k + 4], keys[k + 5]
    local from_ch, from_pres = keys[k + 6], keys[k + 7]
    local to_inbox, to_head, to_convs, to_ch = keys[k + 8], keys[k + 9], keys[k + 10], keys[k + 11]
    local conversation, from, to = args[j + 1], args[j + 2], args[j + 3]
    local body, sent_at = args[j + 4], args[j + 5]
    local nonce, nonce_ttl = args[j + 6], args[j + 7] -- nonce '' = none
    local tail = args[j + 8] -- the message JSON after its id
    local trace, node = args[j + 9], args[j + 10] -- traceparent, sending node ('' = none)
    local a = {conversation = conversation, from = from, to = to, body = body,
      sent_at = sent_at, nonce = nonce, nonce_ttl = nonce_ttl, tail = tail}
    local dup, mid, msg = conv_append(msgs, meta, a, o)
    local r = 4 * m
    if dup == 1 then
      out[r + 1], out[r + 2], out[r + 3], out[r + 4] = 1, mid, msg, ''
    else
      local event = message_event(msg)
      local score = string.match(mid, '^(%d+)')
      -- The sender's copy, published unless the sending node delivers it alone.
      local publish = elsewhere(from_pres, node)
      local id, prev = inbox_add(from_inbox, from_head, 'm',
        message_entry(mid, to, '>', body, sent_at), io)
      index_conversation(from_convs, to, score, io)
      if publish then
        publish_entry(from_ch, id, prev, trace, event)
      end
      local to_id, to_prev = inbox_add(to_inbox, to_head, 'm',
        message_entry(mid, from, '<', body, sent_at), io)
      index_conversation(to_convs, from, score, io)
      publish_entry(to_ch, to_id, to_prev, trace, event)
      out[r + 1], out[r + 2], out[r + 3], out[r + 4] = 0, mid, id, prev
    end
  end
  return out
end)

--[[ chat_conv_append: the conversation half of a send (cluster mode).
Returns {dup, message id, stored conversation entry ('' for a new message, or a
duplicate whose entry was trimmed)}. ]]
redis.register_function('chat_conv_append', function(keys, args)
  local msgs, meta = keys[1], keys[2]
  local history_max_len, history_max_age_secs, now_ms = args[1], args[2], args[3]
  local conversation, from, to, body = args[4], args[5], args[6], args[7]
  local sent_at, nonce, nonce_ttl, tail = args[8], args[9], args[10], args[11]
  local a = {conversation = conversation, from = from, to = to, body = body,
    sent_at = sent_at, nonce = nonce, nonce_ttl = nonce_ttl, tail = tail}
  local o = conv_opts(history_max_len, history_max_age_secs, now_ms)
  local dup, mid, msg = conv_append(msgs, meta, a, o)
  if dup == 0 then
    return {0, mid, ''}
  end
  return {1, mid, msg}
end)

--[[ chat_inbox_append: one inbox append with its live publish (cluster mode): a
message's (kind 'm': the conversation index is updated) or a read receipt's (kind 'r').
A message is not appended again when one of the inbox's newest `window` entries
already holds it (a retried send; window 0: a first attempt, not searched).
Returns {id, prev, appended (0 or 1)}. ]]
redis.register_function('chat_inbox_append', function(keys, args)
  local inbox, head, convs, ch, pres = keys[1], keys[2], keys[3], keys[4], keys[5]
  local event, kind = args[1], args[2] -- the event JSON (published); 'm' or 'r'
  local ref = args[3] -- the message id, or the id read up to
  local other, dir = args[4], args[5] -- '>' the user sent / read, '<' the other one did
  local body, sent_at, score = args[6], args[7], args[8] -- messages only; score: its ms
  local inbox_max_len, inbox_ttl_secs, window = args[9], args[10], args[11]
  local trace = args[12] -- '' = none
  local node = args[13] -- the calling node, which delivers to the user's connections
  local convs_max = args[14] -- as chat_send's
  local entry
  if kind == 'm' then
    local search = tonumber(window) or 0
    if search > 0 then
      local id, prev = inbox_find(inbox, ref, search)
      if id then
        return {id, prev, 0}
      end
    end
    entry = message_entry(ref, other, dir, body, sent_at)
  else
    kind = 'r'
    entry = read_entry(ref, other, dir)
  end
  -- With a calling node, published only if the user has connections elsewhere.
  local publish = elsewhere(pres, node)
  local o = inbox_opts(inbox_max_len, inbox_ttl_secs, convs_max)
  local id, prev = inbox_add(inbox, head, kind, entry, o)
  if kind == 'm' then
    index_conversation(convs, other, score, o)
  end
  if publish then
    publish_entry(ch, id, prev, trace, event)
  end
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
Returns the id of the newest message it held ('' when it held none); the node then
tells both participants (chat_inbox_clear). ]]
redis.register_function('chat_conv_clear', function(keys, args)
  local msgs, meta = keys[1], keys[2]
  local newest = redis.call('XREVRANGE', msgs, '+', '-', 'COUNT', 1)
  local up_to = redis.call('HGET', meta, 'last') or ''
  if #newest > 0 and id_older(up_to, newest[1][1]) then
    up_to = newest[1][1]
  end
  redis.call('DEL', msgs, meta)
  return up_to
end)

--[[ chat_inbox_clear: one participant of a cleared conversation is told.
Records up_to in clr (field: the other participant; only forward; the hash expires
with the inbox), so reads skip the conversation's messages up to it, then appends the
cleared entry (c = '><other> <up_to>') and publishes the event.
Returns {id, prev}. ]]
redis.register_function('chat_inbox_clear', function(keys, args)
  local inbox, head, ch, clr = keys[1], keys[2], keys[3], keys[4] -- all of one user
  local event = args[1] -- the cleared event JSON (published)
  local other, up_to = args[2], args[3] -- up_to: the newest message the clear deleted
  local inbox_max_len, inbox_ttl_secs = args[4], args[5]
  local marker = redis.call('HGET', clr, other) or ''
  if id_older(marker, up_to) then
    redis.call('HSET', clr, other, up_to)
  end
  local ttl = tonumber(inbox_ttl_secs) or 0
  if ttl > 0 then
    redis.call('EXPIRE', clr, inbox_ttl_secs)
  end
  local id, prev = inbox_add(inbox, head, 'c', '>' .. other .. ' ' .. up_to,
    inbox_opts(inbox_max_len, inbox_ttl_secs))
  publish_entry(ch, id, prev, '', event)
  return {id, prev}
end)
