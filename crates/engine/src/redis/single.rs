//! Single Redis (and Sentinel): every write of [`Shape`] is one atomic `FCALL`
//! combining the slots it touches (`chat_send`, `chat_read`, `chat_conn_open`,
//! `chat_conn_close`, `chat_conn_drop`, `chat_heartbeat`, `chat_reap_batch`); sends are
//! batched into `chat_send` calls by [`super::batch`], which makes those calls itself.

use std::sync::Arc;

use async_trait::async_trait;
use chat_protocol::{dm_conversation, StreamId};

use super::batch::Batcher;
use super::conn::number;
use super::payload::{ReapTemplate, Transition};
use super::shape::{Sent, Shape, REAP_BATCH};
use super::{functions, keys, Core};
use crate::events::now_rfc3339;
use crate::{EngineError, ReadOutcome, SendRequest};

/// The single-Redis writes.
pub(crate) struct Single {
    core: Arc<Core>,
    /// The queue that batches sends into `chat_send` calls.
    batcher: Batcher,
}

impl Single {
    pub(crate) fn new(core: &Arc<Core>) -> Single {
        Single {
            core: core.clone(),
            batcher: Batcher::start(Arc::downgrade(core)),
        }
    }
}

/// Keys and arguments of `chat_conn_close` and `chat_conn_drop`: the offline payloads
/// are built here, for now.
fn node_user_call(user: &str, node: &str, fanout: u64) -> (Vec<String>, Vec<String>) {
    let keys = vec![
        keys::presence(user),
        keys::node_users(node),
        keys::convs(user),
        keys::user(user),
    ];
    let now = now_rfc3339();
    let offline = Transition::new(user, false, Some(&now));
    let args = vec![
        user.to_string(),
        node.to_string(),
        keys::PRESENCE_CHANNEL.to_string(),
        now,
        offline.partner,
        offline.global,
        fanout.to_string(),
    ];
    (keys, args)
}

#[async_trait]
impl Shape for Single {
    async fn send(&self, request: SendRequest, local: bool) -> Result<Sent, EngineError> {
        self.batcher.send(request, local).await
    }

    async fn mark_read(
        &self,
        reader: &str,
        peer: &str,
        up_to: StreamId,
    ) -> Result<Option<ReadOutcome>, EngineError> {
        let (keys, args) = functions::read_call(reader, peer, up_to, &self.core.retention);
        // A retried call is harmless: the marker cannot move twice to the same place.
        let reply = self
            .core
            .fcall(functions::READ, &keys, &args, &self.core.opts)
            .await?;
        Ok(
            functions::parse_read_reply(reply)?.map(|up_to| ReadOutcome {
                conversation: dm_conversation(reader, peer),
                up_to,
            }),
        )
    }

    async fn connection_opened(&self, user: &str, node: &str) -> Result<u64, EngineError> {
        let keys = vec![
            keys::presence(user),
            keys::node_users(node),
            keys::convs(user),
        ];
        let online = Transition::new(user, true, None);
        let args = vec![
            user.to_string(),
            node.to_string(),
            keys::PRESENCE_CHANNEL.to_string(),
            online.partner,
            online.global,
            self.core.retention.presence_fanout_max.to_string(),
        ];
        // Not idempotent: never written twice.
        let reply = self
            .core
            .fcall(functions::CONN_OPEN, &keys, &args, &self.core.once)
            .await?;
        Ok(number(&reply))
    }

    async fn connection_closed(&self, user: &str, node: &str) -> Result<(), EngineError> {
        let (keys, args) = node_user_call(user, node, self.core.retention.presence_fanout_max);
        self.core
            .fcall(functions::CONN_CLOSE, &keys, &args, &self.core.once)
            .await?;
        Ok(())
    }

    async fn drop_presence(&self, user: &str, node: &str) -> Result<(), EngineError> {
        let (keys, args) = node_user_call(user, node, self.core.retention.presence_fanout_max);
        // Idempotent: a resent call finds nothing left to drop.
        self.core
            .fcall(functions::CONN_DROP, &keys, &args, &self.core.opts)
            .await?;
        Ok(())
    }

    async fn heartbeat(&self, node: &str, ttl_secs: u64) -> Result<(), EngineError> {
        let keys = vec![keys::node_alive(node), keys::NODES.to_string()];
        let args = vec![
            node.to_string(),
            ttl_secs.max(1).to_string(),
            crate::events::now_ms().to_string(),
        ];
        self.core
            .fcall(functions::HEARTBEAT, &keys, &args, &self.core.opts)
            .await?;
        Ok(())
    }

    async fn drop_node_users(&self, node: &str) -> Result<(), EngineError> {
        let keys = vec![keys::node_users(node)];
        let now = now_rfc3339();
        let offline = ReapTemplate::offline(&now);
        let args = vec![
            node.to_string(),
            keys::PRESENCE_CHANNEL.to_string(),
            now,
            REAP_BATCH.to_string(),
            offline.before,
            offline.between,
            offline.after,
            self.core.retention.presence_fanout_max.to_string(),
        ];
        loop {
            let left = self
                .core
                .fcall(functions::REAP_BATCH, &keys, &args, &self.core.opts)
                .await?;
            if number(&left) == 0 {
                return Ok(());
            }
        }
    }
}
