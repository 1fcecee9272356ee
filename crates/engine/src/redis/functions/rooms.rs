//! `scripts/rooms.lua`: rooms (protocol 1.1).
//!
//! Every room function but `chat_rooms_reserve` touches only one room's keys (they
//! share the room's hash tag), so each is one slot-local call on a cluster and the
//! same on one Redis; `chat_rooms_reserve` touches only the user's set of rooms. This
//! module builds their keys and arguments, in the order their Lua names them, and
//! parses their replies; `redis/rooms.rs` makes the calls and does the rest.

use chat_protocol::StreamId;
use fred::prelude::*;

use super::super::conn::text;
use super::super::keys;
use super::history_args;
use crate::{EngineError, Retention};

/// A user joins a room (its members-per-room cap checked atomically).
pub(crate) const JOIN: &str = "chat_room_join";
/// A member leaves a room.
pub(crate) const LEAVE: &str = "chat_room_leave";
/// A member sends a message to a room.
pub(crate) const SEND: &str = "chat_room_send";
/// A member's read marker moves forward.
pub(crate) const READ: &str = "chat_room_read";
/// The room is listed among the user's rooms before a join, against the
/// rooms-per-user cap (in the user's slot).
pub(crate) const RESERVE: &str = "chat_rooms_reserve";

/// The Lua file, to check it against [`SIGNATURES`].
#[cfg(test)]
pub(super) const LUA: &str = include_str!("../scripts/rooms.lua");

/// The keys and arguments of each function, by the names `rooms.lua` gives them.
#[cfg(test)]
pub(super) const SIGNATURES: &[super::Signature] = &[
    super::Signature::fixed(
        JOIN,
        "meta members names ev ch",
        concat!(
            "user head tail history_max_len history_max_age_secs now_ms ",
            "user_name room_name max_members"
        ),
    ),
    super::Signature::fixed(
        LEAVE,
        "meta members names ev ch",
        "user head tail history_max_len history_max_age_secs now_ms",
    ),
    super::Signature::fixed(
        SEND,
        "meta members ev ch nonce",
        "from head tail nonce_ttl_secs history_max_len history_max_age_secs now_ms",
    ),
    super::Signature::fixed(READ, "meta members ev", "user up_to"),
    super::Signature::fixed(RESERVE, "rooms", "room max_rooms"),
];

fn bad(what: &str) -> EngineError {
    EngineError::Internal(format!("unexpected room reply from redis: {what}"))
}

/// The keys of a join or leave.
fn member_keys(room: &str) -> Vec<String> {
    vec![
        keys::room_meta(room),
        keys::room_members(room),
        keys::room_names(room),
        keys::room_events(room),
        keys::room_channel(room),
    ]
}

/// What every join and leave passes first: the member, the `member` frame's bytes
/// around its id, and what the room's stream keeps (a conversation's history options,
/// `now_ms` being this node's clock).
pub(crate) struct MemberCall<'a> {
    pub room: &'a str,
    pub user: &'a str,
    pub head: String,
    pub tail: String,
    pub retention: &'a Retention,
    pub now_ms: u64,
}

impl MemberCall<'_> {
    fn call(self) -> (Vec<String>, Vec<String>) {
        let mut args = vec![self.user.to_string(), self.head, self.tail];
        args.extend(history_args(self.retention, self.now_ms));
        (member_keys(self.room), args)
    }

    /// Keys and arguments of `chat_room_join`: `user_name` is stored with the member,
    /// `room_name` names a room the join creates, and the room takes at most
    /// `max_members`.
    pub(crate) fn join_call(
        self,
        user_name: &str,
        room_name: &str,
        max_members: u64,
    ) -> (Vec<String>, Vec<String>) {
        let (keys, mut args) = self.call();
        args.extend([
            user_name.to_string(),
            room_name.to_string(),
            max_members.to_string(),
        ]);
        (keys, args)
    }

    /// Keys and arguments of `chat_room_leave`.
    pub(crate) fn leave_call(self) -> (Vec<String>, Vec<String>) {
        self.call()
    }
}

