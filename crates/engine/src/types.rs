//! Types shared by both engines.

use std::sync::Arc;

use bytes::Bytes;
use chat_protocol::{Message, StreamId, User};

/// Why an engine call failed. Each fact a caller acts on is a variant or a field,
/// set once where the backend's error is mapped (`redis/conn.rs`) and read by type
/// everywhere else: the gateway's one error map (`errors.rs`) gives each variant its
/// wire code and message.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The backend could not be reached or did not answer in time. The call may have
    /// run (a timeout, a connection lost in flight); a send retries it with its nonce
    /// and, if every attempt is unanswered, fails [`EngineError::MaybeStored`].
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// The backend answered and refused to write for a while (out of memory, a
    /// replica, …): the call did not run, and the operator's fix makes the same call
    /// succeed.
    #[error("backend refused the write ({refusal}): {reason}")]
    Refused {
        refusal: WriteRefusal,
        /// The backend's own words, for the log.
        reason: String,
    },
    /// A send whose attempts went unanswered: the message may have been stored, and
    /// a retry with the same nonce is safe (it returns the stored message if there is
    /// one).
    #[error("backend unavailable, the message may have been stored: {0}")]
    MaybeStored(String),
    /// A user the request names does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Anything else: a bug or corrupt data.
    #[error("internal error: {0}")]
    Internal(String),
}

impl EngineError {
    /// Whether the backend could not serve the call right now (unreachable, refusing
    /// writes, or a send left uncertain): the client is told `unavailable`.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            EngineError::Unavailable(_) | EngineError::Refused { .. } | EngineError::MaybeStored(_)
        )
    }

    /// Whether the call may have run although it failed, so a send is worth sending
    /// again with its nonce: the backend was unreachable or silent (a timeout, a
    /// connection lost, even fred failing fast while disconnected, which reads like a
    /// connection lost in flight). A write Redis refused did not run; any other error
    /// is final.
    pub fn may_have_run(&self) -> bool {
        matches!(self, EngineError::Unavailable(_))
    }
}

/// Why a backend that answers refused to write ([`EngineError::Refused`]): Redis's
/// error codes for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteRefusal {
    /// `OOM`: `maxmemory` reached with a `noeviction` policy.
    #[error("out of memory")]
    OutOfMemory,
    /// `MISCONF`: a failed background save stops writes.
    #[error("persistence failing")]
    PersistenceFailing,
    /// `NOREPLICAS`: fewer good replicas than `min-replicas-to-write`.
    #[error("not enough replicas")]
    NotEnoughReplicas,
    /// `READONLY`: the server is a replica (a failover in progress).
    #[error("read-only replica")]
    ReadOnly,
    /// `NOWRITE`: writes are paused.
    #[error("writes paused")]
    WritesPaused,
}

impl WriteRefusal {
    /// Every refusal with the Redis error code that announces it.
    pub const CODES: [(&'static str, WriteRefusal); 5] = [
        ("OOM", WriteRefusal::OutOfMemory),
        ("MISCONF", WriteRefusal::PersistenceFailing),
        ("NOREPLICAS", WriteRefusal::NotEnoughReplicas),
        ("READONLY", WriteRefusal::ReadOnly),
        ("NOWRITE", WriteRefusal::WritesPaused),
    ];
}

/// A resumed session ([`crate::Accounts::resume_session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who the session belongs to.
    pub user: User,
    /// The JWT `rooms` claim of the sign-in that created the session, kept so a
    /// resumed session may join only what the token allowed (`None`: no claim, any
    /// room; an empty list: no room).
    pub rooms: Option<Vec<String>>,
}

/// A message to store and deliver.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub from: String,
    pub to: String,
    pub body: String,
    /// Idempotency key chosen by the client (or by the gateway when it has none).
    pub nonce: Option<String>,
    /// How long the nonce is remembered, in seconds.
    pub nonce_ttl_secs: u64,
    /// RFC 3339 time with milliseconds, from the accepting node's clock.
    pub sent_at: String,
    /// W3C `traceparent` of the send's span, carried with the live event so the
    /// recipients' nodes continue the same trace. Not stored.
    pub trace: Option<String>,
}

/// The result of [`crate::Messages::send`].
#[derive(Debug, Clone)]
pub struct SendOutcome {
    pub message: Message,
    /// True when the nonce was seen before: `message` is the original, nothing new
    /// was stored or delivered.
    pub duplicate: bool,
}

/// One entry of a user's inbox: an event that concerns the user, in the order the
/// cluster accepted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEvent {
    /// The entry id: the cursor a client sends back as `hello.last_seen`.
    pub id: StreamId,
    /// The id of the entry before it in the same inbox (`0-0` for the first), so a
    /// reader can tell whether it missed anything.
    pub prev: StreamId,
    /// The event as a JSON object without its cursor, e.g.
    /// `{"type":"message","message":{…}}`.
    pub json: Bytes,
    /// W3C `traceparent` of the request that caused it, on live events only (events
    /// read back from the inbox have none).
    pub trace: Option<String>,
}

