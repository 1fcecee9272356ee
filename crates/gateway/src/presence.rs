//! The node's presence bookkeeping, all of it: counting a connection when it opens
//! and closes, repairing a count whose decrement was lost, heartbeating this node,
//! reaping nodes that died, and clearing what an earlier run of this node left.
//!
//! Presence counts connections cluster-wide (the engine's `connection_opened` /
//! `connection_closed`, per user and node). A decrement that fails (the backend was
//! unreachable when a connection closed) is not retried — it may have run after all —
//! but remembered: once the user has no connection on this node any more, the
//! heartbeat task drops this node's count for them ([`repair`], idempotent). A repair
//! must never drop the count of a connection being opened, so opening (registering and
//! counting) holds the user's gate shared and a repair holds it exclusively. The gate
//! is per user: a repair of one user never delays the sign-ins of others.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chat_engine::EngineError;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::router::ConnHandle;
use crate::state::AppState;
use crate::sync::lock;

/// How often a node proves it is alive, and how long the proof lasts: a node that
/// died is noticed by the others within `HEARTBEAT_TTL + HEARTBEAT_EVERY` (< 30 s).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
const HEARTBEAT_TTL: u64 = 15;

/// This node's presence state: the users whose count needs a repair, and the gates.
#[derive(Default)]
pub struct Presence {
    /// Users whose presence count this node failed to decrement: dropped once they
    /// have no connection here any more (see [`repair`]).
    repairs: Mutex<HashSet<String>>,
    gates: UserGates,
}

impl Presence {
    /// A connection of `user` closed (or failed to open) and its count could not be
    /// decremented: repaired by the next heartbeat.
    fn repair_needed(&self, user: &str) {
        lock(&self.repairs).insert(user.to_string());
    }
}

/// Registers a signed-in connection with the router (subscribing to the user's live
/// events) and counts it; returns the user's connection count across the cluster
/// (the caller enforces the per-user cap). On a backend error nothing stays
/// registered and the caller refuses the sign-in (`unavailable`).
pub async fn open(state: &AppState, user: &str, handle: ConnHandle) -> Result<u64, EngineError> {
    let conn_id = handle.id;
    let gate = state.presence.gates.shared(user).await;
    // Subscribe before reading the inbox: whatever is published from now on lands
    // in the outbox, so recovery then live leaves no gap.
    if let Err(e) = state.router.attach(&*state.engine, user, handle).await {
        tracing::warn!(error = %e, "subscribe failed during sign-in");
        return Err(e);
    }
    // Presence counts connections cluster-wide; it also enforces the per-user cap.
    match state.engine.connection_opened(user, &state.node_id).await {
        Ok(count) => Ok(count),
        Err(e) => {
            tracing::warn!(error = %e, "presence update failed during sign-in");
            state.router.detach(&*state.engine, user, conn_id).await;
            drop(gate);
            // The increment may have run after all (a timeout): repair it.
            state.presence.repair_needed(user);
            Err(e)
        }
    }
}

/// Unregisters a connection and uncounts it; a failed decrement is repaired later.
pub async fn close(state: &AppState, user: &str, conn_id: u64) {
    state.router.detach(&*state.engine, user, conn_id).await;
    if let Err(e) = state.engine.connection_closed(user, &state.node_id).await {
        // Retrying the decrement is not safe (it may have run): the heartbeat task
        // drops this node's count once the user has no connection here.
        tracing::warn!(error = %e, "presence update failed on close; will repair");
        state.presence.repair_needed(user);
    }
}

/// For each user whose count could not be decremented and who has no connection on
/// this node any more: drops this node's count (idempotent, unlike retrying a
/// decrement that may have run after all). Stops at the first backend error; the
/// rest waits for the next call (every heartbeat).
pub async fn repair(state: &AppState) {
    let pending: Vec<String> = lock(&state.presence.repairs).iter().cloned().collect();
    for user in pending {
        if state.router.has_connections(&user) {
            continue;
        }
        let _gate = state.presence.gates.exclusive(&user).await;
        if state.router.has_connections(&user) {
            continue;
        }
        match state.engine.drop_presence(&user, &state.node_id).await {
            Ok(()) => {
                lock(&state.presence.repairs).remove(&user);
                metrics::counter!(crate::metric::PRESENCE_REPAIRS).increment(1);
                tracing::info!(user.id = %user, "presence count repaired after a failed close");
            }
            Err(e) => {
                tracing::warn!(user.id = %user, error = %e, "presence repair failed; will retry");
                return;
            }
        }
    }
}

