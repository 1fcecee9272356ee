//! The pub/sub payloads: every form is written and parsed here (the Lua library
//! writes the forms whose ids only it knows, from bytes this module hands it, and the
//! `lua_shapes` tests compare what it wrote with [`inbox`] and [`ReapTemplate`]).
//!
//! On a user's channel ([`super::keys::channel`], sharded pub/sub):
//! - `"<id> <prev> <event json>"`, or `"<id> <prev> t=<traceparent> <event json>"`: an
//!   inbox event, with the id of the inbox entry before it (written by Lua's
//!   `inbox_append`);
//! - `"- - <frame json>"`: an ephemeral frame (typing, a partner's presence);
//! - `"! disconnect"`: close the user's connections on every node;
//! - `"@ <room> <room event payload>"`: a `member` event about the user (rooms).
//!
//! On a room's channel ([`super::keys::room_channel`], sharded pub/sub):
//! `"<id> <prev> <flag> <frame json>"`, flag `-` for a message, `+<user>` joined,
//! `~<user>` left (written by Lua's `room_append`).
//!
//! On the global presence channel ([`super::keys::PRESENCE_CHANNEL`], plain pub/sub):
//! `"<user id> <presence frame json>"`.

use std::sync::Arc;

use bytes::Bytes;
use chat_protocol::{Event, StreamId};

use crate::{InboxEvent, LiveEvent};

/// The payload closing a user's connections on every node.
pub(crate) const DISCONNECT: &str = "! disconnect";

/// An inbox event's payload (as Lua's `inbox_append` writes it).
#[cfg(test)]
pub(crate) fn inbox(id: StreamId, prev: StreamId, trace: Option<&str>, event: &str) -> String {
    match trace {
        Some(trace) => format!("{id} {prev} t={trace} {event}"),
        None => format!("{id} {prev} {event}"),
    }
}

/// An ephemeral frame's payload on a user's channel.
pub(crate) fn ephemeral(frame: &str) -> String {
    format!("- - {frame}")
}

/// A presence frame's payload on the global presence channel.
pub(crate) fn presence(user: &str, frame: &str) -> String {
    format!("{user} {frame}")
}

/// Both payloads of a presence transition: to each partner's channel, and on the
/// global channel.
pub(crate) struct Transition {
    pub partner: String,
    pub global: String,
}

impl Transition {
    /// The payloads of `user` going online, or offline at `seen`.
    pub(crate) fn new(user: &str, online: bool, seen: Option<&str>) -> Transition {
        let frame = Event::Presence {
            user,
            online,
            last_seen_at: if online { None } else { seen },
        }
        .to_json();
        Transition {
            partner: ephemeral(&frame),
            global: presence(user, &frame),
        }
    }
}

/// The offline payloads of users only Lua knows (a dead node's, `chat_reap_batch`),
/// as the bytes around the user ids: partner = `before + user + after`, global =
/// `user + between + user + after`.
pub(crate) struct ReapTemplate {
    pub before: String,
    pub between: String,
    pub after: String,
}

impl ReapTemplate {
    /// The template of going offline at `seen`.
    pub(crate) fn offline(seen: &str) -> ReapTemplate {
        let frame = Event::Presence {
            user: "",
            online: false,
            last_seen_at: Some(seen),
        }
        .to_json();
        // User ids need no escaping (chat_protocol::valid_user_id).
        const USER: &str = r#""user":""#;
        let at = frame.find(USER).map(|i| i + USER.len()).unwrap_or(0);
        let (head, tail) = frame.split_at(at);
        ReapTemplate {
            before: ephemeral(head),
            between: presence("", head),
            after: tail.to_string(),
        }
    }
}

/// A room event's payload on a room channel.
pub(crate) fn room_event(event: &crate::RoomEvent) -> String {
    let flag = match &event.change {
        None => "-".to_string(),
        Some((user, true)) => format!("+{user}"),
        Some((user, false)) => format!("~{user}"),
    };
    format!(
        "{} {} {flag} {}",
        event.id,
        event.prev,
        String::from_utf8_lossy(&event.json)
    )
}

/// A `member` event's payload on the user's channel.
pub(crate) fn room_notice(event: &crate::RoomEvent) -> String {
    format!("@ {} {}", event.room, room_event(event))
}

/// Parses a room channel's payload.
pub(crate) fn parse_room(room: &str, payload: Bytes) -> Option<crate::RoomEvent> {
    let mut at = 0;
    let mut token = || {
        let start = at;
        let len = payload[start..].iter().position(|&b| b == b' ')?;
        at = start + len + 1;
        std::str::from_utf8(&payload[start..start + len]).ok()
    };
    let id = StreamId::parse(token()?)?;
    let prev = StreamId::parse(token()?)?;
    let flag = token()?;
    let change = match flag.split_at_checked(1)? {
        ("-", "") => None,
        ("+", user) if !user.is_empty() => Some((user.to_string(), true)),
        ("~", user) if !user.is_empty() => Some((user.to_string(), false)),
        _ => return None,
    };
    Some(crate::RoomEvent {
        room: room.to_string(),
        id,
        prev,
        json: payload.slice(at..),
        change,
    })
}