impl InboxEvent {
    /// The frame to send: the event with `"cursor":"<id>"` added. Built once per
    /// event per node and shared by every local connection.
    pub fn frame(&self) -> Bytes {
        let body = self.json.as_ref();
        let trimmed = match body.iter().rposition(|&b| b == b'}') {
            Some(end) => &body[..end],
            None => body,
        };
        let cursor = self.id.to_string();
        let mut out = Vec::with_capacity(trimmed.len() + cursor.len() + 14);
        out.extend_from_slice(trimmed);
        out.extend_from_slice(b",\"cursor\":\"");
        out.extend_from_slice(cursor.as_bytes());
        out.extend_from_slice(b"\"}");
        Bytes::from(out)
    }
}

/// A live event for one user, as the engine hands it to the node.
#[derive(Debug, Clone)]
pub enum LiveEvent {
    /// A stored inbox event (message, read receipt).
    Inbox(Arc<InboxEvent>),
    /// A ready-to-send frame that is not stored (typing, presence to partners).
    Ephemeral(Bytes),
    /// Close every connection of the user on this node (API `disconnect`).
    Disconnect,
    /// A `member` event about this user (they joined or left a room), sent to their
    /// own channel so every node with their connections follows the change.
    Room(Arc<crate::RoomEvent>),
}

/// Where an engine hands live events for subscribed users: the gateway's router.
pub trait EventSink: Send + Sync + 'static {
    /// A live event for a user this node subscribed to.
    fn deliver(&self, user_id: &str, event: LiveEvent);

    /// Live delivery may have missed events (a reconnect to the backend, a lagging
    /// subscriber): every local connection should catch up from its inbox.
    fn resync(&self);

    /// A presence transition of any user in the cluster (the global presence
    /// channel every node listens to): for local connections that `watch` the user.
    /// `frame` is the ready-to-send `presence` frame.
    fn presence(&self, user_id: &str, frame: Bytes);

    /// An event of a room this node subscribed to (`Rooms::subscribe_room`): for the
    /// local connections of its members.
    fn deliver_room(&self, event: Arc<crate::RoomEvent>) {
        let _ = event;
    }
}

/// One entry of a user's conversation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationSummary {
    pub conversation: String,
    pub peer: User,
    pub last: Option<Message>,
    /// Messages from the peer after the user's read marker.
    pub unread: u64,
    /// The user's read marker (a message id).
    pub read_up_to: Option<String>,
    /// The peer's read marker.
    pub peer_read_up_to: Option<String>,
}

/// The result of [`crate::Receipts::mark_read`] when the marker moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    pub conversation: String,
    /// The new marker (clamped to the conversation's last message id).
    pub up_to: String,
}

/// A user entry of the directory, with presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceInfo {
    pub online: bool,
    /// RFC 3339 time the user was last connected, when known and offline.
    pub last_seen_at: Option<String>,
}

/// Retention of stored data and the bounds on per-user growth. Zero means unlimited.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Messages kept per conversation, and events per room (approximate trimming).
    pub history_max_len: u64,
    /// Oldest message age kept, in seconds, in conversations and rooms.
    pub history_max_age_secs: u64,
    /// Events kept per user inbox (the recovery window).
    pub inbox_max_len: u64,
    /// An idle inbox expires after this many seconds.
    pub inbox_ttl_secs: u64,
    /// Conversations kept in each user's conversation list (the most recent; the
    /// oldest is dropped when a new one would exceed it).
    pub convs_max: u64,
    /// Conversation partners told of a presence transition: the most recent ones, so
    /// a transition costs bounded work whatever the number of partners.
    pub presence_fanout_max: u64,
    /// A guest (user record, directory entry) expires after this many seconds
    /// without a sign-in.
    pub guest_ttl_secs: u64,
    /// A session cannot be resumed once this many seconds old, however recently it
    /// was used (its sliding expiry aside); 0: no limit.
    pub session_max_age_secs: u64,
    /// Live sessions kept per user: a new one past it revokes the oldest first, so
    /// repeated sign-ins neither grow a set without bound nor slow each sign-in;
    /// 0: no limit.
    pub max_sessions_per_user: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            history_max_len: 10_000,
            history_max_age_secs: 0,
            inbox_max_len: 5_000,
            inbox_ttl_secs: 7 * 24 * 3600,
            convs_max: 1_000,
            presence_fanout_max: 200,
            guest_ttl_secs: 30 * 24 * 3600,
            session_max_age_secs: 30 * 24 * 3600,
            max_sessions_per_user: 50,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_adds_cursor() {
        let e = InboxEvent {
            id: StreamId { ms: 5, seq: 1 },
            prev: StreamId::ZERO,
            json: Bytes::from_static(br#"{"type":"message","message":{"id":"1-0"}}"#),
            trace: None,
        };
        assert_eq!(
            &e.frame()[..],
            br#"{"type":"message","message":{"id":"1-0"},"cursor":"5-1"}"#
        );
    }
}
