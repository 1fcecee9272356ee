//! Test doubles (feature `testing`; enable it in `[dev-dependencies]` only): a sink
//! that records what an engine delivers and waits for it, and in-memory clusters of
//! nodes sharing one state. Never used by the gateway's own code.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::memory::MemoryEngine;
use crate::{EventSink, InboxEvent, LiveEvent, Retention, RoomEvent};

/// An [`EventSink`] that records every call, for assertions: user events, room
/// events, presence frames and resyncs.
#[derive(Default)]
pub struct RecordingSink {
    seen: Mutex<Seen>,
    resyncs: AtomicUsize,
    /// Woken at each record, for [`RecordingSink::wait_for`].
    changed: Notify,
}

#[derive(Default)]
struct Seen {
    events: Vec<(String, LiveEvent)>,
    rooms: Vec<Arc<RoomEvent>>,
    presence: Vec<(String, String)>,
}

impl EventSink for RecordingSink {
    fn deliver(&self, user_id: &str, event: LiveEvent) {
        self.seen().events.push((user_id.to_string(), event));
        self.changed.notify_waiters();
    }

    fn resync(&self) {
        self.resyncs.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn presence(&self, user_id: &str, frame: Bytes) {
        let frame = String::from_utf8_lossy(&frame).into_owned();
        self.seen().presence.push((user_id.to_string(), frame));
        self.changed.notify_waiters();
    }

    fn deliver_room(&self, event: Arc<RoomEvent>) {
        self.seen().rooms.push(event);
        self.changed.notify_waiters();
    }
}

impl RecordingSink {
    pub fn new() -> Arc<RecordingSink> {
        Arc::default()
    }

    fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user's inbox events delivered live, in order.
    pub fn inbox(&self, user: &str) -> Vec<Arc<InboxEvent>> {
        self.user_events(user, |e| match e {
            LiveEvent::Inbox(ev) => Some(ev.clone()),
            _ => None,
        })
    }

    /// The JSON of the user's inbox events delivered live, in order.
    pub fn inbox_json(&self, user: &str) -> Vec<String> {
        self.user_events(user, |e| match e {
            LiveEvent::Inbox(ev) => Some(String::from_utf8_lossy(&ev.json).into_owned()),
            _ => None,
        })
    }

    /// The ephemeral frames delivered for the user (typing, partners' presence).
    pub fn ephemeral(&self, user: &str) -> Vec<String> {
        self.user_events(user, |e| match e {
            LiveEvent::Ephemeral(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        })
    }

    /// How many times the user's connections were told to close.
    pub fn disconnects(&self, user: &str) -> usize {
        self.user_events(user, |e| matches!(e, LiveEvent::Disconnect).then_some(()))
            .len()
    }

    /// The `member` events about the user delivered on their own channel.
    pub fn notices(&self, user: &str) -> Vec<Arc<RoomEvent>> {
        self.user_events(user, |e| match e {
            LiveEvent::Room(ev) => Some(ev.clone()),
            _ => None,
        })
    }

    /// The room's events delivered to the node (it subscribed to the room).
    pub fn room(&self, room: &str) -> Vec<Arc<RoomEvent>> {
        let seen = self.seen();
        seen.rooms
            .iter()
            .filter(|e| e.room == room)
            .cloned()
            .collect()
    }

    /// The presence frames of the user (the global presence channel).
    pub fn presence_of(&self, user: &str) -> Vec<String> {
        let seen = self.seen();
        seen.presence
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// How many resyncs the engine asked for.
    pub fn resyncs(&self) -> usize {
        self.resyncs.load(Ordering::SeqCst)
    }

    /// Whether nothing at all was delivered.
    pub fn is_empty(&self) -> bool {
        let seen = self.seen();
        seen.events.is_empty() && seen.rooms.is_empty() && seen.presence.is_empty()
    }

    fn user_events<T>(&self, user: &str, pick: impl Fn(&LiveEvent) -> Option<T>) -> Vec<T> {
        let seen = self.seen();
        seen.events
            .iter()
            .filter(|(u, _)| u == user)
            .filter_map(|(_, e)| pick(e))
            .collect()
    }

    /// Waits until `check` finds what it looks for in this sink (checked now and at
    /// each delivery), and returns it. Panics naming `what` after `timeout`.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&RecordingSink) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before checking, so a delivery in between is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(found) = check(self) {
                return found;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("timed out after {timeout:?} waiting for: {what}");
            }
        }
    }

    /// Waits until the user has at least `n` inbox events delivered live, and
    /// returns them all.
    pub async fn wait_for_inbox(
        &self,
        user: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<Arc<InboxEvent>> {
        let what = format!("{n} live inbox events for {user}");
        self.wait_for(&what, timeout, |sink| {
            let got = sink.inbox(user);
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

/// `n` memory-engine nodes (`node-1` … `node-n`) sharing one state, each with its
/// own recording sink: one process standing in for a cluster on one Redis.
pub fn memory_cluster(
    n: usize,
    retention: Retention,
) -> Vec<(Arc<MemoryEngine>, Arc<RecordingSink>)> {
    let mut nodes: Vec<(Arc<MemoryEngine>, Arc<RecordingSink>)> = Vec::with_capacity(n);
    for i in 1..=n {
        let sink = RecordingSink::new();
        let node_id = format!("node-{i}");
        let engine = match nodes.first() {
            Some((first, _)) => first.sibling(node_id, sink.clone()),
            None => MemoryEngine::new(node_id, retention.clone(), sink.clone()),
        };
        nodes.push((engine, sink));
    }
    nodes
}
