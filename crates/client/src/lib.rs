//! Async Rust client of the chat protocol (`docs/protocol.md`), used by the gateway's
//! integration tests, the load-test harness and the `chat-cli` terminal client.
//!
//! Map of the crate:
//! - [`client`]: [`Client`], one WebSocket connection: `hello` → `welcome`, requests
//!   matched to replies by `ref`, unsolicited events de-duplicated and their cursor
//!   tracked, and [`ResumeState`] to reconnect (to any node) with session + cursor.
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

pub mod client;
pub mod dedup;
pub mod error;
pub mod raw;
pub mod refs;

pub use client::{advance_cursor, Client, Credential, ResumeState, Welcome};
pub use dedup::RecentIds;
pub use error::ClientError;
pub use raw::{Connection, RawFrame};
pub use refs::RefGen;

// Re-exported so users of the client need not depend on the protocol crate directly.
pub use chat_protocol::{ClientFrame, ErrorCode, Message, ServerFrame, User};
