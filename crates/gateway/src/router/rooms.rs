//! The router's room side: which local users belong to which rooms, the room
//! subscriptions that follow from it, and the hand-off of room events to those
//! users' connections.
//!
//! A node subscribes to a room's channel while at least one user with a connection
//! here is a member. Membership changes arrive three ways and all end in
//! [`Router::set_room_member`]: a connection signing in (its user's rooms), a join or
//! leave made here, and `member` events from the engine (on the room's channel, or on
//! the user's own channel when the change was made on another node). Subscribing is
//! reconciled per room behind an async gate, so concurrent changes settle on the
//! right state; after a late subscription the room's local connections are asked to
//! catch up from the room's stream, so nothing published in between is missed.
//! Like the rest of the router it never awaits while holding a lock.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use chat_engine::{Engine, EngineError, RoomEvent};

use super::{Out, RoomOut, Router};
use crate::sync::lock;

/// Local room membership and subscriptions.
#[derive(Default)]
pub(super) struct RoomTable {
    members: Mutex<Members>,
    /// Room → gate serializing its (un)subscribe; the flag says subscribed.
    gates: Mutex<HashMap<Arc<str>, Arc<tokio::sync::Mutex<bool>>>>,
    /// The engine, for subscriptions started from the sink (set once by the state).
    engine: OnceLock<Weak<dyn Engine>>,
    /// The router itself, for those tasks.
    router: OnceLock<Weak<Router>>,
}

#[derive(Default)]
struct Members {
    /// Room → local users who are members.
    by_room: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// Local user → rooms.
    by_user: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

impl Router {
    /// Gives the router the engine it subscribes rooms with (called once).
    pub fn set_engine(self: &Arc<Self>, engine: &Arc<dyn Engine>) {
        let _ = self.rooms.engine.set(Arc::downgrade(engine));
        let _ = self.rooms.router.set(Arc::downgrade(self));
    }

    /// Records whether local user `user` is a member of `room` (no subscription
    /// change; see [`Router::sync_room`]). Returns whether anything changed.
    fn record_member(&self, room: &str, user: &str, member: bool) -> bool {
        let mut m = lock(&self.rooms.members);
        if member {
            let added = m
                .by_room
                .entry(Arc::from(room))
                .or_default()
                .insert(Arc::from(user));
            m.by_user
                .entry(Arc::from(user))
                .or_default()
                .insert(Arc::from(room));
            added
        } else {
            let removed = m.by_room.get_mut(room).is_some_and(|s| s.remove(user));
            if m.by_room.get(room).is_some_and(|s| s.is_empty()) {
                m.by_room.remove(room);
            }
            if let Some(rooms) = m.by_user.get_mut(user) {
                rooms.remove(room);
                if rooms.is_empty() {
                    m.by_user.remove(user);
                }
            }
            removed
        }
    }

    /// Makes local user `user` a member (or not) of `room` and brings the room's
    /// subscription in line; returns once it is (or failed).
    pub async fn set_room_member(
        &self,
        engine: &dyn Engine,
        room: &str,
        user: &str,
        member: bool,
    ) -> Result<(), EngineError> {
        self.record_member(room, user, member);
        self.sync_room(engine, room).await.map(|_| ())
    }

    /// Subscribes or unsubscribes `room` as its local membership says. Returns
    /// whether it subscribed just now.
    pub async fn sync_room(&self, engine: &dyn Engine, room: &str) -> Result<bool, EngineError> {
        let gate = lock(&self.rooms.gates)
            .entry(Arc::from(room))
            .or_default()
            .clone();
        let mut subscribed = gate.lock().await;
        let wanted = lock(&self.rooms.members).by_room.contains_key(room);
        let mut started = false;
        if wanted && !*subscribed {
            engine.subscribe_room(room).await?;
            *subscribed = true;
            started = true;
            metrics::gauge!(crate::metric::PUBSUB_SUBSCRIPTIONS).increment(1.0);
        } else if !wanted && *subscribed {
            if let Err(e) = engine.unsubscribe_room(room).await {
                tracing::warn!(room.id = room, error = %e, "room unsubscribe failed");
            }
            *subscribed = false;
            metrics::gauge!(crate::metric::PUBSUB_SUBSCRIPTIONS).decrement(1.0);
        }
        if !*subscribed {
            let mut gates = lock(&self.rooms.gates);
            // Nobody else holds it (the map's and ours): drop the idle gate.
            if Arc::strong_count(&gate) <= 2
                && !lock(&self.rooms.members).by_room.contains_key(room)
            {
                gates.remove(room);
            }
        }
        Ok(started)
    }

