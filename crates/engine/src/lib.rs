//! The engine: everything the cluster stores and how live events reach a node.
//!
//! [`Engine`] is the one interface the gateway talks to. It is a set of small traits,
//! one per concern ([`Accounts`], [`Messages`], [`Live`], [`Receipts`], [`Presence`],
//! [`Directory`], [`Rooms`], and [`Node`] for what the backend is), and `Engine` is every one of
//! them together, implemented for any type that implements them all. Callers write
//! `use chat_engine::prelude::*;` to call any method of an `Arc<dyn Engine>`.
//!
//! [`memory::MemoryEngine`] keeps everything in this process (a single node,
//! `cargo run` with no Redis); [`redis::RedisEngine`] keeps everything in Redis, so any
//! number of nodes share it. Both implement each trait in the file that owns its
//! concern (`memory/accounts.rs`, `redis/accounts.rs`, …), promise the same behaviour,
//! and the same tests run against both.
//!
//! The engine never knows about WebSockets: it hands live events for the users a node
//! subscribed to to an [`EventSink`] (the gateway's router) as ready-to-send bytes. It
//! knows the id of the node it runs on (given at construction), and hands the sender's
//! own event of a send to the sink itself, before `send` returns.
//!
//! The feature `testing` (for `[dev-dependencies]` only) adds [`memory`] fault
//! injection, memory nodes sharing one state, and a recording sink (`testing`).

pub mod events;
mod ids;
pub mod memory;
pub mod redis;
pub mod rooms;
#[cfg(feature = "testing")]
pub mod testing;
mod types;

pub use rooms::*;
pub use types::*;

use async_trait::async_trait;
use chat_protocol::{Message, StreamId, User};

/// Every engine trait, for `use chat_engine::prelude::*;`.
pub mod prelude {
    pub use crate::{Accounts, Directory, Engine, Live, Messages, Node, Presence, Receipts, Rooms};
}

/// What the backend is and whether it answers.
#[async_trait]
pub trait Node: Send + Sync + 'static {
    /// `"redis"` or `"memory"`, for logs and `/readyz`.
    fn kind(&self) -> &'static str;

    /// Whether the backend answers right now.
    async fn ready(&self) -> bool;

    /// The id of the node this engine runs on (given at construction): the node the
    /// sender's own event of a send is delivered on directly.
    fn node_id(&self) -> &str;
}

/// Users and sessions.
#[async_trait]
pub trait Accounts: Send + Sync + 'static {
    /// The user with this id, if the cluster knows them.
    async fn get_user(&self, id: &str) -> Result<Option<User>, EngineError>;

    /// Creates the user or renames them. Returns whether they existed before.
    async fn upsert_user(&self, id: &str, name: &str) -> Result<bool, EngineError>;

    /// Creates a new guest user with a fresh id.
    async fn create_guest(&self, name: &str) -> Result<User, EngineError>;

    /// Issues a new session for the user, valid for `ttl_secs` (sliding). `rooms` is
    /// the JWT `rooms` claim of the sign-in that created it (`None`: no claim, any
    /// room; `Some(&[])`: no room); it is stored with the session so that every
    /// resume keeps the same restriction.
    async fn create_session(
        &self,
        user_id: &str,
        rooms: Option<&[String]>,
        ttl_secs: u64,
    ) -> Result<String, EngineError>;

    /// The user behind a session and the `rooms` claim it was created with, and its
    /// expiry pushed back to `ttl_secs` from now. `None` when the session is unknown,
    /// expired or revoked.
    async fn resume_session(
        &self,
        session: &str,
        ttl_secs: u64,
    ) -> Result<Option<Session>, EngineError>;

    /// Revokes every session of the user.
    async fn revoke_sessions(&self, user_id: &str) -> Result<(), EngineError>;

    /// Revokes this one session (a `logout`), on every node: a later resume of it is
    /// refused. The user's other sessions live on. An unknown session is no error.
    async fn revoke_session(&self, session: &str) -> Result<(), EngineError>;
}

