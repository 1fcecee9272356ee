//! Rooms (protocol 1.1): group conversations any number of users join.
//!
//! The room frames' payload types live here; their [`ClientFrame`]/[`ServerFrame`]
//! variants are one block at the end of each enum in `frames.rs`. `send`, `history`
//! and `read` with `"room"` in place of `to`/`with` are read by [`parse_room_request`]
//! when the 1:1 form does not fit, so a 1:1 frame costs nothing extra.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{ClientFrame, Message, User, UserInfo};

/// Longest room id.
pub const MAX_ROOM_ID: usize = 64;
/// Longest room name (set by the join that creates the room).
pub const MAX_ROOM_NAME: usize = 64;
/// Members listed in `joined` and per `members` page.
pub const MEMBERS_PAGE: usize = 100;

/// A room id is 1–64 characters of `a-z`, `0-9`, `_`, `-`: no `:` or braces, so it
/// joins into conversation ids and Redis hash tags without escaping.
pub fn valid_room_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ROOM_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// The conversation id of a room's messages.
pub fn room_conversation(room: &str) -> String {
    format!("room:{room}")
}

/// A room as `joined` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub id: String,
    pub name: String,
    pub member_count: u64,
    /// The first members (at most [`MEMBERS_PAGE`]); `members` pages through the rest.
    pub members: Vec<UserInfo>,
    pub last: Option<Message>,
}

/// One entry of the `rooms` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomItem {
    pub id: String,
    pub name: String,
    pub member_count: u64,
    pub unread: u64,
    pub last: Option<Message>,
}

/// A room named inside `welcome.unread`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRef {
    pub id: String,
    pub name: String,
}

/// One entry of `welcome.rooms`: whether the room's events after the id the client
/// sent were all replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecovery {
    pub recovered: bool,
}

/// `welcome.rooms`: room id → recovery.
pub type RoomsRecovered = BTreeMap<String, RoomRecovery>;

/// `member.event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    Joined,
    Left,
}

/// The `member` event as stored in a room's stream, serialized without its `id`:
/// `{"type":"member","room","event","user"}`. [`MemberEvent::split_at_id`] gives the
/// bytes around the id, which only the store assigns.
#[derive(Debug, Clone, Serialize)]
pub struct MemberEvent<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub room: &'a str,
    pub event: MemberChange,
    pub user: &'a User,
}

impl<'a> MemberEvent<'a> {
    pub fn new(room: &'a str, event: MemberChange, user: &'a User) -> Self {
        MemberEvent {
            kind: "member",
            room,
            event,
            user,
        }
    }

    /// `head + id + tail` is the `member` frame with that id (ids need no escaping).
    pub fn split_at_id(&self) -> (String, String) {
        let mut json = serde_json::to_string(self).unwrap_or_default();
        json.pop();
        json.push_str(r#","id":""#);
        (json, "\"}".to_string())
    }

    /// The whole frame with `id`.
    pub fn with_id(&self, id: &str) -> String {
        let (head, tail) = self.split_at_id();
        format!("{head}{id}{tail}")
    }
}

/// `send`, `history` and `read` naming a room: the forms the 1:1 variants do not read.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum RoomRequest {
    Send {
        #[serde(default, rename = "ref")]
        reference: Option<String>,
        room: String,
        body: String,
        #[serde(default)]
        nonce: Option<String>,
    },
    History {
        #[serde(default, rename = "ref")]
        reference: Option<String>,
        room: String,
        #[serde(default)]
        before: Option<String>,
        #[serde(default)]
        limit: Option<u32>,
    },
    Read {
        #[serde(default, rename = "ref")]
        reference: Option<String>,
        room: String,
        up_to: String,
    },
}

