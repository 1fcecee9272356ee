//! The one internal interface behind the writes whose shape differs between a single
//! Redis (and Sentinel) and a Redis Cluster.
//!
//! On one Redis every key is reachable from one `FCALL`, so a send, a read receipt or
//! a presence transition is one atomic call ([`super::single::Single`]). On a cluster
//! each `FCALL` may touch one slot only: the same writes are split into slot-local
//! calls, with the cross-slot rest done from the node ([`super::cluster::Cluster`]).
//! [`super::RedisEngine::connect`] picks one implementation for the URL's mode; the
//! engine traits (`messages.rs`, `receipts.rs`, `presence.rs`) call it and never ask
//! which one it is. Both store the same keys in the same formats and publish the same
//! payloads.

use async_trait::async_trait;
use chat_protocol::StreamId;

use crate::{EngineError, InboxEvent, ReadOutcome, SendOutcome, SendRequest};

/// Users of a dead node cleaned up per batch: keeps each call short.
pub(crate) const REAP_BATCH: usize = 500;

/// A stored send: its outcome, and the sender's new inbox event when the send asked
/// for it (`local`) and one was appended, for the engine to hand to its sink.
pub(crate) struct Sent {
    pub outcome: SendOutcome,
    pub own: Option<InboxEvent>,
}

/// The writes single Redis and Cluster do differently.
#[async_trait]
pub(crate) trait Shape: Send + Sync + 'static {
    /// Stores `request` and publishes it to both participants. `local`: the sender is
    /// subscribed on this node, which delivers their own event itself: it is then
    /// published for the sender only if they have connections on another node, and
    /// returned in [`Sent::own`] (not for a duplicate).
    async fn send(&self, request: SendRequest, local: bool) -> Result<Sent, EngineError>;

    /// See [`crate::Receipts::mark_read`].
    async fn mark_read(
        &self,
        reader: &str,
        peer: &str,
        up_to: StreamId,
    ) -> Result<Option<ReadOutcome>, EngineError>;

    /// See [`crate::Presence::connection_opened`].
    async fn connection_opened(&self, user: &str, node: &str) -> Result<u64, EngineError>;

    /// See [`crate::Presence::connection_closed`].
    async fn connection_closed(&self, user: &str, node: &str) -> Result<(), EngineError>;

    /// See [`crate::Presence::drop_presence`].
    async fn drop_presence(&self, user: &str, node: &str) -> Result<(), EngineError>;

    /// See [`crate::Presence::heartbeat`].
    async fn heartbeat(&self, node: &str, ttl_secs: u64) -> Result<(), EngineError>;

    /// Drops every connection `node` had (its users' set emptied in batches), each
    /// user's offline transition announced.
    async fn drop_node_users(&self, node: &str) -> Result<(), EngineError>;
}