/// Messages: sending, history and the per-user inboxes.
///
/// Ordering promise: for one user, inbox events get strictly increasing ids in the
/// order the cluster accepted them, and every event carries the id of the event
/// before it (`prev`), so a reader can prove it saw every one.
#[async_trait]
pub trait Messages: Send + Sync + 'static {
    /// Stores a 1:1 message and delivers it to both participants' inboxes and live
    /// channels, atomically with respect to idempotency: a send with a nonce already
    /// seen from this sender (within `nonce_ttl`) returns the stored message with
    /// `duplicate: true` and stores and delivers nothing.
    ///
    /// When the sender is subscribed on this node, their own event is handed to the
    /// sink before this returns (so a caller that answers the send afterwards answers
    /// behind it); other nodes get it only when the sender has connections there.
    async fn send(&self, request: SendRequest) -> Result<SendOutcome, EngineError>;

    /// Up to `limit` messages of the conversation between `a` and `b` older than
    /// `before` (or the newest), ascending, and whether older ones exist.
    async fn history(
        &self,
        a: &str,
        b: &str,
        before: Option<StreamId>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), EngineError>;

    /// Deletes a conversation's history and tells both participants: a
    /// `{"type":"cleared","conversation","up_to"}` event (`up_to`: the newest message
    /// it held) is appended to both inboxes and published, like a read receipt, and
    /// from then on [`Messages::read_inbox`] skips the conversation's messages up to
    /// `up_to` (so no recovery replays them) while keeping the `prev` chain provable:
    /// an event's `prev` is the newest event before it that a read returns (or the
    /// read's `after`). Returns `up_to`, or `None` (nothing stored, no event) when
    /// the conversation held no message.
    async fn clear_conversation(&self, a: &str, b: &str) -> Result<Option<StreamId>, EngineError>;

    /// The id of the newest event in the user's inbox ([`StreamId::ZERO`] if none).
    async fn inbox_head(&self, user_id: &str) -> Result<StreamId, EngineError>;

    /// Up to `count` inbox events with ids greater than `after`, oldest first
    /// (messages hidden by a clear skipped, see [`Messages::clear_conversation`]).
    async fn read_inbox(
        &self,
        user_id: &str,
        after: StreamId,
        count: usize,
    ) -> Result<Vec<InboxEvent>, EngineError>;
}

/// Live delivery of a user's events to the nodes they are connected to.
#[async_trait]
pub trait Live: Send + Sync + 'static {
    /// Starts live delivery of the user's events to the sink. Returns once the
    /// subscription is confirmed, so anything published afterwards is delivered.
    async fn subscribe(&self, user_id: &str) -> Result<(), EngineError>;

    /// Stops live delivery of the user's events to this node.
    async fn unsubscribe(&self, user_id: &str) -> Result<(), EngineError>;

    /// Publishes an ephemeral, unstored frame (typing) to the user's connections on
    /// every node.
    async fn publish_ephemeral(&self, user_id: &str, frame: &str) -> Result<(), EngineError>;

    /// Closes every connection of the user on every node ([`LiveEvent::Disconnect`]).
    async fn disconnect_user(&self, user_id: &str) -> Result<(), EngineError>;
}

/// Conversations, unread counts and read receipts.
#[async_trait]
pub trait Receipts: Send + Sync + 'static {
    /// Moves `reader`'s read marker in the conversation with `peer` forward to
    /// `up_to` (clamped to the last message; never backwards). When it moved, a
    /// `{"type":"read","conversation","by","up_to"}` event is appended to both
    /// users' inboxes and published (so it carries a cursor and is recovered).
    /// `None` when nothing moved. Sending a message also moves the sender's marker
    /// to it, silently: one's own messages are never unread.
    async fn mark_read(
        &self,
        reader: &str,
        peer: &str,
        up_to: StreamId,
    ) -> Result<Option<ReadOutcome>, EngineError>;

    /// The user's conversations, newest activity first, at most `limit`, with unread
    /// counts kept in the store (never recomputed by scanning streams).
    async fn conversations(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, EngineError>;
}

/// Who is online across the cluster, and the nodes' liveness.
#[async_trait]
pub trait Presence: Send + Sync + 'static {
    /// A connection of the user opened on `node`. Returns the user's connection
    /// count across the cluster after it. On the 0 → 1 transition the user goes
    /// online: a `presence` frame is published to every conversation partner
    /// (ephemeral, on their channels) and on the global presence channel.
    async fn connection_opened(&self, user_id: &str, node: &str) -> Result<u64, EngineError>;

    /// A connection of the user on `node` closed. On the 1 → 0 transition the user
    /// goes offline (`last_seen_at` = now, kept) and it is published like above.
    async fn connection_closed(&self, user_id: &str, node: &str) -> Result<(), EngineError>;

    /// `node` has no connection of the user any more, whatever its count says (a
    /// `connection_closed` was lost while Redis was unreachable): drops the node's
    /// count, announcing offline if that was the user's last. Idempotent.
    async fn drop_presence(&self, user_id: &str, node: &str) -> Result<(), EngineError>;

    /// Records that `node` is alive for `ttl_secs` more seconds (called every few
    /// seconds by every node).
    async fn heartbeat(&self, node: &str, ttl_secs: u64) -> Result<(), EngineError>;

    /// Finds nodes whose heartbeat expired, takes over their cleanup (once, whoever
    /// gets there first) and closes all their users' connections on those nodes,
    /// publishing the offline transitions. Returns how many nodes were reaped.
    async fn reap_dead_nodes(&self) -> Result<usize, EngineError>;

    /// Clears what an earlier run of a node with the same id left behind (its users'
    /// connection counts), publishing offline transitions. Called once at start,
    /// before the node accepts connections.
    async fn reset_node(&self, node: &str) -> Result<(), EngineError>;

    /// Presence of each user, in order.
    async fn presence(&self, user_ids: &[String]) -> Result<Vec<PresenceInfo>, EngineError>;
}

