//! The router's users side: a user's local connections, their channel's
//! subscription (once for the first connection, dropped with the last), the watchers
//! of presence, and the fan-out to a user's connections.
//!
//! Never awaits while holding a `std` mutex: fan-out is `try_send` into each
//! connection's outbox. Only a user's own async gate is held across their
//! (un)subscribe, so that concurrent sign-ins and sign-outs settle on the right state.

use std::sync::{Arc, Mutex};

use chat_engine::{Engine, EngineError};

use super::{ConnHandle, Out, Router};
use crate::sync::lock;

/// One user's connections on this node.
#[derive(Default)]
pub(super) struct Slot {
    conns: Mutex<Vec<ConnHandle>>,
    /// Serializes subscribe/unsubscribe for this user; true while subscribed.
    subscribed: tokio::sync::Mutex<bool>,
}

impl Router {
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