/// Parses a join's or leave's reply: `{1, id, prev}` done (the `member` event's id and
/// the one before it), `{0}` nothing to do (already a member / not one), `{-1}` the
/// room is full (joins).
pub(crate) fn parse_member_reply(
    reply: Value,
) -> Result<(i64, Option<(StreamId, StreamId)>), EngineError> {
    let Value::Array(items) = reply else {
        return Err(bad("join/leave"));
    };
    let code = items
        .first()
        .and_then(|v| v.as_i64())
        .ok_or_else(|| bad("code"))?;
    let ids = match (items.get(1), items.get(2)) {
        (Some(id), Some(prev)) => {
            let parse = |v: &Value| v.as_str().and_then(|s| StreamId::parse(&s));
            Some((
                parse(id).ok_or_else(|| bad("id"))?,
                parse(prev).ok_or_else(|| bad("prev"))?,
            ))
        }
        _ => None,
    };
    Ok((code, ids))
}

/// Keys and arguments of `chat_rooms_reserve`: `room` listed among `user`'s, who may
/// be in at most `max_rooms`.
pub(crate) fn reserve_call(user: &str, room: &str, max_rooms: u64) -> (Vec<String>, Vec<String>) {
    let keys = vec![keys::user_rooms(user)];
    let args = vec![room.to_string(), max_rooms.to_string()];
    (keys, args)
}

/// Parses a `chat_rooms_reserve` reply: 1 listed now, 0 listed already, -1 the cap
/// is reached.
pub(crate) fn parse_reserve_reply(reply: Value) -> Result<i64, EngineError> {
    reply.as_i64().ok_or_else(|| bad("reserve"))
}

/// One `chat_room_send`: `from`'s message, passed as the frame's bytes around its id,
/// with its nonce (kept `nonce_ttl_secs`, at least one).
pub(crate) struct RoomSend<'a> {
    pub room: &'a str,
    pub from: &'a str,
    pub nonce: &'a str,
    pub nonce_ttl_secs: u64,
    pub head: String,
    pub tail: String,
}

impl RoomSend<'_> {
    /// Keys and arguments of the call; the stream keeps what `retention` says, the
    /// age from `now_ms` (this node's clock).
    pub(crate) fn call(self, retention: &Retention, now_ms: u64) -> (Vec<String>, Vec<String>) {
        let keys = vec![
            keys::room_meta(self.room),
            keys::room_members(self.room),
            keys::room_events(self.room),
            keys::room_channel(self.room),
            keys::room_nonce(self.room, self.from, self.nonce),
        ];
        let mut args = vec![
            self.from.to_string(),
            self.head,
            self.tail,
            self.nonce_ttl_secs.max(1).to_string(),
        ];
        args.extend(history_args(retention, now_ms));
        (keys, args)
    }
}

/// What a `chat_room_send` did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RoomSent {
    /// Stored with this id (`{1, id}`).
    Stored(String),
    /// A retried nonce: stored before with this id, nothing stored now (`{2, id}`).
    Duplicate(String),
    /// The sender is not a member (`{0}`).
    NotMember,
}

/// Parses a `chat_room_send` reply.
pub(crate) fn parse_send_reply(reply: Value) -> Result<RoomSent, EngineError> {
    let Value::Array(items) = reply else {
        return Err(bad("send"));
    };
    let code = items
        .first()
        .and_then(|v| v.as_i64())
        .ok_or_else(|| bad("send code"))?;
    let id = items.get(1).and_then(|v| v.as_str()).map(|s| s.to_string());
    Ok(match (code, id) {
        (1, Some(id)) => RoomSent::Stored(id),
        (2, Some(id)) => RoomSent::Duplicate(id),
        _ => RoomSent::NotMember,
    })
}

/// Keys and arguments of `chat_room_read`: `user`'s marker moves up to `up_to`.
pub(crate) fn read_call(room: &str, user: &str, up_to: StreamId) -> (Vec<String>, Vec<String>) {
    let keys = vec![
        keys::room_meta(room),
        keys::room_members(room),
        keys::room_events(room),
    ];
    (keys, vec![user.to_string(), up_to.to_string()])
}

