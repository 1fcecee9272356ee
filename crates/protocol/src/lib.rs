//! Wire types of the chat protocol (`docs/protocol.md`): the frames a client sends,
//! the frames a server sends, error and close codes, and the id rules.
//!
//! This crate does no I/O and knows nothing about WebSockets or Redis: the gateway,
//! the Rust client, the load-test harness and the tests all speak through it, so a
//! frame means the same thing everywhere.

pub mod api;
pub mod codes;
pub mod events;
pub mod frames;
pub mod ids;
pub mod rooms;

pub use codes::{close, ErrorCode};
pub use events::Event;
pub use frames::*;
pub use ids::{
    dm_conversation, normalize_username, valid_user_id, StreamId, MAX_USER_ID, USER_ID_RULE,
};
pub use rooms::{room_conversation, valid_room_id};
