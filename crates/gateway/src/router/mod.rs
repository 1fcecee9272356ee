//! The per-node router: which users have connections on this node, and the hand-off
//! of live events from the engine to those connections.
//!
//! The router subscribes a user's channel once, when their first connection on this
//! node arrives, and unsubscribes when the last one leaves. It never blocks and never
//! awaits while holding a lock: fan-out is `try_send` into each connection's bounded
//! outbox, and a full outbox closes that connection (slow consumer, 4010) rather than
//! slowing anyone else.
//!
//! This module holds what travels (the outbox items, a connection's handle) and the
//! engine's sink; `users.rs` the users' side (connections, subscriptions, watchers),
//! `rooms.rs` the rooms' side (memberships, room subscriptions, room fan-out).

mod rooms;
mod users;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chat_engine::{EventSink, LiveEvent, RoomEvent};
use chat_protocol::{close, StreamId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::sync::lock;

/// An inbox event as it travels to local connections: the frame is built once per
/// node and shared.
#[derive(Debug)]
pub struct Routed {
    pub id: StreamId,
    pub prev: StreamId,
    pub frame: Bytes,
}

/// What a connection's outbox carries.
#[derive(Debug)]
pub enum Out {
    /// A stored event: sent in cursor order, gaps filled from the inbox.
    Event(Arc<Routed>),
    /// A frame sent as is (typing, presence). Behind an `Arc` so `Out` stays two
    /// words: every connection's outbox allocates its first block of slots up front.
    Frame(Arc<Bytes>),
    /// Live delivery may have missed events: read the inbox after the last cursor.
    CatchUp,
    /// A room event, or a room catch-up (`rooms.rs`).
    Room(Arc<RoomOut>),
}

/// What a connection's outbox carries for a room.
#[derive(Debug)]
pub enum RoomOut {
    /// A room event (message or `member`), in the room's id order.
    Event(RoomEvent),
    /// The room may have had events this node did not see: read them.
    CatchUp(String),
}

/// Asks a connection to close with a code, from any task.
#[derive(Debug, Default)]
pub struct Closer {
    code: AtomicU16,
    token: CancellationToken,
}

impl Closer {
    /// Requests the close; the first code wins.
    pub fn close(&self, code: u16) {
        let _ = self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.token.cancel();
    }

    pub fn code(&self) -> Option<u16> {
        match self.code.load(Ordering::Acquire) {
            0 => None,
            c => Some(c),
        }
    }

    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

/// The router's handle on one local connection.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    pub id: u64,
    pub tx: mpsc::Sender<Out>,
    pub closer: Arc<Closer>,
}

impl ConnHandle {
    /// Queues without waiting; a full outbox closes the connection as a slow consumer.
    fn push(&self, out: Out) {
        match self.tx.try_send(out) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.closer.code().is_none() {
                    metrics::counter!(crate::metric::SLOW_CONSUMER_CLOSES).increment(1);
                    tracing::info!(conn.id = self.id, "closing slow consumer: outbox full");
                }
                self.closer.close(close::SLOW_CONSUMER);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// The node's map of users and rooms to local connections.
#[derive(Default)]
pub struct Router {
    /// User → their local connections and channel subscription (`users.rs`).
    users: Mutex<HashMap<Arc<str>, Arc<users::Slot>>>,
    /// Watched user → local connections that `watch` them (presence events).
    watchers: Mutex<HashMap<Arc<str>, Vec<ConnHandle>>>,
    next_conn: AtomicU64,
    /// Room memberships of local users and the room subscriptions (`rooms.rs`).
    rooms: rooms::RoomTable,
}

impl Router {
    pub fn new() -> Arc<Router> {
        Arc::new(Router::default())
    }

    /// A fresh connection id (for logs and removal).
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl EventSink for Router {
    fn deliver(&self, user_id: &str, event: LiveEvent) {
        match event {
            LiveEvent::Inbox(ev) => {
                // The sender's trace continues here, on the recipient's node.
                let span = ev.trace.as_deref().map(|parent| {
                    let span = tracing::info_span!("chat.deliver", user.id = %user_id, message.cursor = %ev.id);
                    crate::telemetry::set_remote_parent(&span, parent);
                    span
                });
                let _entered = span.as_ref().map(|s| s.enter());
                let routed = Arc::new(Routed {
                    id: ev.id,
                    prev: ev.prev,
                    frame: ev.frame(),
                });
                self.fan_out(user_id, || Out::Event(routed.clone()));
            }
            LiveEvent::Ephemeral(frame) => {
                let frame = Arc::new(frame);
                self.fan_out(user_id, || Out::Frame(frame.clone()));
            }
            LiveEvent::Disconnect => self.close_user(user_id, close::UNAUTHORIZED),
            LiveEvent::Room(event) => self.route_membership(user_id, event),
        }
    }

    fn deliver_room(&self, event: Arc<RoomEvent>) {
        self.route_room_event(event);
    }

    fn presence(&self, user_id: &str, frame: Bytes) {
        let frame = Arc::new(frame);
        let watchers = lock(&self.watchers).get(user_id).cloned();
        for conn in watchers.into_iter().flatten() {
            conn.push(Out::Frame(frame.clone()));
        }
    }

    fn resync(&self) {
        for conn in self.all_connections() {
            conn.push(Out::CatchUp);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every outbox allocates its first block of slots when created: keep a slot small.
    #[test]
    fn outbox_items_are_two_words() {
        assert_eq!(size_of::<super::Out>(), 16);
    }
}
