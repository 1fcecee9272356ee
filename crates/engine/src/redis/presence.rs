//! Presence on Redis ([`Presence`]): connection counts, node heartbeats and the
//! reaping of dead nodes.
//!
//! Each user has a hash `chat:{u:<id>}:pres` (node → open connections there); each node
//! a set of its users and a heartbeat key with a TTL, and `chat:nodes` remembers every
//! node that heartbeated. Opening and closing a connection decide the 0 → 1 and 1 → 0
//! transitions atomically in Lua (`presence.lua`), so each is announced exactly once:
//! to every conversation partner's channel (ephemeral) and on the global
//! [`keys::PRESENCE_CHANNEL`], which every node's subscriber hands to
//! `EventSink::presence`. How the writes are split on a cluster is
//! [`super::cluster`]'s business; this file calls the [`super::shape::Shape`] chosen
//! at connect.
//!
//! A node whose heartbeat key expired is reaped by whichever node gets there first
//! (`SET …:reaping NX EX 30`): its users are popped from its set in batches, each
//! losing the node's field of their presence hash, and those who went offline are
//! announced. A reaper that dies half-way leaves the rest for the next one after the
//! claim expires.

use async_trait::async_trait;
use fred::prelude::*;
use fred::types::{Expiration, SetOptions};

use super::conn::{all_ok, map_err, number, text};
use super::{keys, RedisEngine};
use crate::{EngineError, Presence, PresenceInfo};

/// How long a reaper's claim on a dead node lasts.
const REAP_CLAIM_SECS: i64 = 30;

#[async_trait]
impl Presence for RedisEngine {
    async fn connection_opened(&self, user_id: &str, node: &str) -> Result<u64, EngineError> {
        self.shape.connection_opened(user_id, node).await
    }

    async fn connection_closed(&self, user_id: &str, node: &str) -> Result<(), EngineError> {
        self.shape.connection_closed(user_id, node).await
    }

    async fn drop_presence(&self, user_id: &str, node: &str) -> Result<(), EngineError> {
        self.shape.drop_presence(user_id, node).await
    }

    async fn heartbeat(&self, node: &str, ttl_secs: u64) -> Result<(), EngineError> {
        self.shape.heartbeat(node, ttl_secs).await
    }

    async fn reap_dead_nodes(&self) -> Result<usize, EngineError> {
        // Every node runs this every few seconds: expired guests leave the directory.
        self.sweep_guests().await?;
        let nodes: Vec<String> = self
            .core
            .cmd()
            .zrange(keys::NODES, 0, -1, None, false, None, false)
            .await
            .map_err(map_err)?;
        if nodes.is_empty() {
            return Ok(0);
        }
        let pipeline = self.core.pool.next_connected().pipeline();
        for node in &nodes {
            let _: () = pipeline
                .exists(keys::node_alive(node))
                .await
                .map_err(map_err)?;
        }
        let alive = all_ok(pipeline.try_all::<Value>().await)?;
        let mut reaped = 0;
        for (node, alive) in nodes.iter().zip(alive) {
            if number(&alive) > 0 {
                continue;
            }
            let claimed: Value = self
                .core
                .cmd()
                .set(
                    keys::node_reaping(node),
                    "1",
                    Some(Expiration::EX(REAP_CLAIM_SECS)),
                    Some(SetOptions::NX),
                    false,
                )
                .await
                .map_err(map_err)?;
            if text(claimed).is_none() {
                continue; // another node is on it
            }
            self.reset_node(node).await?;
            reaped += 1;
        }
        Ok(reaped)
    }

    async fn reset_node(&self, node: &str) -> Result<(), EngineError> {
        tracing::info!(node, "node stopped heartbeating: closing its connections");
        self.shape.drop_node_users(node).await?;
        // Only if it did not come back meanwhile: a heartbeat re-adds it with a newer score.
        let alive: i64 = self
            .core
            .cmd()
            .exists(keys::node_alive(node))
            .await
            .map_err(map_err)?;
        if alive == 0 {
            let _: i64 = self
                .core
                .cmd()
                .zrem(keys::NODES, node)
                .await
                .map_err(map_err)?;
        }
        // The set emptied itself (SPOP). Release the claim: a later reaper finds the
        // node gone from chat:nodes, or its set empty.
        let _: i64 = self
            .core
            .cmd()
            .del(keys::node_reaping(node))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn presence(&self, user_ids: &[String]) -> Result<Vec<PresenceInfo>, EngineError> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.core.pool.next_connected().pipeline();
        for user in user_ids {
            let _: () = pipeline.hlen(keys::presence(user)).await.map_err(map_err)?;
            let _: () = pipeline
                .hget(keys::user(user), "seen")
                .await
                .map_err(map_err)?;
        }
        let replies = all_ok(pipeline.try_all::<Value>().await)?;
        Ok(replies
            .chunks(2)
            .map(|pair| {
                let online = pair.first().is_some_and(|n| number(n) > 0);
                PresenceInfo {
                    online,
                    last_seen_at: if online {
                        None
                    } else {
                        pair.get(1).cloned().and_then(text)
                    },
                }
            })
            .collect())
    }
}
