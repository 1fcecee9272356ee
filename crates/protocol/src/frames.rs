//! Client and server frames. Each frame is one JSON object with a string `type`;
//! unknown fields are ignored.

use serde::{Deserialize, Serialize};

use crate::rooms::{MemberChange, RoomInfo, RoomItem, RoomRef, RoomsRecovered};
use crate::ErrorCode;

/// Longest `ref` a client may attach to a request.
pub const MAX_REF: usize = 64;
/// Longest `nonce` a client may attach to a `send`.
pub const MAX_NONCE: usize = 64;

/// A user as shown to other users.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
}

/// A stored message. `id` is the conversation stream id and strictly increases in the
/// order the cluster accepted messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub conversation: String,
    pub from: String,
    /// The recipient of a 1:1 message; empty (absent on the wire) for a room message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub to: String,
    pub body: String,
    pub sent_at: String,
    /// The room of a room message (protocol 1.1); absent for a 1:1 message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
}

/// Limits announced in `welcome.limits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub max_body: usize,
    pub max_frame: usize,
    pub send_per_second: u32,
    pub send_burst: u32,
}

/// One entry of `welcome.unread`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unread {
    /// The peer of a 1:1 conversation; empty (absent on the wire) for a room.
    #[serde(default, skip_serializing_if = "user_is_empty")]
    pub peer: User,
    pub count: u64,
    pub last: Message,
    /// The room of a room entry (protocol 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<RoomRef>,
}

fn user_is_empty(user: &User) -> bool {
    user.id.is_empty()
}

/// A user as listed by `users` and inside `conversations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
    pub online: bool,
}

/// One entry of the `conversations` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationItem {
    pub conversation: String,
    pub peer: UserInfo,
    pub last: Option<Message>,
    pub unread: u64,
    pub read_up_to: Option<String>,
    pub peer_read_up_to: Option<String>,
}

