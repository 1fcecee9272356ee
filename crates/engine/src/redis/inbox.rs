//! The stored form of inbox and conversation entries, and what the node rebuilds from
//! them.
//!
//! `inbox.lua` appends each event to a user's inbox as one field holding the event
//! without what the inbox's owner implies (the conversation is the owner's and the
//! other participant's; the sender of a message and the reader of a receipt is one of
//! the two), so an entry costs about half of the event JSON it stands for:
//!
//! - a message: `m` = `<d><other> <message id> <sent_at> <body>`;
//! - a read receipt: `r` = `<d><other> <id read up to>`;
//! - a clear of the conversation: `c` = `><other> <newest message cleared>`;
//!
//! with `<d>` `>` when the owner sent (or read) and `<` when the other participant did.
//! Entries carry no link to their predecessor: a read in order knows it (and the live
//! copy, published by the same function, carries it). The JSON rebuilt here is byte
//! for byte the one published live (the message through the protocol crate's
//! serialization, which the node also passes to Lua).
//!
//! A conversation stream entry is one field `m` = `<sequence> <sender> <sent_at> <body>`
//! ([`conversation_message`]).

use bytes::Bytes;
use chat_protocol::{dm_conversation, Event, Message, StreamId};

use super::conn::Entry;
use crate::{EngineError, InboxEvent};

