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
//!
//! `local.rs` holds what is remembered between calls (the node state keeps it); this
//! module the calls themselves.

pub(crate) mod local;

use std::sync::Arc;
use std::time::Duration;

use chat_engine::EngineError;

use crate::router::ConnHandle;
use crate::state::AppState;

/// How often a node proves it is alive, and how long the proof lasts: a node that
/// died is noticed by the others within `HEARTBEAT_TTL + HEARTBEAT_EVERY` (< 30 s).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
const HEARTBEAT_TTL: u64 = 15;

/// Registers a signed-in connection with the router (subscribing to the user's live
/// events) and counts it; returns the user's connection count across the cluster
/// (the caller enforces the per-user cap). On a backend error nothing stays
/// registered and the caller refuses the sign-in (`unavailable`).
pub async fn open(state: &AppState, user: &str, handle: ConnHandle) -> Result<u64, EngineError> {
    let conn_id = handle.id;
    let gate = state.presence.opening(user).await;
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
    let pending = state.presence.pending_repairs();
    for user in pending {
        if state.router.has_connections(&user) {
            continue;
        }
        let _gate = state.presence.repairing(&user).await;
        if state.router.has_connections(&user) {
            continue;
        }
        match state.engine.drop_presence(&user, &state.node_id).await {
            Ok(()) => {
                state.presence.repaired(&user);
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