/// Frames a client sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Hello {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        username: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client: Option<String>,
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        /// Room id → the last room event id the client saw (protocol 1.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rooms: Option<std::collections::BTreeMap<String, String>>,
    },
    Ping {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// Ends this connection's session on every node (protocol 1.2): answered with
    /// `logged_out`, then the connection is closed with 1000.
    Logout {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Send {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        to: String,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    History {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        with: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    Conversations {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Read {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        with: String,
        up_to: String,
    },
    Typing {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        to: String,
    },
    Users {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        #[serde(default)]
        query: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    Watch {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        users: Vec<String>,
    },
    // Rooms (protocol 1.1, `rooms.rs`). The three `Room*` variants are `send`,
    // `history` and `read` naming a `room`: written under those types, read by
    // `rooms::parse_room_request` (never by this enum's derive).
    Join {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    Leave {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        room: String,
    },
    Members {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    Rooms {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    #[serde(rename = "send", skip_deserializing)]
    RoomSend {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        room: String,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nonce: Option<String>,
    },
    #[serde(rename = "history", skip_deserializing)]
    RoomHistory {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        room: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    #[serde(rename = "read", skip_deserializing)]
    RoomRead {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        room: String,
        up_to: String,
    },
}

impl ClientFrame {
    /// The request's `ref`, if it carries one.
    pub fn reference(&self) -> Option<&str> {
        match self {
            ClientFrame::Hello { reference, .. }
            | ClientFrame::Ping { reference }
            | ClientFrame::Logout { reference }
            | ClientFrame::Send { reference, .. }
            | ClientFrame::History { reference, .. }
            | ClientFrame::Conversations { reference }
            | ClientFrame::Read { reference, .. }
            | ClientFrame::Typing { reference, .. }
            | ClientFrame::Users { reference, .. }
            | ClientFrame::Watch { reference, .. }
            | ClientFrame::Join { reference, .. }
            | ClientFrame::Leave { reference, .. }
            | ClientFrame::Members { reference, .. }
            | ClientFrame::Rooms { reference }
            | ClientFrame::RoomSend { reference, .. }
            | ClientFrame::RoomHistory { reference, .. }
            | ClientFrame::RoomRead { reference, .. } => reference.as_deref(),
        }
    }

    /// Sets the request's `ref` (clients number their requests).
    pub fn set_reference(&mut self, r: String) {
        match self {
            ClientFrame::Hello { reference, .. }
            | ClientFrame::Ping { reference }
            | ClientFrame::Logout { reference }
            | ClientFrame::Send { reference, .. }
            | ClientFrame::History { reference, .. }
            | ClientFrame::Conversations { reference }
            | ClientFrame::Read { reference, .. }
            | ClientFrame::Typing { reference, .. }
            | ClientFrame::Users { reference, .. }
            | ClientFrame::Watch { reference, .. }
            | ClientFrame::Join { reference, .. }
            | ClientFrame::Leave { reference, .. }
            | ClientFrame::Members { reference, .. }
            | ClientFrame::Rooms { reference }
            | ClientFrame::RoomSend { reference, .. }
            | ClientFrame::RoomHistory { reference, .. }
            | ClientFrame::RoomRead { reference, .. } => *reference = Some(r),
        }
    }
}

/// Why a text frame could not be read as a [`ClientFrame`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FrameError {
    /// The `ref` of the frame, when one could be read, so the error can carry it.
    pub reference: Option<String>,
    pub message: String,
}

/// Parses a client text frame. Every failure is a `bad_request` for the caller.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    match serde_json::from_str::<ClientFrame>(text) {
        Ok(frame) => {
            if frame
                .reference()
                .is_some_and(|r| r.chars().count() > MAX_REF)
            {
                return Err(FrameError {
                    reference: None,
                    message: format!("ref is longer than {MAX_REF} characters"),
                });
            }
            Ok(frame)
        }
        Err(err) => match crate::rooms::parse_room_request(text) {
            Some(frame)
                if frame
                    .reference()
                    .is_none_or(|r| r.chars().count() <= MAX_REF) =>
            {
                Ok(frame)
            }
            _ => Err(explain(text, err)),
        },
    }
}

fn explain(text: &str, err: serde_json::Error) -> FrameError {
    /// The two fields every frame may have, read leniently to explain a failure.
    #[derive(Deserialize)]
    struct Envelope {
        #[serde(rename = "type")]
        kind: Option<serde_json::Value>,
        #[serde(rename = "ref")]
        reference: Option<serde_json::Value>,
    }
    let envelope = match serde_json::from_str::<Envelope>(text) {
        Ok(envelope) => envelope,
        Err(_) => {
            return FrameError {
                reference: None,
                message: "frame is not a JSON object".into(),
            }
        }
    };
    let reference = match envelope.reference {
        Some(serde_json::Value::String(r)) if r.chars().count() <= MAX_REF => Some(r),
        _ => None,
    };
    let message = match envelope.kind {
        None => "frame has no \"type\"".to_string(),
        Some(serde_json::Value::String(kind)) if !KNOWN_TYPES.contains(&kind.as_str()) => {
            format!("unknown type {kind:?}")
        }
        Some(serde_json::Value::String(kind)) => {
            let detail = err.to_string();
            let detail = detail
                .split(" at line")
                .next()
                .unwrap_or(&detail)
                .to_string();
            format!("invalid {kind:?} frame: {detail}")
        }
        Some(_) => "\"type\" must be a string".to_string(),
    };
    FrameError { reference, message }
}

const KNOWN_TYPES: &[&str] = &[
    "hello",
    "ping",
    "send",
    "history",
    "conversations",
    "read",
    "typing",
    "users",
    "watch",
    "join",
    "leave",
    "members",
    "rooms",
];

/// Frames a server sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome {
        session: String,
        user: User,
        resumed: bool,
        recovered: bool,
        node: String,
        limits: Limits,
        #[serde(default)]
        unread: Vec<Unread>,
        /// The cursor live delivery starts after (extension, see docs/protocol.md).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
        /// Per room listed in `hello.rooms`: whether it was recovered (protocol 1.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rooms: Option<RoomsRecovered>,
    },
    Ack {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        message: Message,
    },
    Message {
        message: Message,
        /// The connection's inbox cursor; empty (absent on the wire) for a room
        /// message, which carries ids of the room's own sequence instead.
        #[serde(default)]
        cursor: String,
    },
    History {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        conversation: String,
        messages: Vec<Message>,
        more: bool,
    },
    Conversations {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        items: Vec<ConversationItem>,
    },
    Read {
        conversation: String,
        by: String,
        up_to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    Typing {
        from: String,
    },
    Users {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        items: Vec<UserInfo>,
    },
    Presence {
        user: String,
        online: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_seen_at: Option<String>,
    },
    Pong {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// The answer to `logout`: the session is revoked; the server closes with 1000.
    LoggedOut {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    Error {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        code: ErrorCode,
        message: String,
    },
    /// A conversation's history was cleared up to message `up_to` (server API
    /// `DELETE /api/v1/conversations/{a}/{b}`); stored, so it carries a cursor.
    Cleared {
        conversation: String,
        up_to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cursor: Option<String>,
    },
    // Rooms (protocol 1.1, `rooms.rs`). Room messages are `ack`/`message`/`history`
    // frames whose message has a `room`.
    Joined {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        room: RoomInfo,
    },
    Left {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        room: String,
    },
    Member {
        room: String,
        event: MemberChange,
        user: User,
        id: String,
    },
    Members {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        room: String,
        items: Vec<UserInfo>,
        more: bool,
    },
    Rooms {
        #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
        items: Vec<RoomItem>,
    },
}

impl ServerFrame {
    pub fn error(reference: Option<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            reference,
            code,
            message: message.into(),
        }
    }

    /// The `ref` of a reply frame (`None` for events, which answer no request).
    pub fn reference(&self) -> Option<&str> {
        match self {
            ServerFrame::Ack { reference, .. }
            | ServerFrame::History { reference, .. }
            | ServerFrame::Conversations { reference, .. }
            | ServerFrame::Users { reference, .. }
            | ServerFrame::Pong { reference }
            | ServerFrame::LoggedOut { reference }
            | ServerFrame::Error { reference, .. }
            | ServerFrame::Joined { reference, .. }
            | ServerFrame::Left { reference, .. }
            | ServerFrame::Members { reference, .. }
            | ServerFrame::Rooms { reference, .. } => reference.as_deref(),
            _ => None,
        }
    }

    /// Serializes the frame to its JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail: no maps with non-string keys.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"serialization failed"}"#.into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A room message carries no connection cursor (protocol 1.1): a client still
    /// reads it as a `message` frame.
    #[test]
    fn a_room_message_frame_parses_without_a_cursor() {
        let text = r#"{"type":"message","message":{"id":"5-0","conversation":"room:lobby","room":"lobby","from":"u1","body":"hi all","sent_at":"2026-12-04T10:00:00.000Z"}}"#;
        let frame: ServerFrame = serde_json::from_str(text).unwrap();
        let ServerFrame::Message { message, cursor } = frame else {
            panic!("a message frame");
        };
        assert_eq!(cursor, "");
        assert_eq!(message.room.as_deref(), Some("lobby"));
    }

    #[test]
    fn parses_send_and_ignores_unknown_fields() {
        let f = parse_client_frame(r#"{"type":"send","ref":"c1","to":"bob","body":"hi","x":1}"#)
            .unwrap();
        assert_eq!(
            f,
            ClientFrame::Send {
                reference: Some("c1".into()),
                to: "bob".into(),
                body: "hi".into(),
                nonce: None
            }
        );
    }

    #[test]
    fn explains_failures_and_keeps_ref() {
        let e = parse_client_frame("not json").unwrap_err();
        assert_eq!(e.reference, None);
        let e = parse_client_frame(r#"{"type":"fly","ref":"r1"}"#).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("r1"));
        assert!(e.message.contains("unknown type"));
        let e = parse_client_frame(r#"{"type":"send","ref":"r2","body":"x"}"#).unwrap_err();
        assert_eq!(e.reference.as_deref(), Some("r2"));
        assert!(e.message.contains("missing field `to`"), "{}", e.message);
        let e = parse_client_frame(r#"{"ref":"r3"}"#).unwrap_err();
        assert!(e.message.contains("no \"type\""));
        assert!(
            parse_client_frame(&format!(r#"{{"type":"ping","ref":"{}"}}"#, "r".repeat(65)))
                .is_err()
        );
    }

    #[test]
    fn server_frames_round_trip() {
        let f = ServerFrame::error(Some("x".into()), ErrorCode::NotFound, "no such user");
        let json = f.to_json();
        assert_eq!(
            json,
            r#"{"type":"error","ref":"x","code":"not_found","message":"no such user"}"#
        );
        assert_eq!(serde_json::from_str::<ServerFrame>(&json).unwrap(), f);
    }
}
