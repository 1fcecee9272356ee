//! Async Rust client of the chat protocol (`docs/protocol.md`), used by the gateway's
//! integration tests, the load-test harness and the `chat-cli` terminal client.
//!
//! Map of the crate:
//! - [`client`]: [`Client`], one WebSocket connection: `hello` → `welcome`, requests
//!   matched to replies by `ref`, unsolicited events de-duplicated and their cursor
//!   tracked, and [`ResumeState`] to reconnect (to any node) with session + cursor.
//!   Its room requests (protocol 1.1) are in `client/rooms.rs`.
//! - [`room_cursors`]: [`RoomCursors`], the last event id consumed per room.
//! - [`dedup`]: the bounded per-conversation set of recent message ids.
//! - [`raw`]: [`Connection`], a bare WebSocket with no protocol state (for tests that
//!   misbehave on purpose and for watching close codes).
//! - [`refs`]: request `ref` generation.
//! - [`error`]: [`ClientError`], which keeps server refusals, server errors and
//!   closes apart so callers (and tests) can assert on each.
//!
//! The client runs no background task: frames are read only while the caller awaits
//! one of its methods. A caller that stops calling stops reading — which is exactly
//! how the slow-consumer tests simulate a stuck client. Frames that arrive while a
//! request waits for its reply are queued for [`Client::next_event`].
//!
//! # Rooms
//!
//! [`Client::join`] joins (or creates) a room and returns it with its first members;
//! [`Client::leave`] leaves it. [`Client::room_send`] and
//! [`Client::room_send_with_nonce`] send to a room with the same nonce rules as 1:1
//! sends (a retry reuses the nonce and gets the stored message back);
//! [`Client::room_history`] / [`Client::full_room_history`] read its history,
//! [`Client::members`] / [`Client::all_members`] its roster (pages of 100, `after` a
//! member id), [`Client::rooms`] lists the user's rooms with unread counts and
//! [`Client::room_read`] moves the read marker.
//!
//! Room messages (a [`Message`] with `room`) and `member` events arrive through
//! [`Client::next_event`]. They carry ids of the room's own sequence instead of the
//! connection cursor, so the client keeps one cursor per room ([`RoomCursors`]), moved
//! when the caller consumes either kind of event and started by `join` from the
//! room's last message. [`ResumeState::rooms`] carries them to [`Client::resume`] and
//! [`Client::reconnect`], which send them as `hello.rooms`; [`Welcome::rooms`] says
//! per room whether the server replays everything after it (`recovered: true`) or the
//! caller should reload with `room_history` (`false`: that room's cursor starts again
//! at its next event). Replayed events the client already delivered are dropped, by
//! room + id, like 1:1 messages.
//!
//! ```no_run
//! # async fn demo(url: &str) -> Result<(), chat_client::ClientError> {
//! use chat_client::{Client, Credential, ServerFrame};
//! let mut client = Client::connect(url, Credential::Username("ann".into()), None).await?;
//! let lobby = client.join("lobby", Some("The lobby")).await?;
//! println!("{} members", lobby.member_count);
//! client.room_send("lobby", "hi all").await?;
//! if let ServerFrame::Message { message, .. } = client.next_event().await? {
//!     println!("{:?}: {}", message.room, message.body);
//! }
//! // Later, on any node: picks up every room event after the last one consumed.
//! let client = client.reconnect(url).await?;
//! let recovered = client.welcome().rooms.get("lobby").is_some_and(|r| r.recovered);
//! println!("lobby recovered: {recovered}");
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod dedup;
pub mod error;
pub mod raw;
pub mod refs;
pub mod room_cursors;

pub use client::{advance_cursor, Client, Credential, ResumeState, Welcome};
pub use dedup::RecentIds;
pub use error::ClientError;
pub use raw::{Connection, RawFrame};
pub use refs::RefGen;
pub use room_cursors::RoomCursors;

// Re-exported so users of the client need not depend on the protocol crate directly.
pub use chat_protocol::rooms::{MemberChange, RoomInfo, RoomItem, RoomRecovery, RoomsRecovered};
pub use chat_protocol::{ClientFrame, ErrorCode, Message, ServerFrame, User, UserInfo};
