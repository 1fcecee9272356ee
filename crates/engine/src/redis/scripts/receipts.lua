--[[ receipts.lua: read markers (chat_read on a single Redis; chat_read_marker, then
two chat_inbox_append, on a cluster). Rust side: redis/functions/receipts.rs.
Unread = s - r:<user>: the sender's marker moves to each message it sends, and
chat_read moves a reader's marker forward, so the count is exact and never scanned. ]]

-- Moves `reader`'s marker in a conversation to the newest message at or before
-- `up_to`, only forward. Returns the marker's new message id, or nil.
local function read_marker(msgs, meta, reader, up_to)
  local found = redis.call('XREVRANGE', msgs, up_to, '-', 'COUNT', 1)
  if #found == 0 then
    return nil
  end
  local id = found[1][1]
  local seq = tonumber(conv_seq(found[1][2])) or 0
  local marker = tonumber(redis.call('HGET', meta, 'r:' .. reader)) or 0
  if seq <= marker then
    return nil
  end
  redis.call('HSET', meta, 'r:' .. reader, seq, 'ru:' .. reader, id)
  return id
end

--[[ chat_read_marker: the conversation half of chat_read (cluster mode).
Moves the marker like chat_read. Returns {1, marker id}, or {0, ''} when nothing
moved; the node then appends the read event to both inboxes (chat_inbox_append with
kind 'r'). ]]
redis.register_function('chat_read_marker', function(keys, args)
  local msgs, meta = keys[1], keys[2]
  local reader, up_to = args[1], args[2] -- up_to: a message id
  local id = read_marker(msgs, meta, reader, up_to)
  if not id then
    return {0, ''}
  end
  return {1, id}
end)

--[[ chat_read: moves a reader's read marker forward and tells both participants.
The marker moves to the newest message at or before up_to (so it is clamped to the
last message) if that message is newer than the marker; then the read event
(event_head, the marker's id, event_tail) is appended to both inboxes and published.
Returns {1, the new marker's id}, or {0, ''} when nothing moved. ]]
redis.register_function('chat_read', function(keys, args)
  local msgs, meta = keys[1], keys[2] -- the conversation
  local reader_inbox, reader_head, reader_ch = keys[3], keys[4], keys[5]
  local peer_inbox, peer_head, peer_ch = keys[6], keys[7], keys[8]
  local reader, peer, up_to = args[1], args[2], args[3] -- up_to: a message id
  local inbox_max_len, inbox_ttl_secs = args[4], args[5]
  local event_head, event_tail = args[6], args[7] -- the read event around its up_to id
  local id = read_marker(msgs, meta, reader, up_to)
  if not id then
    return {0, ''}
  end
  local event = event_head .. id .. event_tail
  local io = inbox_opts(inbox_max_len, inbox_ttl_secs)
  local reader_id, reader_prev = inbox_add(reader_inbox, reader_head, 'r',
    read_entry(id, peer, '>'), io)
  publish_entry(reader_ch, reader_id, reader_prev, '', event)
  local peer_id, peer_prev = inbox_add(peer_inbox, peer_head, 'r', read_entry(id, reader, '<'), io)
  publish_entry(peer_ch, peer_id, peer_prev, '', event)
  return {1, id}
end)
