//! The in-memory engine: a single node with no Redis (`cargo run` on a laptop).
//!
//! It keeps the same promises as the Redis engine — per-user inboxes with a `prev`
//! chain, idempotent sends, sliding sessions, retention — inside one mutex, so the
//! protocol tests can run against both. It never does I/O and never blocks: live
//! events go to the sink while the state lock is held, which keeps them in order.
//!
//! This file holds the state and [`Node`]; each engine trait is implemented in the
//! file of its concern: [`accounts`] (users, sessions), [`messages`] (sends, history,
//! inboxes), [`live`] (subscriptions, ephemeral frames, disconnects), [`receipts`]
//! (read markers, conversation lists), [`presence`] (connection counts),
//! [`directory`] (name search) and [`rooms`] (group conversations).

mod accounts;
mod directory;
mod live;
mod messages;
mod presence;
mod receipts;
mod rooms;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use chat_protocol::{Message, StreamId};

use crate::events::now_ms;
use crate::{EventSink, InboxEvent, Node, Retention};

/// Everything a single node stores.
#[derive(Default)]
struct State {
    users: HashMap<String, String>,
    sessions: HashMap<String, accounts::StoredSession>,
    user_sessions: HashMap<String, HashSet<String>>,
    /// Conversation id → history: message id → (sequence number, message).
    conversations: HashMap<String, BTreeMap<StreamId, (u64, Message)>>,
    /// Conversation id → message count, last message and read markers.
    metas: HashMap<String, Meta>,
    /// User → peer → ms of the last message (the conversation index).
    convs: HashMap<String, HashMap<String, u64>>,
    /// The directory: (lower-cased name, id).
    names: BTreeSet<(String, String)>,
    /// Guests → when they expire (pushed back at each sign-in), and the same in
    /// expiry order.
    guests: HashMap<String, Instant>,
    guest_expiry: BTreeSet<(Instant, String)>,
    /// User → open connections.
    connections: HashMap<String, u64>,
    /// User → RFC 3339 time they went offline.
    seen: HashMap<String, String>,
    /// (conversation, from, nonce) → (message, expiry).
    nonces: HashMap<(String, String, String), (Message, Instant)>,
    inboxes: HashMap<String, Inbox>,
    subscribed: HashSet<String>,
    /// Rooms, memberships and the rooms subscribed here (`rooms.rs`).
    rooms: rooms::RoomsState,
    /// Last id handed out: ids are `<ms>-<seq>` and strictly increase, like Redis's.
    clock: StreamId,
    inserts: u64,
}

/// A conversation's counters, as the Redis engine keeps them in its meta hash.
#[derive(Default)]
struct Meta {
    /// Messages ever sent (since the last clear).
    seq: u64,
    last: Option<Message>,
    /// User → read marker (sequence number, message id).
    reads: HashMap<String, (u64, StreamId)>,
}

#[derive(Default)]
struct Inbox {
    events: VecDeque<Arc<InboxEvent>>,
    last: StreamId,
    /// Conversation id → the newest message a clear deleted: reads skip the
    /// conversation's messages up to it.
    cleared: HashMap<String, StreamId>,
}

/// A single-node engine keeping everything in this process.
pub struct MemoryEngine {
    state: Mutex<State>,
    sink: Arc<dyn EventSink>,
    retention: Retention,
    node_id: String,
}

impl MemoryEngine {
    /// The engine of node `node_id`, delivering live events to `sink`.
    pub fn new(
        node_id: impl Into<String>,
        retention: Retention,
        sink: Arc<dyn EventSink>,
    ) -> Arc<MemoryEngine> {
        Arc::new(MemoryEngine {
            state: Mutex::new(State::default()),
            sink,
            retention,
            node_id: node_id.into(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave half-written state that matters
        // more than staying up: recover the guard.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn next_id(&mut self) -> StreamId {
        let ms = now_ms();
        self.clock = if ms > self.clock.ms {
            StreamId { ms, seq: 0 }
        } else {
            self.clock.next()
        };
        self.clock
    }

    fn prune(&mut self) {
        self.inserts += 1;
        if !self.inserts.is_multiple_of(1024) {
            return;
        }
        let now = Instant::now();
        self.nonces.retain(|_, (_, exp)| *exp > now);
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, session)| session.expires <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for s in expired {
            if let Some(session) = self.sessions.remove(&s) {
                if let Some(set) = self.user_sessions.get_mut(&session.user) {
                    set.remove(&s);
                }
            }
        }
    }

    fn append_inbox(&mut self, user: &str, json: Bytes, max_len: u64) -> Arc<InboxEvent> {
        let id = self.next_id();
        let inbox = self.inboxes.entry(user.to_string()).or_default();
        let event = Arc::new(InboxEvent {
            id,
            prev: inbox.last,
            json,
            trace: None,
        });
        inbox.last = id;
        inbox.events.push_back(event.clone());
        if max_len > 0 {
            while inbox.events.len() as u64 > max_len {
                inbox.events.pop_front();
            }
        }
        if let Some(oldest) = inbox.events.front().map(|e| e.id) {
            // A clear older than every event left hides nothing any more.
            inbox.cleared.retain(|_, up_to| *up_to >= oldest);
        }
        event
    }
}

#[async_trait]
impl Node for MemoryEngine {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ready(&self) -> bool {
        true
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }
}
