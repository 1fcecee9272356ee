//! The per-node router: which users have connections on this node, and the hand-off
//! of live events from the engine to those connections.
//!
//! The router subscribes a user's channel once, when their first connection on this
//! node arrives, and unsubscribes when the last one leaves. It never blocks and never
//! awaits while holding a lock: fan-out is `try_send` into each connection's bounded
//! outbox, and a full outbox closes that connection (slow consumer, 4010) rather than
//! slowing anyone else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chat_engine::{Engine, EngineError, EventSink, LiveEvent};
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
    /// A room event, or a room catch-up (`room_router.rs`).
    Room(Arc<crate::room_router::RoomOut>),
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

/// One user's connections on this node.
#[derive(Default)]
struct Slot {
    conns: Mutex<Vec<ConnHandle>>,
    /// Serializes subscribe/unsubscribe for this user; true while subscribed.
    subscribed: tokio::sync::Mutex<bool>,
}

/// The node's map of users to local connections.
#[derive(Default)]
pub struct Router {
    users: Mutex<HashMap<Arc<str>, Arc<Slot>>>,
    /// Watched user → local connections that `watch` them (presence events).
    watchers: Mutex<HashMap<Arc<str>, Vec<ConnHandle>>>,
    next_conn: AtomicU64,
    /// Room memberships of local users and the room subscriptions (`room_router.rs`).
    pub(crate) rooms: crate::room_router::RoomTable,
}

impl Router {
    pub fn new() -> Arc<Router> {
        Arc::new(Router::default())
    }

    /// A fresh connection id (for logs and removal).
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Registers a connection and makes sure the user's channel is subscribed.
    /// Returns once live events for the user reach `conn`'s outbox.
    pub async fn attach(
        &self,
        engine: &dyn Engine,
        user: &str,
        conn: ConnHandle,
    ) -> Result<(), EngineError> {
        let slot = {
            let mut users = lock(&self.users);
            let slot = users.entry(Arc::from(user)).or_default().clone();
            lock(&slot.conns).push(conn.clone());
            slot
        };
        let mut subscribed = slot.subscribed.lock().await;
        if !*subscribed {
            if let Err(e) = engine.subscribe(user).await {
                drop(subscribed);
                self.detach(engine, user, conn.id).await;
                return Err(e);
            }
            *subscribed = true;
            metrics::gauge!(crate::metric::PUBSUB_SUBSCRIPTIONS).increment(1.0);
        }
        Ok(())
    }

    /// Removes a connection; unsubscribes the user when it was their last one here.
    pub async fn detach(&self, engine: &dyn Engine, user: &str, conn_id: u64) {
        let slot = {
            let users = lock(&self.users);
            let Some(slot) = users.get(user).cloned() else {
                return;
            };
            lock(&slot.conns).retain(|c| c.id != conn_id);
            slot
        };
        let mut subscribed = slot.subscribed.lock().await;
        if lock(&slot.conns).is_empty() {
            self.forget_rooms(engine, user).await;
            if *subscribed {
                if let Err(e) = engine.unsubscribe(user).await {
                    tracing::warn!(user.id = user, error = %e, "unsubscribe failed");
                }
                *subscribed = false;
                metrics::gauge!(crate::metric::PUBSUB_SUBSCRIPTIONS).decrement(1.0);
            }
            let mut users = lock(&self.users);
            if lock(&slot.conns).is_empty()
                && users.get(user).is_some_and(|s| Arc::ptr_eq(s, &slot))
            {
                users.remove(user);
            }
        }
    }

    /// Whether `user` has a connection on this node (registered and not yet removed).
    pub fn has_connections(&self, user: &str) -> bool {
        lock(&self.users)
            .get(user)
            .is_some_and(|slot| !lock(&slot.conns).is_empty())
    }

    /// Closes every local connection of `user` with `code`.
    pub fn close_user(&self, user: &str, code: u16) {
        let slot = lock(&self.users).get(user).cloned();
        if let Some(slot) = slot {
            for conn in lock(&slot.conns).iter() {
                conn.closer.close(code);
            }
        }
    }

    /// Replaces a connection's watch list: it stops watching `old`, starts `new`.
    pub fn set_watch(&self, conn: &ConnHandle, old: &[String], new: &[String]) {
        let mut watchers = lock(&self.watchers);
        for user in old {
            if let Some(list) = watchers.get_mut(user.as_str()) {
                list.retain(|c| c.id != conn.id);
                if list.is_empty() {
                    watchers.remove(user.as_str());
                }
            }
        }
        for user in new {
            let list = watchers.entry(Arc::from(user.as_str())).or_default();
            if !list.iter().any(|c| c.id == conn.id) {
                list.push(conn.clone());
            }
        }
    }

    /// Every local connection, for shutdown.
    pub fn all_connections(&self) -> Vec<ConnHandle> {
        lock(&self.users)
            .values()
            .flat_map(|slot| lock(&slot.conns).clone())
            .collect()
    }

    pub(crate) fn fan_out(&self, user: &str, make: impl Fn() -> Out) {
        let slot = lock(&self.users).get(user).cloned();
        if let Some(slot) = slot {
            for conn in lock(&slot.conns).iter() {
                conn.push(make());
            }
        }
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

    fn deliver_room(&self, event: Arc<chat_engine::RoomEvent>) {
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
