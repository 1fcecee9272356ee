//! A connection's rooms (protocol 1.1): the room requests (`join`, `leave`,
//! `members`, `rooms`, and `send`/`history`/`read` naming a `room`), the recovery of
//! the rooms listed in `hello.rooms`, and writing room events in each room's order.
//!
//! Room events carry ids from the room's own stream and the id before them (`prev`),
//! so per room this connection keeps the last id it wrote: an event at or before it
//! is a duplicate, an event whose `prev` is not it shows a gap, read from the room's
//! stream. Rooms this connection has written nothing of yet are live only. Nothing
//! here lets a non-member read or write a room: every room request checks membership
//! in the engine (`forbidden`, nothing stored).
//!
//! `requests.rs` answers the room requests; `delivery.rs` registers the user's rooms
//! at sign-in, recovers `hello.rooms` and writes room events in order. This module
//! holds the room state they share.

mod delivery;
mod requests;

use std::collections::{BTreeMap, HashMap};

use chat_protocol::rooms::RoomRef;
use chat_protocol::{StreamId, Unread, User};

use crate::state::AppState;

/// What `hello` said about rooms.
#[derive(Debug, Default)]
pub(crate) struct SignedInRooms {
    /// `hello.rooms`: room → the last event id the client saw.
    pub last_seen: BTreeMap<String, String>,
    /// The JWT `rooms` claim, of the token or of the sign-in that created the resumed
    /// session (`None`: guests, tokens without it).
    pub claim: Option<Vec<String>>,
}

/// A connection's room state.
#[derive(Debug, Default)]
pub(crate) struct ConnRooms {
    /// Room → id of the last event written to this connection, and whether the user
    /// is still a member (after their own `left`, only their next `joined` is
    /// written: late copies of the room's events are dropped).
    last: HashMap<String, (StreamId, bool)>,
    /// The JWT `rooms` claim.
    claim: Option<Box<[String]>>,
}

/// The rooms with unread messages, as `welcome.unread` entries.
pub(super) async fn room_unread(
    state: &AppState,
    user: &str,
) -> Result<Vec<Unread>, chat_engine::EngineError> {
    Ok(state
        .engine
        .room_summaries(user)
        .await?
        .into_iter()
        .filter(|r| r.unread > 0)
        .filter_map(|r| {
            Some(Unread {
                peer: User::default(),
                count: r.unread,
                last: r.room.last?,
                room: Some(RoomRef {
                    id: r.room.id,
                    name: r.room.name,
                }),
            })
        })
        .collect())
}
