//! The memory engine's live delivery ([`Live`]): each node on the state (one, or
//! several sharing it in tests) has a sink and the users and rooms it subscribed to;
//! an event goes to the sink of every node whose subscription matches, as Redis
//! pub/sub would route it.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::faults::Op;
use super::MemoryEngine;
use crate::{EngineError, EventSink, Live, LiveEvent, RoomEvent};

/// The nodes on one state, by a key handed out when each joins.
#[derive(Default)]
pub(super) struct Nodes {
    by_key: BTreeMap<u64, NodeLive>,
    next_key: u64,
}

/// What one node receives.
struct NodeLive {
    sink: Arc<dyn EventSink>,
    /// Users whose events go to `sink`.
    users: HashSet<String>,
    /// Rooms whose events go to `sink`.
    rooms: HashSet<String>,
}

impl Nodes {
    /// A new node delivering to `sink`: its key.
    pub(super) fn add(&mut self, sink: Arc<dyn EventSink>) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.by_key.insert(
            key,
            NodeLive {
                sink,
                users: HashSet::new(),
                rooms: HashSet::new(),
            },
        );
        key
    }

    /// Takes the node out, with its subscriptions. The caller drops what it returns
    /// after releasing the state lock (a sink may own another engine handle).
    pub(super) fn remove(&mut self, key: u64) -> Option<impl Sized> {
        self.by_key.remove(&key)
    }

    fn node(&mut self, key: u64) -> Option<&mut NodeLive> {
        self.by_key.get_mut(&key)
    }

    /// Whether any node subscribed to the user.
    pub(super) fn has_user(&self, user: &str) -> bool {
        self.by_key.values().any(|n| n.users.contains(user))
    }

    /// Hands the user's event to every node subscribed to them.
    pub(super) fn deliver(&self, user: &str, event: LiveEvent) {
        for node in self.by_key.values().filter(|n| n.users.contains(user)) {
            node.sink.deliver(user, event.clone());
        }
    }

    /// Hands the room's event to every node subscribed to the room.
    pub(super) fn deliver_room(&self, event: &Arc<RoomEvent>) {
        for node in self
            .by_key
            .values()
            .filter(|n| n.rooms.contains(&event.room))
        {
            node.sink.deliver_room(event.clone());
        }
    }

    /// A presence transition goes to every node (the global presence channel).
    pub(super) fn presence(&self, user: &str, frame: &Bytes) {
        for node in self.by_key.values() {
            node.sink.presence(user, frame.clone());
        }
    }
}

impl MemoryEngine {
    /// Runs `f` on this node's subscribed users and rooms (its entry lives as long
    /// as this handle: it leaves in `Drop`).
    pub(super) fn with_node(&self, f: impl FnOnce(&mut HashSet<String>, &mut HashSet<String>)) {
        if let Some(node) = self.lock().nodes.node(self.key) {
            f(&mut node.users, &mut node.rooms);
        }
    }
}

#[async_trait]
impl Live for MemoryEngine {
    async fn subscribe(&self, user_id: &str) -> Result<(), EngineError> {
        self.faults.check(Op::Subscribe)?;
        self.with_node(|users, _| {
            users.insert(user_id.to_string());
        });
        Ok(())
    }

    async fn unsubscribe(&self, user_id: &str) -> Result<(), EngineError> {
        self.with_node(|users, _| {
            users.remove(user_id);
        });
        Ok(())
    }

    async fn publish_ephemeral(&self, user_id: &str, frame: &str) -> Result<(), EngineError> {
        self.lock().nodes.deliver(
            user_id,
            LiveEvent::Ephemeral(Bytes::from(frame.to_string())),
        );
        Ok(())
    }

    async fn disconnect_user(&self, user_id: &str) -> Result<(), EngineError> {
        self.lock().nodes.deliver(user_id, LiveEvent::Disconnect);
        Ok(())
    }
}