/// Parses a `chat_room_read` reply: the marker's new message id, or `None` when
/// nothing moved (`''`).
pub(crate) fn parse_read_reply(reply: Value) -> Option<String> {
    text(reply).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(name: &str) -> &'static super::super::Signature {
        SIGNATURES
            .iter()
            .find(|s| s.name == name)
            .expect("a signature")
    }

    #[test]
    fn calls_put_each_value_where_the_lua_names_it() {
        let retention = Retention::default();
        let change = || MemberCall {
            room: "lobby",
            user: "alice",
            head: "<".into(),
            tail: ">".into(),
            retention: &retention,
            now_ms: 7,
        };
        let (keys, args) = change().join_call("Alice", "The lobby", 50);
        let join = signature(JOIN);
        join.check_call(&keys, &args, 0);
        assert_eq!(join.key(&keys, "names"), keys::room_names("lobby"));
        assert_eq!(join.key(&keys, "ch"), keys::room_channel("lobby"));
        let arg = |name| join.arg(&args, name);
        assert_eq!([arg("user"), arg("head"), arg("tail")], ["alice", "<", ">"]);
        assert_eq!(arg("now_ms"), "7");
        let names = [arg("user_name"), arg("room_name"), arg("max_members")];
        assert_eq!(names, ["Alice", "The lobby", "50"]);
        let (keys, args) = change().leave_call();
        let leave = signature(LEAVE);
        leave.check_call(&keys, &args, 0);
        let max_len = retention.history_max_len.to_string();
        assert_eq!(leave.arg(&args, "history_max_len"), max_len);

        let (keys, args) = RoomSend {
            room: "lobby",
            from: "alice",
            nonce: "n1",
            nonce_ttl_secs: 0,
            head: "<".into(),
            tail: ">".into(),
        }
        .call(&retention, 7);
        let send = signature(SEND);
        send.check_call(&keys, &args, 0);
        let nonce = keys::room_nonce("lobby", "alice", "n1");
        assert_eq!(send.key(&keys, "nonce"), nonce);
        assert_eq!(send.arg(&args, "nonce_ttl_secs"), "1", "at least a second");
        assert_eq!(send.arg(&args, "now_ms"), "7");

        let (keys, args) = read_call("lobby", "alice", StreamId::parse("5-1").unwrap());
        let read = signature(READ);
        read.check_call(&keys, &args, 0);
        assert_eq!(read.arg(&args, "up_to"), "5-1");
        let (keys, args) = reserve_call("alice", "lobby", 3);
        let reserve = signature(RESERVE);
        reserve.check_call(&keys, &args, 0);
        assert_eq!(reserve.key(&keys, "rooms"), keys::user_rooms("alice"));
        assert_eq!(reserve.arg(&args, "max_rooms"), "3");
        let slot = |k: &str| fred::util::redis_keyslot(k.as_bytes());
        let (keys, _) = change().join_call("Alice", "The lobby", 50);
        assert!(keys.iter().all(|k| slot(k) == slot(&nonce)));
    }

    #[test]
    fn replies_parse() {
        let s = |t: &str| Value::String(t.into());
        let joined = Value::Array(vec![Value::Integer(1), s("5-1"), s("4-0")]);
        let (code, ids) = parse_member_reply(joined).unwrap();
        assert_eq!(code, 1);
        let id = |t| StreamId::parse(t).unwrap();
        assert_eq!(ids, Some((id("5-1"), id("4-0"))));
        let full = Value::Array(vec![Value::Integer(-1)]);
        assert_eq!(parse_member_reply(full).unwrap(), (-1, None));
        assert!(parse_member_reply(Value::Null).is_err());
        let stored = Value::Array(vec![Value::Integer(1), s("5-1")]);
        assert_eq!(
            parse_send_reply(stored).unwrap(),
            RoomSent::Stored("5-1".into())
        );
        let again = Value::Array(vec![Value::Integer(2), s("5-1")]);
        let duplicate = RoomSent::Duplicate("5-1".into());
        assert_eq!(parse_send_reply(again).unwrap(), duplicate);
        let refused = Value::Array(vec![Value::Integer(0)]);
        assert_eq!(parse_send_reply(refused).unwrap(), RoomSent::NotMember);
        assert_eq!(parse_read_reply(s("")), None);
        assert_eq!(parse_read_reply(s("5-1")).as_deref(), Some("5-1"));
        assert_eq!(parse_reserve_reply(Value::Integer(-1)).unwrap(), -1);
    }
}
