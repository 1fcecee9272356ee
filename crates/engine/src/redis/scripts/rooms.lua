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
lt (id of the last message, or of the event that created the room), r:<user> (a member's read marker: a sequence number).
Channel payload: "<id> <prev> <flag> <frame>", flag '-' for a message, '+<user>'
joined, '~<user>' left. ]]

-- What a room stream keeps, from ARGV starting at `first`: history_max_len (events,
-- 0 = no limit), history_max_age_secs (0 = no limit) and now_ms (the node's clock),
-- as a conversation's (send.lua's `min_id`). Both trims are approximate (~).
local function room_keep(args, first)
  return {
    max_len = args[first], by_len = (tonumber(args[first]) or 0) > 0,
    min_id = min_id(args[first + 1], args[first + 2]),
  }
end

-- Appends an event and publishes it, trimming the stream to `keep` (room_keep): one
-- XADD, with an XTRIM only when both a length and an age limit are set (XADD takes one
-- strategy). Returns its id, the previous one and the frame.
local function room_append(meta, ev, ch, keep, head, tail, fields, flag)
  local prev = redis.call('HGET', meta, 'e') or '0-0'
  local args = {ev}
  if keep.by_len then
    table.insert(args, 'MAXLEN')
    table.insert(args, '~')
    table.insert(args, keep.max_len)
  elseif keep.min_id then
    table.insert(args, 'MINID')
    table.insert(args, '~')
    table.insert(args, keep.min_id)
  end
  table.insert(args, '*')
  table.insert(args, 'p')
  table.insert(args, prev)
  table.insert(args, 'j')
  table.insert(args, head)
  table.insert(args, 't')
  table.insert(args, tail)
  for _, v in ipairs(fields) do
    table.insert(args, v)
  end
  local id = redis.call('XADD', unpack(args))
  if keep.by_len and keep.min_id then
    redis.call('XTRIM', ev, 'MINID', '~', keep.min_id)
  end
  redis.call('HSET', meta, 'e', id)
  local frame = head .. id .. tail
  redis.call('SPUBLISH', ch, id .. ' ' .. prev .. ' ' .. flag .. ' ' .. frame)
  return id, prev, frame
end

--[[ chat_room_join
KEYS: 1 meta, 2 members (sorted set, score 0), 3 names (hash member -> name),
      4 ev (event stream), 5 ch (room channel)
ARGV: 1 user, 2 head, 3 tail (the joined frame around its id), 4 max events kept,
      5 max age secs, 6 now_ms (room_keep), 7 user name, 8 room name (used when the
      room is new), 9 max members
Returns {1, id, prev} joined, {0} already a member, {-1} the room is full. ]]
redis.register_function('chat_room_join', function(keys, args)
  local meta, members, names, ev, ch = keys[1], keys[2], keys[3], keys[4], keys[5]
  local user = args[1]
  if redis.call('ZSCORE', members, user) then
    return {0}
  end
  if redis.call('ZCARD', members) >= tonumber(args[9]) then
    return {-1}
  end
  local created = redis.call('HSETNX', meta, 'name', args[8]) == 1
  redis.call('ZADD', members, 0, user)
  redis.call('HSET', names, user, args[7])
  -- Messages from before the join are not unread.
  redis.call('HSET', meta, 'r:' .. user, redis.call('HGET', meta, 's') or 0)
  local id, prev = room_append(meta, ev, ch, room_keep(args, 4), args[2], args[3],
    {'k', 'j', 'u', user}, '+' .. user)
  if created then
    redis.call('HSET', meta, 'lt', id)
  end
  return {1, id, prev}
end)

--[[ chat_room_leave
KEYS: 1 meta, 2 members, 3 names, 4 ev, 5 ch
ARGV: 1 user, 2 head, 3 tail (the left frame around its id), 4 max events kept,
      5 max age secs, 6 now_ms (room_keep)
Returns {1, id, prev} left, {0} not a member. ]]
redis.register_function('chat_room_leave', function(keys, args)
  local meta, members, names, ev, ch = keys[1], keys[2], keys[3], keys[4], keys[5]
  local user = args[1]
  if redis.call('ZREM', members, user) == 0 then
    return {0}
  end
  redis.call('HDEL', names, user)
  redis.call('HDEL', meta, 'r:' .. user)
  local id, prev = room_append(meta, ev, ch, room_keep(args, 4), args[2], args[3],
    {'k', 'l', 'u', user}, '~' .. user)
  return {1, id, prev}
end)

--[[ chat_room_send
KEYS: 1 meta, 2 members, 3 ev, 4 ch, 5 nonce (string: the message id, with a TTL)
ARGV: 1 from, 2 head, 3 tail (the message frame around its id), 4 nonce ttl secs,
      5 max events kept, 6 max age secs, 7 now_ms (room_keep)
Returns {1, id} stored, {2, id} a retried nonce (nothing stored), {0} not a member. ]]
redis.register_function('chat_room_send', function(keys, args)
  local meta, members, ev, ch, nonce = keys[1], keys[2], keys[3], keys[4], keys[5]
  local from = args[1]
  if not redis.call('ZSCORE', members, from) then
    return {0}
  end
  local seen = redis.call('GET', nonce)
  if seen then
    return {2, seen}
  end
  local seq = redis.call('HINCRBY', meta, 's', 1)
  local id, _, frame = room_append(meta, ev, ch, room_keep(args, 5), args[2], args[3],
    {'k', 'm', 's', seq}, '-')
  redis.call('HSET', meta, 'r:' .. from, seq, 'lm', frame, 'lt', id)
  redis.call('SET', nonce, id, 'EX', args[4])
  return {1, id}
end)

--[[ chat_room_read
KEYS: 1 meta, 2 members, 3 ev
ARGV: 1 user, 2 up_to (a message id)
Moves the member's marker to the newest message at or before up_to, only forward.
Returns the marker's message id, or '' when nothing moved. ]]
redis.register_function('chat_room_read', function(keys, args)
  local meta, members, ev = keys[1], keys[2], keys[3]
  local user = args[1]
  if not redis.call('ZSCORE', members, user) then
    return ''
  end
  local upper = args[2]
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
KEYS: 1 the user's set of rooms
ARGV: 1 room, 2 max rooms per user
Lists the room among the user's before the join, so two joins at once cannot both
pass the cap. Returns 1 listed now, 0 listed already, -1 the cap is reached. ]]
redis.register_function('chat_rooms_reserve', function(keys, args)
  local mine, room = keys[1], args[1]
  if redis.call('SISMEMBER', mine, room) == 1 then
    return 0
  end
  if redis.call('SCARD', mine) >= tonumber(args[2]) then
    return -1
  end
  redis.call('SADD', mine, room)
  return 1
end)
