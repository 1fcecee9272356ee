//! The stored form of an inbox entry, and the event JSON the node rebuilds from it.
//!
//! `chat.lua` appends each event to a user's inbox without what the inbox's owner
//! implies (the conversation is the owner's and the other participant's; the sender of
//! a message and the reader of a receipt are one of the two), so an entry costs about
//! half of the event JSON it stands for. Fields after `p` (the previous entry's id):
//!
//! - a message: `m` message id, `o` the other participant, `d` `>` (the owner sent it)
//!   or `<` (received), `b` body, `s` sent_at;
//! - a read receipt: `r` the id read up to, `o` the other participant, `d` `>` (the
//!   owner read) or `<` (the other participant read).
//!
//! The live copy of an event is published as JSON by the same function; the JSON
//! rebuilt here is byte for byte the same (the message through the protocol crate's
//! serialization, as the node passes it to Lua).

use bytes::Bytes;
use chat_protocol::{dm_conversation, Message, StreamId};

use super::conn::Entry;
use crate::events::{message_event_json, read_event_json};
use crate::{EngineError, InboxEvent};

/// The inbox event an entry of `owner`'s inbox stands for.
pub(crate) fn event(owner: &str, entry: &Entry) -> Result<InboxEvent, EngineError> {
    let bad = || EngineError::Internal(format!("corrupt inbox entry {} of {owner}", entry.id));
    let other = entry.text("o");
    let sent_by_owner = match entry.text("d").as_str() {
        ">" => true,
        "<" => false,
        _ => return Err(bad()),
    };
    let (actor, counterpart) = if sent_by_owner {
        (owner.to_string(), other.clone())
    } else {
        (other.clone(), owner.to_string())
    };
    let conversation = dm_conversation(owner, &other);
    let json = if let Some(id) = entry.bytes("m") {
        message_event_json(&Message {
            id: String::from_utf8_lossy(id).into_owned(),
            conversation,
            from: actor,
            to: counterpart,
            body: entry.text("b"),
            sent_at: entry.text("s"),
        })
    } else if let Some(up_to) = entry.bytes("r") {
        read_event_json(&conversation, &actor, &String::from_utf8_lossy(up_to))
    } else {
        return Err(bad());
    };
    Ok(InboxEvent {
        id: StreamId::parse(&entry.id).ok_or_else(bad)?,
        prev: StreamId::parse(&entry.text("p")).ok_or_else(bad)?,
        json: Bytes::from(json),
        trace: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, fields: &[(&str, &str)]) -> Entry {
        Entry {
            id: id.into(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), Bytes::from(v.to_string())))
                .collect(),
        }
    }

    #[test]
    fn messages_are_rebuilt_for_either_side() {
        let message = Message {
            id: "5-1".into(),
            conversation: "dm:alice:bob".into(),
            from: "bob".into(),
            to: "alice".into(),
            body: "say \"hi\" 👋".into(),
            sent_at: "2026-01-01T00:00:00.000Z".into(),
        };
        let fields = |other, dir| {
            vec![
                ("p", "4-0"),
                ("m", "5-1"),
                ("o", other),
                ("d", dir),
                ("b", "say \"hi\" 👋"),
                ("s", "2026-01-01T00:00:00.000Z"),
            ]
        };
        let expected = message_event_json(&message);
        let bob = event("bob", &entry("9-0", &fields("alice", ">"))).unwrap();
        let alice = event("alice", &entry("9-0", &fields("bob", "<"))).unwrap();
        assert_eq!(bob.json, expected.as_bytes());
        assert_eq!(alice.json, expected.as_bytes());
        assert_eq!(bob.prev, StreamId::parse("4-0").unwrap());
        assert_eq!(bob.id, StreamId::parse("9-0").unwrap());
    }

    #[test]
    fn read_receipts_are_rebuilt_for_either_side() {
        let expected = read_event_json("dm:alice:bob", "alice", "5-1");
        let alice = entry(
            "9-0",
            &[("p", "0-0"), ("r", "5-1"), ("o", "bob"), ("d", ">")],
        );
        let bob = entry(
            "9-0",
            &[("p", "0-0"), ("r", "5-1"), ("o", "alice"), ("d", "<")],
        );
        assert_eq!(event("alice", &alice).unwrap().json, expected.as_bytes());
        assert_eq!(event("bob", &bob).unwrap().json, expected.as_bytes());
    }

    #[test]
    fn corrupt_entries_are_errors() {
        assert!(event("a", &entry("1-0", &[("p", "0-0"), ("o", "b"), ("d", ">")])).is_err());
        assert!(event(
            "a",
            &entry("1-0", &[("p", "0-0"), ("m", "1-0"), ("o", "b")])
        )
        .is_err());
        assert!(event(
            "a",
            &entry("x", &[("p", "0-0"), ("r", "1-0"), ("o", "b"), ("d", "<")])
        )
        .is_err());
    }
}