    /// `sync_room` from a synchronous caller (the sink): in a task. A room that got
    /// subscribed late asks its local connections to catch up.
    fn sync_room_later(&self, room: &str) {
        let Some(engine) = self.rooms.engine.get().and_then(Weak::upgrade) else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(router) = self.rooms.router.get().and_then(Weak::upgrade) else {
            return;
        };
        let room = room.to_string();
        handle.spawn(async move {
            match router.sync_room(engine.as_ref(), &room).await {
                Ok(true) => router.room_catch_up(&room),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(room.id = %room, error = %e, "room subscribe failed; catching up");
                    router.room_catch_up(&room);
                }
            }
        });
    }

    /// The rooms local user `user` is a member of.
    pub fn local_rooms(&self, user: &str) -> Vec<String> {
        lock(&self.rooms.members)
            .by_user
            .get(user)
            .map(|r| r.iter().map(|r| r.to_string()).collect())
            .unwrap_or_default()
    }

    /// The user has no connection here any more: drops their memberships and
    /// unsubscribes rooms nobody local needs.
    pub(crate) async fn forget_rooms(&self, engine: &dyn Engine, user: &str) {
        let rooms = self.local_rooms(user);
        for room in rooms {
            self.record_member(&room, user, false);
            if let Err(e) = self.sync_room(engine, &room).await {
                tracing::warn!(room.id = %room, error = %e, "room unsubscribe failed");
            }
        }
    }

    fn room_catch_up(&self, room: &str) {
        let users: Vec<Arc<str>> = lock(&self.rooms.members)
            .by_room
            .get(room)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let out = Arc::new(RoomOut::CatchUp(room.to_string()));
        for user in users {
            self.fan_out(&user, || Out::Room(out.clone()));
        }
    }

    /// An event of a subscribed room: to every local member's connections. A
    /// `member` event about a local user also changes their membership here.
    pub(crate) fn route_room_event(&self, event: Arc<RoomEvent>) {
        let out = Arc::new(RoomOut::Event(RoomEvent::clone(&event)));
        if let Some((user, true)) = &event.change {
            if self.has_connections(user) && self.record_member(&event.room, user, true) {
                self.sync_room_later(&event.room);
            }
        }
        let users: Vec<Arc<str>> = lock(&self.rooms.members)
            .by_room
            .get(event.room.as_str())
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for user in users {
            self.fan_out(&user, || Out::Room(out.clone()));
        }
        if let Some((user, false)) = &event.change {
            if self.record_member(&event.room, user, false) {
                self.sync_room_later(&event.room);
            }
        }
    }

    /// A `member` event about `user` from their own channel (the change may have
    /// been made on another node): to their connections, and followed here.
    pub(crate) fn route_membership(&self, user: &str, event: Arc<RoomEvent>) {
        let joined = matches!(&event.change, Some((u, true)) if u == user);
        let left = matches!(&event.change, Some((u, false)) if u == user);
        if joined && self.has_connections(user) && self.record_member(&event.room, user, true) {
            self.sync_room_later(&event.room);
        }
        let room = event.room.clone();
        let out = Arc::new(RoomOut::Event(RoomEvent::clone(&event)));
        self.fan_out(user, || Out::Room(out.clone()));
        if left && self.record_member(&room, user, false) {
            self.sync_room_later(&room);
        }
    }
}