/// The user directory.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    /// Users whose name starts with `prefix` (case-insensitive), sorted by name, at
    /// most `limit`; from an index, never a key scan.
    async fn search_users(&self, prefix: &str, limit: usize) -> Result<Vec<User>, EngineError>;
}

/// Rooms: group conversations of any size (`rooms.rs` for the types,
/// `memory/rooms.rs` and `redis/rooms.rs` for the engines).
///
/// A room message is stored once (the room's stream) and published once (the room's
/// channel), whatever the number of members: work per message never grows with the
/// room. A node subscribes to a room ([`Rooms::subscribe_room`]) while one of its
/// connections belongs to a member and hands each event to the sink
/// ([`EventSink::deliver_room`]). A join or leave is also published to the user's own
/// channel as [`LiveEvent::Room`], so every node with a connection of that user
/// follows it. Membership is a set per room and a set of rooms per user; unread =
/// the room's message count − the member's read marker.
#[async_trait]
pub trait Rooms: Send + Sync + 'static {
    /// Makes `user` a member, creating the room (named `name`, default its id) on
    /// first join; appends and publishes a `member` `joined` event when it changed
    /// anything. Refuses over the caps.
    async fn join_room(
        &self,
        room: &str,
        user: &User,
        name: Option<&str>,
        limits: RoomLimits,
    ) -> Result<JoinOutcome, EngineError>;

    /// Removes `user` from the room, publishing a `member` `left` event. Returns
    /// whether they were a member.
    async fn leave_room(&self, room: &str, user: &User) -> Result<bool, EngineError>;

    /// The room, if it exists.
    async fn room(&self, room: &str) -> Result<Option<RoomState>, EngineError>;

    /// Whether `user` is a member of the room.
    async fn is_member(&self, room: &str, user: &str) -> Result<bool, EngineError>;

    /// Up to `limit` members with ids greater than `after`, by id, and whether more
    /// follow.
    async fn room_members(
        &self,
        room: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<User>, bool), EngineError>;

    /// The rooms the user is a member of (ids).
    async fn user_rooms(&self, user: &str) -> Result<Vec<String>, EngineError>;

    /// The user's rooms with unread counts, newest activity first.
    async fn room_summaries(&self, user: &str) -> Result<Vec<RoomSummary>, EngineError>;

    /// Stores a room message and publishes it once. `None` when the sender is not a
    /// member (nothing stored). Nonces work as for [`Messages::send`].
    async fn room_send(&self, request: RoomSendRequest)
        -> Result<Option<SendOutcome>, EngineError>;

    /// Up to `limit` messages of the room older than `before` (or the newest),
    /// ascending, and whether older ones exist.
    async fn room_history(
        &self,
        room: &str,
        before: Option<StreamId>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), EngineError>;

    /// Moves the member's read marker forward to the newest message at or before
    /// `up_to`. Returns the new marker, `None` when nothing moved.
    async fn room_mark_read(
        &self,
        room: &str,
        user: &str,
        up_to: StreamId,
    ) -> Result<Option<String>, EngineError>;

    /// Up to `count` room events with ids greater than `after`, oldest first.
    async fn read_room(
        &self,
        room: &str,
        after: StreamId,
        count: usize,
    ) -> Result<Vec<RoomEvent>, EngineError>;

    /// The id of the room's newest event ([`StreamId::ZERO`] if none).
    async fn room_head(&self, room: &str) -> Result<StreamId, EngineError>;

    /// Starts live delivery of the room's events to the sink; returns once confirmed.
    async fn subscribe_room(&self, room: &str) -> Result<(), EngineError>;

    /// Stops live delivery of the room's events to this node.
    async fn unsubscribe_room(&self, room: &str) -> Result<(), EngineError>;
}

/// What the cluster stores and how events move between nodes: every concern's trait.
/// Implemented for any type that implements them all; used as `Arc<dyn Engine>`.
pub trait Engine:
    Node + Accounts + Messages + Live + Receipts + Presence + Directory + Rooms
{
}

impl<T> Engine for T where
    T: Node + Accounts + Messages + Live + Receipts + Presence + Directory + Rooms
{
}