/// Reads a `send`/`history`/`read` frame that names a `room`; `None` when it is not
/// one (the caller then reports the 1:1 form's error).
pub(crate) fn parse_room_request(text: &str) -> Option<ClientFrame> {
    Some(match serde_json::from_str::<RoomRequest>(text).ok()? {
        RoomRequest::Send {
            reference,
            room,
            body,
            nonce,
        } => ClientFrame::RoomSend {
            reference,
            room,
            body,
            nonce,
        },
        RoomRequest::History {
            reference,
            room,
            before,
            limit,
        } => ClientFrame::RoomHistory {
            reference,
            room,
            before,
            limit,
        },
        RoomRequest::Read {
            reference,
            room,
            up_to,
        } => ClientFrame::RoomRead {
            reference,
            room,
            up_to,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_client_frame, ServerFrame};

    #[test]
    fn room_ids() {
        assert!(valid_room_id("lobby"));
        assert!(valid_room_id("team_1-a"));
        assert!(!valid_room_id(""));
        assert!(!valid_room_id("Lobby"));
        assert!(!valid_room_id("a:b"));
        assert!(!valid_room_id(&"a".repeat(65)));
    }

    #[test]
    fn room_forms_of_send_history_read() {
        let f =
            parse_client_frame(r#"{"type":"send","ref":"c9","room":"lobby","body":"hi"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::RoomSend {
                reference: Some("c9".into()),
                room: "lobby".into(),
                body: "hi".into(),
                nonce: None
            }
        );
        // Serialized, it is the same wire frame again.
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains(r#""type":"send""#), "{json}");
        assert_eq!(parse_client_frame(&json).unwrap(), f);
        let f = parse_client_frame(r#"{"type":"history","room":"lobby","limit":5}"#).unwrap();
        assert!(matches!(f, ClientFrame::RoomHistory { limit: Some(5), .. }));
        let f = parse_client_frame(r#"{"type":"read","room":"lobby","up_to":"1-0"}"#).unwrap();
        assert!(matches!(f, ClientFrame::RoomRead { .. }));
        // A 1:1 send stays one; neither form names the missing field of the 1:1 form.
        let f = parse_client_frame(r#"{"type":"send","to":"bob","body":"x"}"#).unwrap();
        assert!(matches!(f, ClientFrame::Send { .. }));
        let e = parse_client_frame(r#"{"type":"send","ref":"r","body":"x"}"#).unwrap_err();
        assert!(e.message.contains("`to`"), "{}", e.message);
    }

    #[test]
    fn room_requests_parse() {
        let f =
            parse_client_frame(r#"{"type":"join","ref":"j1","room":"lobby","name":"The lobby"}"#)
                .unwrap();
        assert_eq!(f.reference(), Some("j1"));
        assert!(
            matches!(f, ClientFrame::Join { ref name, .. } if name.as_deref() == Some("The lobby"))
        );
        assert!(matches!(
            parse_client_frame(r#"{"type":"members","ref":"m","room":"x","after":"u"}"#).unwrap(),
            ClientFrame::Members { .. }
        ));
        assert!(matches!(
            parse_client_frame(r#"{"type":"rooms"}"#).unwrap(),
            ClientFrame::Rooms { .. }
        ));
        assert!(matches!(
            parse_client_frame(r#"{"type":"leave","room":"x"}"#).unwrap(),
            ClientFrame::Leave { .. }
        ));
    }

    #[test]
    fn member_event_shape() {
        let user = User {
            id: "u1".into(),
            name: "Ann \"A\"".into(),
        };
        let ev = MemberEvent::new("lobby", MemberChange::Joined, &user);
        let json = ev.with_id("5-1");
        assert_eq!(
            json,
            r#"{"type":"member","room":"lobby","event":"joined","user":{"id":"u1","name":"Ann \"A\""},"id":"5-1"}"#
        );
        let frame: ServerFrame = serde_json::from_str(&json).unwrap();
        assert_eq!(
            frame,
            ServerFrame::Member {
                room: "lobby".into(),
                event: MemberChange::Joined,
                user,
                id: "5-1".into()
            }
        );
    }
}
