//! The in-memory engine: a single node with no Redis (`cargo run` on a laptop), or
//! in tests several nodes sharing one state (`MemoryEngine::sibling`, feature
//! `testing`).
//!
//! It keeps the same promises as the Redis engine — per-user inboxes with a `prev`
//! chain, idempotent sends, sliding sessions, retention — inside one mutex, so the
//! protocol tests can run against both. It never does I/O and never blocks: live
//! events go to the sinks while the state lock is held, which keeps them in order.
//!
//! This file holds the state and [`Node`]; each engine trait is implemented in the
//! file of its concern: [`accounts`] (users, sessions), [`messages`] (sends, history,
//! inboxes), [`live`] (each node's sink and subscriptions, ephemeral frames,
//! disconnects), [`receipts`] (read markers, conversation lists), [`presence`]
//! (connection counts), [`directory`] (name search) and [`rooms`] (group
//! conversations). [`faults`] lets a test (feature `testing`) make named operations
//! fail.

mod accounts;
mod directory;
mod faults;
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

#[cfg(not(feature = "testing"))]
use faults::Faults;
#[cfg(feature = "testing")]
pub use faults::{Faults, Op};

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
    /// The nodes on this state, each with its sink and subscriptions (`live.rs`).
    nodes: live::Nodes,
    /// Rooms and memberships (`rooms.rs`).
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

/// An engine keeping everything in this process: one node, or (tests) one of several
/// handles on a shared state, each a node of its own.
pub struct MemoryEngine {
    /// Shared by the handles of `MemoryEngine::sibling`; a lone engine's own.
    state: Arc<Mutex<State>>,
    /// This node's entry in `State::nodes`: its sink and subscriptions.
    key: u64,
    retention: Retention,
    node_id: String,
    /// What a test made fail (nothing without the feature `testing`).
    faults: Faults,
}

impl MemoryEngine {
    /// The engine of node `node_id`, delivering live events to `sink`.
    pub fn new(
        node_id: impl Into<String>,
        retention: Retention,
        sink: Arc<dyn EventSink>,
    ) -> Arc<MemoryEngine> {
        MemoryEngine::on_state(Arc::default(), node_id.into(), retention, sink)
    }

    fn on_state(
        state: Arc<Mutex<State>>,
        node_id: String,
        retention: Retention,
        sink: Arc<dyn EventSink>,
    ) -> Arc<MemoryEngine> {
        let key = state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .nodes
            .add(sink);
        Arc::new(MemoryEngine {
            state,
            key,
            retention,
            node_id,
            faults: Faults::default(),
        })
    }

    /// Another node on this engine's state (same data and retention), with its own
    /// id, sink and subscriptions: an event goes to the sink of every node subscribed
    /// to its user or room, as Redis pub/sub routes it, so cross-node delivery runs in
    /// one process. Dropping a handle drops its node's subscriptions. Presence counts
    /// are the cluster's, but per-node cleanup (`drop_presence`, reaping) is not
    /// modelled.
    #[cfg(feature = "testing")]
    pub fn sibling(
        &self,
        node_id: impl Into<String>,
        sink: Arc<dyn EventSink>,
    ) -> Arc<MemoryEngine> {
        MemoryEngine::on_state(
            self.state.clone(),
            node_id.into(),
            self.retention.clone(),
            sink,
        )
    }

    /// This node's faults: what a test makes fail (see [`Faults`]).
    #[cfg(feature = "testing")]
    pub fn faults(&self) -> Faults {
        self.faults.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave half-written state that matters
        // more than staying up: recover the guard.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for MemoryEngine {
    fn drop(&mut self) {
        // Dropped after the lock is released: a sink may hold another handle.
        let node = self.lock().nodes.remove(self.key);
        drop(node);
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