/// Parses a user channel's payload (any of the forms above).
pub(crate) fn parse(payload: Bytes) -> Option<LiveEvent> {
    if payload.as_ref() == DISCONNECT.as_bytes() {
        return Some(LiveEvent::Disconnect);
    }
    if let Some(rest) = payload.strip_prefix(b"@ ") {
        let end = rest.iter().position(|&b| b == b' ')?;
        let room = std::str::from_utf8(&rest[..end]).ok()?.to_string();
        let event = parse_room(&room, payload.slice(2 + end + 1..))?;
        return Some(LiveEvent::Room(Arc::new(event)));
    }
    let first = payload.iter().position(|&b| b == b' ')?;
    let second = first + 1 + payload[first + 1..].iter().position(|&b| b == b' ')?;
    let json = payload.slice(second + 1..);
    let id = &payload[..first];
    if id == b"-" {
        return Some(LiveEvent::Ephemeral(json));
    }
    let id = StreamId::parse(std::str::from_utf8(id).ok()?)?;
    let prev = StreamId::parse(std::str::from_utf8(&payload[first + 1..second]).ok()?)?;
    let (trace, json) = match json.strip_prefix(b"t=") {
        Some(rest) => {
            let end = rest.iter().position(|&b| b == b' ')?;
            let trace = std::str::from_utf8(&rest[..end]).ok()?.to_string();
            (Some(trace), json.slice(2 + end + 1..))
        }
        None => (None, json),
    };
    Some(LiveEvent::Inbox(Arc::new(InboxEvent {
        id,
        prev,
        json,
        trace,
    })))
}

/// Parses a global presence payload: the user and the frame.
pub(crate) fn parse_presence(payload: Bytes) -> Option<(String, Bytes)> {
    let space = payload.iter().position(|&b| b == b' ')?;
    let user = std::str::from_utf8(&payload[..space]).ok()?.to_string();
    Some((user, payload.slice(space + 1..)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_payloads_round_trip() {
        for change in [
            None,
            Some(("alice".to_string(), true)),
            Some(("bob".to_string(), false)),
        ] {
            let event = crate::RoomEvent {
                room: "lobby".into(),
                id: StreamId { ms: 5, seq: 1 },
                prev: StreamId { ms: 4, seq: 0 },
                json: Bytes::from_static(br#"{"type":"member","x":"a b"}"#),
                change,
            };
            let bytes = Bytes::from(room_event(&event));
            assert_eq!(parse_room("lobby", bytes), Some(event.clone()));
            let Some(LiveEvent::Room(parsed)) = parse(Bytes::from(room_notice(&event))) else {
                panic!("a room notice");
            };
            assert_eq!(*parsed, event);
        }
    }

    fn bytes(s: String) -> Bytes {
        Bytes::from(s)
    }

    #[test]
    fn written_forms_parse_back() {
        let (id, prev) = (StreamId { ms: 5, seq: 1 }, StreamId::ZERO);
        match parse(bytes(inbox(id, prev, None, r#"{"a":1}"#))) {
            Some(LiveEvent::Inbox(e)) => {
                assert_eq!((e.id, e.prev, e.trace.as_deref()), (id, prev, None));
                assert_eq!(&e.json[..], br#"{"a":1}"#);
            }
            other => panic!("{other:?}"),
        }
        match parse(bytes(inbox(id, prev, Some("00-abc-def-01"), r#"{"a":2}"#))) {
            Some(LiveEvent::Inbox(e)) => {
                assert_eq!(e.trace.as_deref(), Some("00-abc-def-01"));
                assert_eq!(&e.json[..], br#"{"a":2}"#);
            }
            other => panic!("{other:?}"),
        }
        let typing = Event::Typing { from: "a" }.to_json();
        match parse(bytes(ephemeral(&typing))) {
            Some(LiveEvent::Ephemeral(b)) => assert_eq!(b, typing.as_bytes()),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(Bytes::from_static(DISCONNECT.as_bytes())),
            Some(LiveEvent::Disconnect)
        ));
        assert!(parse(Bytes::from_static(b"! other")).is_none());
        assert!(parse(Bytes::from_static(b"garbage")).is_none());
        let t = Transition::new("hal", false, Some("2026-01-01T00:00:00.000Z"));
        let frame = Event::Presence {
            user: "hal",
            online: false,
            last_seen_at: Some("2026-01-01T00:00:00.000Z"),
        }
        .to_json();
        match parse(bytes(t.partner)) {
            Some(LiveEvent::Ephemeral(b)) => assert_eq!(b, frame.as_bytes()),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_presence(bytes(t.global)),
            Some(("hal".to_string(), Bytes::from(frame)))
        );
        assert!(parse_presence(Bytes::from_static(b"nospace")).is_none());
    }

    #[test]
    fn reap_template_rebuilds_the_transition() {
        let template = ReapTemplate::offline("2026-01-01T00:00:00.000Z");
        let user = "a.b@c-d";
        let t = Transition::new(user, false, Some("2026-01-01T00:00:00.000Z"));
        assert_eq!(
            format!("{}{user}{}", template.before, template.after),
            t.partner
        );
        assert_eq!(
            format!("{user}{}{user}{}", template.between, template.after),
            t.global
        );
        assert_eq!(
            Transition::new(user, true, None).global,
            format!(r#"{user} {{"type":"presence","user":"{user}","online":true}}"#)
        );
    }
}
