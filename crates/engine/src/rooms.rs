//! Types of the [`Rooms`](crate::Rooms) trait, shared by both engines.
//!
//! A room has a stream of events (its messages and `member` events), each with an
//! id from the room's own sequence and the id of the event before it (`prev`), so a
//! node can tell whether it missed one, exactly like a user's inbox. The event bytes
//! are the ready-to-send frame: room events carry no cursor.

use bytes::Bytes;
use chat_protocol::{Message, StreamId};

/// One event of a room's stream: a message or a `member` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomEvent {
    pub room: String,
    pub id: StreamId,
    /// The id of the room event before it (`0-0` for the first).
    pub prev: StreamId,
    /// The frame as sent to clients (`message` or `member`).
    pub json: Bytes,
    /// For a `member` event: whose membership changed and whether they joined.
    /// Nodes follow it (the user's connections start or stop getting the room).
    pub change: Option<(String, bool)>,
}

/// Caps checked by a join.
#[derive(Debug, Clone, Copy)]
pub struct RoomLimits {
    /// Rooms one user may be a member of.
    pub rooms_per_user: u64,
    /// Members one room may have.
    pub members_per_room: u64,
}

/// A room's name, size and last message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomState {
    pub id: String,
    pub name: String,
    pub member_count: u64,
    pub last: Option<Message>,
}

/// What a join did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The user is a member (`changed`: they were not before).
    Joined { room: Box<RoomState>, changed: bool },
    /// The room has `members_per_room` members already.
    RoomFull,
    /// The user is in `rooms_per_user` rooms already.
    TooManyRooms,
}

/// A room message to store and publish.
#[derive(Debug, Clone)]
pub struct RoomSendRequest {
    pub room: String,
    pub from: String,
    pub body: String,
    pub nonce: Option<String>,
    pub nonce_ttl_secs: u64,
    pub sent_at: String,
}

/// One entry of a user's room list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    pub room: RoomState,
    /// Messages after the member's read marker.
    pub unread: u64,
    /// The id of the last activity (the last message, or the event that created the
    /// room): orders the list.
    pub active: StreamId,
}

/// Sorts room summaries newest activity first (ties by id), as the `rooms` list shows.
pub fn sort_by_activity(rooms: &mut [RoomSummary]) {
    rooms.sort_by(|a, b| {
        b.active
            .cmp(&a.active)
            .then_with(|| a.room.id.cmp(&b.room.id))
    });
}
