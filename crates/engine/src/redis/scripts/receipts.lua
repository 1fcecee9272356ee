--[[ receipts.lua: read markers (chat_read on a single Redis; chat_read_marker, then
two chat_inbox_append, on a cluster).
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
KEYS: 1 msgs, 2 meta
ARGV: 1 reader, 2 up_to (a message id)
Moves the marker like chat_read. Returns {1, marker id}, or {0, ''} when nothing
moved; the node then appends the read event to both inboxes (chat_inbox_append with
kind 'r'). ]]
redis.register_function('chat_read_marker', function(keys, args)
  local id = read_marker(keys[1], keys[2], args[1], args[2])
  if not id then
    return {0, ''}
  end
  return {1, id}
end)

--[[ chat_read: moves a reader's read marker forward and tells both participants.
KEYS: 1 msgs, 2 meta (the conversation), 3 inbox(reader), 4 head(reader),
      5 ch(reader), 6 inbox(peer), 7 head(peer), 8 ch(peer)
ARGV: 1 reader, 2 peer, 3 up_to (a message id), 4 inbox_max_len, 5 inbox_ttl_secs,
      6, 7 the read event's JSON before and after its up_to id
The marker moves to the newest message at or before up_to (so it is clamped to the
last message) if that message is newer than the marker; then the read event (ARGV 6,
the marker's id, ARGV 7) is appended to both inboxes and published.
Returns {1, the new marker's id}, or {0, ''} when nothing moved. ]]
redis.register_function('chat_read', function(keys, args)
  local reader, peer = args[1], args[2]
  local id = read_marker(keys[1], keys[2], reader, args[3])
  if not id then
    return {0, ''}
  end
  local event = args[6] .. id .. args[7]
  local io = inbox_opts(args[4], args[5])
  inbox_append(keys[3], keys[4], nil, keys[5], event, 'r', read_entry(id, peer, '>'), nil, nil,
    io, '', true)
  inbox_append(keys[6], keys[7], nil, keys[8], event, 'r', read_entry(id, reader, '<'), nil, nil,
    io, '', true)
  return {1, id}
end)
