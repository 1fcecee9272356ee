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
//!
//! On Redis Cluster the node's set, the user hash and the partners' channels are in
//! other slots than the user's presence hash: the transition is still decided in one
//! call in the user's slot (`chat_pres_open` / `chat_pres_close` / `chat_pres_drop`),
//! and the rest (node set, `seen`, the publishes) follows from here.

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
        if self.clustered() {
            return self.cluster_opened(user, node).await;
        }
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
        if self.clustered() {
            return self.cluster_closed(user, node).await;
        }
        let (keys, args) = node_user_call(user, node);
        self.fcall(functions::CONN_CLOSE, &keys, &args, &self.once)
            .await?;
        Ok(())
    }

    /// See [`crate::Engine::drop_presence`].
    pub(super) async fn drop_node_presence(
        &self,
        user: &str,
        node: &str,
    ) -> Result<(), EngineError> {
        if self.clustered() {
            return self.cluster_drop(user, node).await;
        }
        let (keys, args) = node_user_call(user, node);
        // Idempotent: a resent call finds nothing left to drop.
        self.fcall(functions::CONN_DROP, &keys, &args, &self.opts)
            .await?;
        Ok(())
    }

    /// Cluster mode: `chat_pres_drop` in the user's slot, then the node's set and
    /// the announcement.
    async fn cluster_drop(&self, user: &str, node: &str) -> Result<(), EngineError> {
        let keys = vec![keys::presence(user), keys::convs(user)];
        let reply = self
            .fcall(functions::PRES_DROP, &keys, &[node.to_string()], &self.opts)
            .await?;
        let _: i64 = self
            .cmd()
            .srem(keys::node_users(node), user)
            .await
            .map_err(map_err)?;
        if let Value::Array(mut parts) = reply {
            if parts.len() == 2 && number(&parts[0]) == 1 {
                let partners = strings(parts.pop().unwrap_or(Value::Null));
                self.went_offline(user, &partners).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn beat(&self, node: &str, ttl_secs: u64) -> Result<(), EngineError> {
        if self.clustered() {
            // Two keys in two slots: two commands (one pipeline).
            let pipeline = self.pool.next_connected().pipeline();
            let now = now_ms();
            let _: () = pipeline
                .set(
                    keys::node_alive(node),
                    now,
                    Some(Expiration::EX(ttl_secs.max(1) as i64)),
                    None,
                    false,
                )
                .await
                .map_err(map_err)?;
            let _: () = pipeline
                .zadd(keys::NODES, None, None, false, false, (now as f64, node))
                .await
                .map_err(map_err)?;
            all_ok(pipeline.try_all::<Value>().await)?;
            return Ok(());
        }
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
        if self.clustered() {
            self.cluster_reap_users(node).await?;
        } else {
            loop {
                let left = self
                    .fcall(functions::REAP_BATCH, &keys, &args, &self.opts)
                    .await?;
                if number(&left) == 0 {
                    break;
                }
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

    /// Cluster mode: the count and transition in the user's slot
    /// (`chat_pres_open`), then the node's set and the announcement.
    async fn cluster_opened(&self, user: &str, node: &str) -> Result<u64, EngineError> {
        let keys = vec![keys::presence(user), keys::convs(user)];
        let args = vec![node.to_string()];
        let reply = self
            .fcall(functions::PRES_OPEN, &keys, &args, &self.once)
            .await?;
        let (n, partners) = match reply {
            Value::Array(mut parts) if parts.len() == 2 => {
                let partners = strings(parts.pop().unwrap_or(Value::Null));
                (number(&parts[0]), partners)
            }
            _ => {
                return Err(EngineError::Internal(
                    "unexpected chat_pres_open reply".into(),
                ))
            }
        };
        let node_set = keys::node_users(node);
        let cmd = self.cmd();
        let (added, announced) = tokio::join!(cmd.sadd::<i64, _, _>(&node_set, user), async {
            if n == 1 {
                self.announce(user, &online_frame(user), &partners).await
            } else {
                Ok(())
            }
        });
        added.map_err(map_err)?;
        announced?;
        Ok(n)
    }

    /// Cluster mode: `chat_pres_close` in the user's slot, then the node's set, the
    /// user's `seen` and the announcement.
    async fn cluster_closed(&self, user: &str, node: &str) -> Result<(), EngineError> {
        let keys = vec![keys::presence(user), keys::convs(user)];
        let args = vec![node.to_string()];
        let reply = self
            .fcall(functions::PRES_CLOSE, &keys, &args, &self.once)
            .await?;
        let (left, offline, partners) = match reply {
            Value::Array(mut parts) if parts.len() == 3 => {
                let partners = strings(parts.pop().unwrap_or(Value::Null));
                (number(&parts[0]) == 1, number(&parts[1]) == 1, partners)
            }
            _ => {
                return Err(EngineError::Internal(
                    "unexpected chat_pres_close reply".into(),
                ))
            }
        };
        let node_set = keys::node_users(node);
        let cmd = self.cmd();
        let (removed, announced) = tokio::join!(
            async {
                if left {
                    cmd.srem::<i64, _, _>(&node_set, user).await.map(|_| ())
                } else {
                    Ok(())
                }
            },
            async {
                if offline {
                    self.went_offline(user, &partners).await
                } else {
                    Ok(())
                }
            }
        );
        removed.map_err(map_err)?;
        announced?;
        Ok(())
    }

    /// Cluster mode: records `seen` and announces the offline transition.
    async fn went_offline(&self, user: &str, partners: &[String]) -> Result<(), EngineError> {
        let now = now_rfc3339();
        let _: i64 = self
            .cmd()
            .hset(keys::user(user), ("seen", now.as_str()))
            .await
            .map_err(map_err)?;
        self.announce(user, &offline_frame(user, &now), partners)
            .await
    }

    /// Cluster mode: publishes a presence frame to each partner's channel (`SPUBLISH`,
    /// each to its shard) and on the global channel (plain `PUBLISH`, which a cluster
    /// copies to every node: meant for a channel every node listens to). One pipeline.
    async fn announce(
        &self,
        user: &str,
        frame: &str,
        partners: &[String],
    ) -> Result<(), EngineError> {
        let pipeline = self.pool.next_connected().pipeline();
        let payload = format!("- - {frame}");
        for peer in partners {
            let _: () = pipeline
                .spublish(keys::channel(peer), payload.as_str())
                .await
                .map_err(map_err)?;
        }
        let _: () = pipeline
            .publish(keys::PRESENCE_CHANNEL, format!("{user} {frame}"))
            .await
            .map_err(map_err)?;
        all_ok(pipeline.try_all::<Value>().await)?;
        Ok(())
    }

    /// Cluster mode: pops the dead node's users in batches and drops the node's
    /// connections of each in the user's slot (`chat_pres_drop`), announcing those
    /// who went offline. A reaper dying half-way loses the announcements of the batch
    /// it held (presence frames are ephemeral; the stored state is right).
    async fn cluster_reap_users(&self, node: &str) -> Result<(), EngineError> {
        let set = keys::node_users(node);
        loop {
            let users: Vec<String> = self
                .cmd()
                .spop(&set, Some(REAP_BATCH))
                .await
                .map_err(map_err)?;
            if users.is_empty() {
                return Ok(());
            }
            for user in &users {
                let keys = vec![keys::presence(user), keys::convs(user)];
                let reply = self
                    .fcall(functions::PRES_DROP, &keys, &[node.to_string()], &self.opts)
                    .await?;
                if let Value::Array(mut parts) = reply {
                    if parts.len() == 2 && number(&parts[0]) == 1 {
                        let partners = strings(parts.pop().unwrap_or(Value::Null));
                        self.went_offline(user, &partners).await?;
                    }
                }
            }
        }
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

/// The presence frame of a user going online, exactly as `presence.lua` writes it.
/// Keys and arguments of `chat_conn_close` and `chat_conn_drop`.
fn node_user_call(user: &str, node: &str) -> (Vec<String>, Vec<String>) {
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
    (keys, args)
}

fn online_frame(user: &str) -> String {
    format!(
        r#"{{"type":"presence","user":{},"online":true}}"#,
        serde_json::Value::from(user)
    )
}

/// The presence frame of a user going offline, exactly as `presence.lua` writes it.
fn offline_frame(user: &str, seen: &str) -> String {
    format!(
        r#"{{"type":"presence","user":{},"online":false,"last_seen_at":{}}}"#,
        serde_json::Value::from(user),
        serde_json::Value::from(seen)
    )
}

/// An array reply of strings (an empty or missing one: none).
fn strings(v: Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.into_iter().filter_map(text).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_match_the_lua() {
        assert_eq!(
            online_frame("hal"),
            r#"{"type":"presence","user":"hal","online":true}"#
        );
        assert_eq!(
            offline_frame("hal", "2026-01-01T00:00:00.000Z"),
            r#"{"type":"presence","user":"hal","online":false,"last_seen_at":"2026-01-01T00:00:00.000Z"}"#
        );
    }
}
