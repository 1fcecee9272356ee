//! Presence on Redis: connection counts, node heartbeats and the reaping of dead nodes.
//!
//! Each user has a hash `chat:{u:<id>}:pres` (node → open connections there); each node
//! a set of its users and a heartbeat key with a TTL, and `chat:nodes` remembers every
//! node that heartbeated. Opening and closing a connection are single Lua calls
//! (`presence.lua`), so the 0 → 1 and 1 → 0 transitions are decided atomically and
//! announced exactly once: to every conversation partner's channel (ephemeral) and on
//! the global [`keys::PRESENCE_CHANNEL`], which every node's subscriber hands to
//! `EventSink::presence`.
//!
//! A node whose heartbeat key expired is reaped by whichever node gets there first
//! (`SET …:reaping NX EX 30`): its users are popped from its set in batches, each batch
//! one atomic call that removes the node's field from their presence hashes and
//! announces those who went offline. A reaper that dies half-way leaves the rest for
//! the next one after the claim expires.

use fred::prelude::*;
use fred::types::{Expiration, SetOptions};

use super::conn::{map_err, text};
use super::social::{all_ok, number};
use super::{functions, keys, RedisEngine};
use crate::events::{now_ms, now_rfc3339};
use crate::{EngineError, PresenceInfo};

/// Users cleaned up per `chat_reap_batch` call: keeps each call short.
const REAP_BATCH: usize = 500;
/// How long a reaper's claim on a dead node lasts.
const REAP_CLAIM_SECS: i64 = 30;

impl RedisEngine {
    pub(super) async fn opened(&self, user: &str, node: &str) -> Result<u64, EngineError> {
        let keys = vec![
            keys::presence(user),
            keys::node_users(node),
            keys::convs(user),
        ];
        let args = vec![
            user.to_string(),
            node.to_string(),
            keys::PRESENCE_CHANNEL.to_string(),
        ];
        // Not idempotent: never written twice.
        let reply = self
            .fcall(functions::CONN_OPEN, &keys, &args, &self.once)
            .await?;
        Ok(number(&reply))
    }

    pub(super) async fn closed(&self, user: &str, node: &str) -> Result<(), EngineError> {
        let keys = vec![
            keys::presence(user),
            keys::node_users(node),
            keys::convs(user),
            keys::user(user),
        ];
        let args = vec![
            user.to_string(),
            node.to_string(),
            keys::PRESENCE_CHANNEL.to_string(),
            now_rfc3339(),
        ];
        self.fcall(functions::CONN_CLOSE, &keys, &args, &self.once)
            .await?;
        Ok(())
    }

    pub(super) async fn beat(&self, node: &str, ttl_secs: u64) -> Result<(), EngineError> {
        let keys = vec![keys::node_alive(node), keys::NODES.to_string()];
        let args = vec![
            node.to_string(),
            ttl_secs.max(1).to_string(),
            now_ms().to_string(),
        ];
        self.fcall(functions::HEARTBEAT, &keys, &args, &self.opts)
            .await?;
        Ok(())
    }

    pub(super) async fn reap(&self) -> Result<usize, EngineError> {
        let nodes: Vec<String> = self
            .cmd()
            .zrange(keys::NODES, 0, -1, None, false, None, false)
            .await
            .map_err(map_err)?;
        if nodes.is_empty() {
            return Ok(0);
        }
        let pipeline = self.pool.next_connected().pipeline();
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
            self.reap_node(node).await?;
            reaped += 1;
        }
        Ok(reaped)
    }

    pub(super) async fn reap_node(&self, node: &str) -> Result<(), EngineError> {
        tracing::info!(node, "node stopped heartbeating: closing its connections");
        let keys = vec![keys::node_users(node)];
        let args = vec![
            node.to_string(),
            keys::PRESENCE_CHANNEL.to_string(),
            now_rfc3339(),
            REAP_BATCH.to_string(),
        ];
        loop {
            let left = self
                .fcall(functions::REAP_BATCH, &keys, &args, &self.opts)
                .await?;
            if number(&left) == 0 {
                break;
            }
        }
        // Only if it did not come back meanwhile: a heartbeat re-adds it with a newer score.
        let alive: i64 = self
            .cmd()
            .exists(keys::node_alive(node))
            .await
            .map_err(map_err)?;
        if alive == 0 {
            let _: i64 = self.cmd().zrem(keys::NODES, node).await.map_err(map_err)?;
        }
        // The set emptied itself (SPOP). Release the claim: a later reaper finds the
        // node gone from chat:nodes, or its set empty.
        let _: i64 = self
            .cmd()
            .del(keys::node_reaping(node))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    pub(super) async fn presence_of(
        &self,
        users: &[String],
    ) -> Result<Vec<PresenceInfo>, EngineError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.pool.next_connected().pipeline();
        for user in users {
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

    pub(super) async fn disconnect(&self, user: &str) -> Result<(), EngineError> {
        let _: i64 = self
            .pool
            .next_connected()
            .with_options(&self.opts)
            .spublish(keys::channel(user), "! disconnect")
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