/// At start: a node restarted with the same id must not leave its old users online.
pub async fn reset_node(state: &AppState) {
    if let Err(e) = state.engine.reset_node(&state.node_id).await {
        tracing::warn!(error = %e, "could not clear presence left by an earlier run of this node");
    }
}

/// Heartbeats this node, repairs counts and reaps nodes that stopped heartbeating (so
/// a crashed node's users do not stay online), until shutdown.
pub fn spawn_heartbeat(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = state.engine.heartbeat(&state.node_id, HEARTBEAT_TTL).await {
                tracing::warn!(error = %e, "heartbeat failed");
                continue;
            }
            repair(&state).await;
            match state.engine.reap_dead_nodes().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(nodes = n, "reaped dead nodes: their users are offline"),
                Err(e) => tracing::warn!(error = %e, "reaping dead nodes failed"),
            }
        }
    });
}

/// One read-write gate per user, existing only while someone holds or awaits it.
#[derive(Default)]
struct UserGates {
    gates: Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

/// A held gate; the user's entry is removed when the last holder lets go.
struct Gate<'a> {
    gates: &'a UserGates,
    user: String,
    lock: Arc<RwLock<()>>,
    guard: Option<Held>,
}

/// The guards are held for their drop only.
enum Held {
    Shared { _guard: OwnedRwLockReadGuard<()> },
    Exclusive { _guard: OwnedRwLockWriteGuard<()> },
}

impl UserGates {
    fn lock_for(&self, user: &str) -> Arc<RwLock<()>> {
        lock(&self.gates)
            .entry(user.to_string())
            .or_default()
            .clone()
    }

    /// Held while a connection of `user` is registered and counted.
    async fn shared(&self, user: &str) -> Gate<'_> {
        let lock = self.lock_for(user);
        let guard = Held::Shared {
            _guard: lock.clone().read_owned().await,
        };
        self.gate(user, lock, guard)
    }

    /// Held while `user`'s count is dropped.
    async fn exclusive(&self, user: &str) -> Gate<'_> {
        let lock = self.lock_for(user);
        let guard = Held::Exclusive {
            _guard: lock.clone().write_owned().await,
        };
        self.gate(user, lock, guard)
    }

    fn gate(&self, user: &str, lock: Arc<RwLock<()>>, guard: Held) -> Gate<'_> {
        Gate {
            gates: self,
            user: user.to_string(),
            lock,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.gates).len()
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut gates = lock(&self.gates.gates);
        // Clones are only made under this mutex: 2 = the map's and ours, so nobody
        // else holds or awaits this gate.
        if Arc::strong_count(&self.lock) == 2 {
            gates.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCKED: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_repair_blocks_its_user_only() {
        let gates = UserGates::default();
        let repair = gates.exclusive("alice").await;
        // Others sign in while alice is being repaired.
        let bob = tokio::time::timeout(BLOCKED, gates.shared("bob"))
            .await
            .expect("bob's sign-in is not blocked by alice's repair");
        drop(bob);
        // Alice's own sign-in waits for the repair.
        assert!(tokio::time::timeout(BLOCKED, gates.shared("alice"))
            .await
            .is_err());
        drop(repair);
        let alice = tokio::time::timeout(BLOCKED, gates.shared("alice"))
            .await
            .expect("alice signs in once the repair is done");
        // Sign-ins share the gate; a repair waits for them.
        let alice2 = tokio::time::timeout(BLOCKED, gates.shared("alice"))
            .await
            .expect("sign-ins of one user do not block each other");
        assert!(tokio::time::timeout(BLOCKED, gates.exclusive("alice"))
            .await
            .is_err());
        drop(alice);
        assert!(tokio::time::timeout(BLOCKED, gates.exclusive("alice"))
            .await
            .is_err());
        drop(alice2);
        let repair = tokio::time::timeout(BLOCKED, gates.exclusive("alice"))
            .await
            .expect("the repair runs once no sign-in holds the gate");
        drop(repair);
        assert_eq!(gates.len(), 0, "no gate is kept for nobody");
    }

    #[tokio::test]
    async fn a_waiting_sign_in_keeps_the_gate() {
        let gates = Arc::new(UserGates::default());
        let repair = gates.exclusive("alice").await;
        let waiting = tokio::spawn({
            let gates = gates.clone();
            async move {
                let _gate = gates.shared("alice").await;
            }
        });
        tokio::time::sleep(BLOCKED).await;
        // The repair ends while a sign-in waits: the gate must stay (the waiter holds
        // it), else a second gate for alice could be created beside it.
        drop(repair);
        assert_eq!(
            gates.len(),
            1,
            "alice's gate stays while a sign-in awaits it"
        );
        waiting.await.expect("the waiting sign-in proceeds");
        assert_eq!(gates.len(), 0);
    }
}