/// The inbox event an entry of `owner`'s inbox stands for; `prev` is the id of the
/// entry before it.
pub(crate) fn event(owner: &str, entry: &Entry, prev: StreamId) -> Result<InboxEvent, EngineError> {
    let bad = || EngineError::Internal(format!("corrupt inbox entry {} of {owner}", entry.id));
    let (kind, value) = entry.fields.first().ok_or_else(bad)?;
    let value = std::str::from_utf8(value).map_err(|_| bad())?;
    let (head, rest) = value.split_once(' ').ok_or_else(bad)?;
    let (by_owner, other) = match head.split_at_checked(1) {
        Some((">", other)) => (true, other),
        Some(("<", other)) => (false, other),
        _ => return Err(bad()),
    };
    let (actor, counterpart) = if by_owner {
        (owner, other)
    } else {
        (other, owner)
    };
    let conversation = dm_conversation(owner, other);
    let json = match kind.as_str() {
        "m" => {
            let mut parts = rest.splitn(3, ' ');
            let (Some(id), Some(sent_at), Some(body)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let message = Message {
                id: id.to_string(),
                conversation,
                from: actor.to_string(),
                to: counterpart.to_string(),
                body: body.to_string(),
                sent_at: sent_at.to_string(),
                room: None,
            };
            Event::Message { message: &message }.to_json()
        }
        "r" => Event::Read {
            conversation: &conversation,
            by: actor,
            up_to: rest,
        }
        .to_json(),
        "c" => Event::Cleared {
            conversation: &conversation,
            up_to: rest,
        }
        .to_json(),
        _ => return Err(bad()),
    };
    Ok(InboxEvent {
        id: StreamId::parse(&entry.id).ok_or_else(bad)?,
        prev,
        json: Bytes::from(json),
        trace: None,
    })
}

/// Whether an entry of an inbox is a message that a clear of its conversation
/// deleted: `cleared` maps the other participant to the newest message cleared (the
/// inbox's `clr` hash).
pub(crate) fn hidden_by_clear(entry: &Entry, cleared: &[(String, StreamId)]) -> bool {
    if cleared.is_empty() {
        return false;
    }
    let Some(value) = entry.bytes("m") else {
        return false;
    };
    let Ok(value) = std::str::from_utf8(value) else {
        return false;
    };
    let mut parts = value.splitn(3, ' ');
    let (Some(head), Some(id)) = (parts.next(), parts.next()) else {
        return false;
    };
    let other = head.get(1..).unwrap_or("");
    let Some(id) = StreamId::parse(id) else {
        return false;
    };
    cleared
        .iter()
        .any(|(peer, up_to)| peer == other && id <= *up_to)
}

/// The message a conversation stream entry of the conversation between `a` and `b`
/// holds (its recipient is the participant that is not the sender).
pub(crate) fn conversation_message(a: &str, b: &str, entry: Entry) -> Result<Message, EngineError> {
    let bad = || EngineError::Internal(format!("corrupt conversation entry {}", entry.id));
    let value = entry.bytes("m").ok_or_else(bad)?;
    let value = std::str::from_utf8(value).map_err(|_| bad())?;
    let mut parts = value.splitn(4, ' ');
    let (Some(_seq), Some(from), Some(sent_at), Some(body)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let to = if from == a { b } else { a };
    Ok(Message {
        conversation: dm_conversation(a, b),
        from: from.to_string(),
        to: to.to_string(),
        body: body.to_string(),
        sent_at: sent_at.to_string(),
        id: entry.id,
        room: None,
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
        let body = "say \"hi\" 👋 with  spaces\nand a line";
        let message = Message {
            id: "5-1".into(),
            conversation: "dm:alice:bob".into(),
            from: "bob".into(),
            to: "alice".into(),
            body: body.into(),
            sent_at: "2026-01-01T00:00:00.000Z".into(),
            room: None,
        };
        let stored = |who: &str| format!("{who} 5-1 2026-01-01T00:00:00.000Z {body}");
        let expected = Event::Message { message: &message }.to_json();
        let prev = StreamId::parse("4-0").unwrap();
        let bob = event("bob", &entry("9-0", &[("m", &stored(">alice"))]), prev).unwrap();
        let alice = event("alice", &entry("9-0", &[("m", &stored("<bob"))]), prev).unwrap();
        assert_eq!(bob.json, expected.as_bytes());
        assert_eq!(alice.json, expected.as_bytes());
        assert_eq!(bob.prev, prev);
        assert_eq!(bob.id, StreamId::parse("9-0").unwrap());
    }

    #[test]
    fn read_receipts_are_rebuilt_for_either_side() {
        let expected = Event::Read {
            conversation: "dm:alice:bob",
            by: "alice",
            up_to: "5-1",
        }
        .to_json();
        let alice = entry("9-0", &[("r", ">bob 5-1")]);
        let bob = entry("9-0", &[("r", "<alice 5-1")]);
        let zero = StreamId::ZERO;
        assert_eq!(
            event("alice", &alice, zero).unwrap().json,
            expected.as_bytes()
        );
        assert_eq!(event("bob", &bob, zero).unwrap().json, expected.as_bytes());
    }

    #[test]
    fn conversation_entries_name_sender_and_recipient() {
        let e = entry("7-0", &[("m", "3 bob 2026-01-01T00:00:00.000Z a b  c")]);
        let m = conversation_message("alice", "bob", e).unwrap();
        assert_eq!((m.from.as_str(), m.to.as_str()), ("bob", "alice"));
        assert_eq!(m.body, "a b  c");
        assert_eq!(m.conversation, "dm:alice:bob");
        assert_eq!(m.id, "7-0");
        let e = entry("7-0", &[("m", "3 bob 2026-01-01T00:00:00.000Z ")]);
        assert_eq!(conversation_message("bob", "alice", e).unwrap().body, "");
        assert!(conversation_message("a", "b", entry("1-0", &[("m", "3 a")])).is_err());
    }

    #[test]
    fn corrupt_entries_are_errors() {
        let zero = StreamId::ZERO;
        assert!(event("a", &entry("1-0", &[("m", "b 1-0 t x")]), zero).is_err());
        assert!(event("a", &entry("1-0", &[("m", ">b 1-0")]), zero).is_err());
        assert!(event("a", &entry("1-0", &[("x", ">b 1-0")]), zero).is_err());
        assert!(event("a", &entry("x", &[("r", "<b 1-0")]), zero).is_err());
    }
}
