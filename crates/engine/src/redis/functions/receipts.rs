//! `scripts/receipts.lua`: read markers.
//!
//! On one Redis a read receipt is `chat_read` (the marker and both inboxes in one
//! call). On a cluster it is `chat_read_marker` in the conversation's slot, then a
//! `chat_inbox_append` of kind `r` for each participant ([`super::send`]). This module
//! builds the keys and arguments of `chat_read` in the order its Lua names them and
//! parses both functions' replies; it never calls Redis.

use chat_protocol::{dm_conversation, Event, StreamId};
use fred::prelude::*;

use super::super::conn::text;
use super::super::keys;
use crate::{EngineError, Retention};

/// Moves a read marker and tells both participants (single Redis).
pub(crate) const READ: &str = "chat_read";
/// Cluster mode: the conversation half of a read receipt.
pub(crate) const READ_MARKER: &str = "chat_read_marker";

/// The Lua file, to check it against [`SIGNATURES`].
#[cfg(test)]
pub(super) const LUA: &str = include_str!("../scripts/receipts.lua");

/// The keys and arguments of each function, by the names `receipts.lua` gives them.
#[cfg(test)]
pub(super) const SIGNATURES: &[super::Signature] = &[
    super::Signature::fixed(READ_MARKER, "msgs meta", "reader up_to"),
    super::Signature::fixed(
        READ,
        "msgs meta reader_inbox reader_head reader_ch peer_inbox peer_head peer_ch",
        "reader peer up_to inbox_max_len inbox_ttl_secs event_head event_tail",
    ),
];

/// Keys and arguments of `chat_read` (single Redis): the read event is passed as
/// the bytes around its `up_to` id, which only the function knows.
pub(crate) fn read_call(
    reader: &str,
    peer: &str,
    up_to: StreamId,
    retention: &Retention,
) -> (Vec<String>, Vec<String>) {
    let keys = vec![
        keys::conv_msgs(reader, peer),
        keys::conv_meta(reader, peer),
        keys::inbox(reader),
        keys::inbox_head(reader),
        keys::channel(reader),
        keys::inbox(peer),
        keys::inbox_head(peer),
        keys::channel(peer),
    ];
    let conversation = dm_conversation(reader, peer);
    let (event_head, event_tail) = Event::Read {
        conversation: &conversation,
        by: reader,
        up_to: "",
    }
    .split_at_id()
    .expect("a read event with a blank up_to splits");
    let args = vec![
        reader.to_string(),
        peer.to_string(),
        up_to.to_string(),
        retention.inbox_max_len.to_string(),
        retention.inbox_ttl_secs.to_string(),
        event_head,
        event_tail,
    ];
    (keys, args)
}

/// Parses the reply of `chat_read` or `chat_read_marker`: `{1, id}` when the marker
/// moved to `id`, `{0, ''}` when nothing moved.
pub(crate) fn parse_read_reply(reply: Value) -> Result<Option<String>, EngineError> {
    let bad = || EngineError::Internal("unexpected chat_read reply".into());
    let Value::Array(parts) = reply else {
        return Err(bad());
    };
    let [moved, id] = <[Value; 2]>::try_from(parts).map_err(|_| bad())?;
    match moved {
        Value::Integer(1) => text(id).map(Some).ok_or_else(bad),
        Value::Integer(0) => Ok(None),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_calls_pass_the_event_around_its_id() {
        let up_to = StreamId::parse("5-1").unwrap();
        let (keys, args) = read_call("bob", "alice", up_to, &Retention::default());
        let read = &SIGNATURES[1];
        read.check_call(&keys, &args, 0);
        assert_eq!(read.key(&keys, "reader_ch"), keys::channel("bob"));
        assert_eq!(read.key(&keys, "peer_head"), keys::inbox_head("alice"));
        let arg = |name| read.arg(&args, name);
        assert_eq!(
            [arg("reader"), arg("peer"), arg("up_to")],
            ["bob", "alice", "5-1"]
        );
        let event = Event::Read {
            conversation: "dm:alice:bob",
            by: "bob",
            up_to: "7-0",
        };
        let built = format!("{}7-0{}", arg("event_head"), arg("event_tail"));
        assert_eq!(built, event.to_json());
        let s = |t: &str| Value::String(t.into());
        let moved = Value::Array(vec![Value::Integer(1), s("7-0")]);
        assert_eq!(parse_read_reply(moved).unwrap().as_deref(), Some("7-0"));
        let still = Value::Array(vec![Value::Integer(0), s("")]);
        assert_eq!(parse_read_reply(still).unwrap(), None);
        assert!(parse_read_reply(Value::Null).is_err());
    }
}
