--[[ rooms.lua: rooms (protocol 1.1). Every function but chat_rooms_reserve touches
only one room's keys (hash tag {r:<room>}), so it is slot-local on a cluster and the
same on one Redis; chat_rooms_reserve touches only the user's set of rooms.
A room message is appended once to the room's event stream and published once on
the room's channel: no work per member. The user-slot halves (the user's set of
rooms, the notice on the user's own channel) are plain commands from the engine.

Event stream entries: p (previous event id), j and t (the frame's bytes before and
after its id), k ('m' message, 'j' joined, 'l' left), s (message sequence number,
messages only), u (the member, member events only).
Meta hash: name, s (messages sent), e (newest event id), lm (last message frame),
lt (id of the last message, or of the event that created the room), r:<user> (a
member's read marker: a sequence number).
Channel payload: "<id> <prev> <flag> <frame>", flag '-' for a message, '+<user>'
joined, '~<user>' left. Rust side: redis/functions/rooms.rs. ]]

-- What a room stream keeps: history_max_len (events, 0 = no limit),
-- history_max_age_secs (0 = no limit) and now_ms (the node's clock), as a
-- conversation's (send.lua's `min_id`). Both trims are approximate (~).
local function room_keep(max_len, max_age, now_ms)
  return {
    max_len = max_len, by_len = (tonumber(max_len) or 0) > 0,
    min_id = min_id(max_age, now_ms),
  }
end

-- Appends an event and publishes it, trimming the stream to `keep` (room_keep): one
-- XADD, with an XTRIM only when both a length and an age limit are set (XADD takes one
-- strategy). Returns its id, the previous one and the frame.
local function room_append(meta, ev, ch, keep, head, tail, fields, flag)
  local prev = redis.call('HGET', meta, 'e') or '0-0'
  local xadd = {ev}
  if keep.by_len then
    table.insert(xadd, 'MAXLEN')
    table.insert(xadd, '~')
    table.insert(xadd, keep.max_len)
  elseif keep.min_id then
    table.insert(xadd, 'MINID')
    table.insert(xadd, '~')
    table.insert(xadd, keep.min_id)
  end
  table.insert(xadd, '*')
  table.insert(xadd, 'p')
  table.insert(xadd, prev)
  table.insert(xadd, 'j')
  table.insert(xadd, head)
  table.insert(xadd, 't')
  table.insert(xadd, tail)
  for _, v in ipairs(fields) do
    table.insert(xadd, v)
  end
  local id = redis.call('XADD', unpack(xadd))
  if keep.by_len and keep.min_id then
    redis.call('XTRIM', ev, 'MINID', '~', keep.min_id)
  end
  redis.call('HSET', meta, 'e', id)
  local frame = head .. id .. tail
  redis.call('SPUBLISH', ch, id .. ' ' .. prev .. ' ' .. flag .. ' ' .. frame)
  return id, prev, frame
end

--[[ chat_room_join
Returns {1, id, prev} joined, {0} already a member, {-1} the room is full. ]]
redis.register_function('chat_room_join', function(keys, args)
  local meta, members, names = keys[1], keys[2], keys[3] -- members: score 0; names: member -> name
  local ev, ch = keys[4], keys[5] -- the event stream, the room's channel
  local user, head, tail = args[1], args[2], args[3] -- the joined frame around its id
  local history_max_len, history_max_age_secs, now_ms = args[4], args[5], args[6]
  local user_name = args[7]
  local room_name = args[8] -- used when the room is new
  local max_members = args[9]
  if redis.call('ZSCORE', members, user) then
    return {0}
  end
  if redis.call('ZCARD', members) >= tonumber(max_members) then
    return {-1}
  end
  local created = redis.call('HSETNX', meta, 'name', room_name) == 1
  redis.call('ZADD', members, 0, user)
  redis.call('HSET', names, user, user_name)
  -- Messages from before the join are not unread.
  redis.call('HSET', meta, 'r:' .. user, redis.call('HGET', meta, 's') or 0)
  local keep = room_keep(history_max_len, history_max_age_secs, now_ms)
  local id, prev = room_append(meta, ev, ch, keep, head, tail, {'k', 'j', 'u', user}, '+' .. user)
  if created then
    redis.call('HSET', meta, 'lt', id)
  end
  return {1, id, prev}
end)

--[[ chat_room_leave
Returns {1, id, prev} left, {0} not a member. ]]
redis.register_function('chat_room_leave', function(keys, args)
  local meta, members, names, ev, ch = keys[1], keys[2], keys[3], keys[4], keys[5]
  local user, head, tail = args[1], args[2], args[3] -- the left frame around its id
  local history_max_len, history_max_age_secs, now_ms = args[4], args[5], args[6]
  if redis.call('ZREM', members, user) == 0 then
    return {0}
  end
  redis.call('HDEL', names, user)
  redis.call('HDEL', meta, 'r:' .. user)
  local keep = room_keep(history_max_len, history_max_age_secs, now_ms)
  local id, prev = room_append(meta, ev, ch, keep, head, tail, {'k', 'l', 'u', user}, '~' .. user)
  return {1, id, prev}
end)

--[[ chat_room_send
Returns {1, id} stored, {2, id} a retried nonce (nothing stored), {0} not a member. ]]
redis.register_function('chat_room_send', function(keys, args)
  local meta, members, ev, ch = keys[1], keys[2], keys[3], keys[4]
  local nonce = keys[5] -- a string: the message id, with a TTL
  local from, head, tail = args[1], args[2], args[3] -- the message frame around its id
  local nonce_ttl_secs = args[4]
  local history_max_len, history_max_age_secs, now_ms = args[5], args[6], args[7]
  if not redis.call('ZSCORE', members, from) then
    return {0}
  end
  local seen = redis.call('GET', nonce)
  if seen then
    return {2, seen}
  end
  local seq = redis.call('HINCRBY', meta, 's', 1)
  local keep = room_keep(history_max_len, history_max_age_secs, now_ms)
  local id, _, frame = room_append(meta, ev, ch, keep, head, tail, {'k', 'm', 's', seq}, '-')
  redis.call('HSET', meta, 'r:' .. from, seq, 'lm', frame, 'lt', id)
  redis.call('SET', nonce, id, 'EX', nonce_ttl_secs)
  return {1, id}
end)

--[[ chat_room_read
Moves the member's marker to the newest message at or before up_to, only forward.
Returns the marker's message id, or '' when nothing moved. ]]
redis.register_function('chat_room_read', function(keys, args)
  local meta, members, ev = keys[1], keys[2], keys[3]
  local user, up_to = args[1], args[2] -- up_to: a message id
  if not redis.call('ZSCORE', members, user) then
    return ''
  end
  local upper = up_to
  while true do
    local found = redis.call('XREVRANGE', ev, upper, '-', 'COUNT', 50)
    if #found == 0 then
      return ''
    end
    for _, entry in ipairs(found) do
      local f = entry[2]
      local kind, seq
      for i = 1, #f, 2 do
        if f[i] == 'k' then kind = f[i + 1] end
        if f[i] == 's' then seq = tonumber(f[i + 1]) end
      end
      if kind == 'm' and seq then
        local marker = tonumber(redis.call('HGET', meta, 'r:' .. user)) or 0
        if seq <= marker then
          return ''
        end
        redis.call('HSET', meta, 'r:' .. user, seq)
        return entry[1]
      end
    end
    upper = '(' .. found[#found][1]
  end
end)

--[[ chat_rooms_reserve (in the user's slot, unlike the functions above)
Lists the room among the user's before the join, so two joins at once cannot both
pass the cap. Returns 1 listed now, 0 listed already, -1 the cap is reached. ]]
redis.register_function('chat_rooms_reserve', function(keys, args)
  local rooms = keys[1] -- the user's set of rooms
  local room, max_rooms = args[1], args[2]
  if redis.call('SISMEMBER', rooms, room) == 1 then
    return 0
  end
  if redis.call('SCARD', rooms) >= tonumber(max_rooms) then
    return -1
  end
  redis.call('SADD', rooms, room)
  return 1
end)
