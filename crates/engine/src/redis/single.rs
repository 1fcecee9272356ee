//! Single Redis (and Sentinel): every write of [`Shape`] is one atomic `FCALL`
//! combining the slots it touches (`chat_send`, `chat_read`, `chat_conn_open`,
//! `chat_conn_close`, `chat_conn_drop`, `chat_heartbeat`, `chat_reap_batch`); sends are
//! batched into `chat_send` calls by [`super::batch`], which makes those calls itself.

use std::sync::Arc;

use async_trait::async_trait;
use chat_protocol::{dm_conversation, StreamId};

use super::batch::Batcher;
use super::conn::number;
use super::functions::{presence, receipts};
use super::shape::{Sent, Shape, REAP_BATCH};
use super::Core;
use crate::events::{now_ms, now_rfc3339};
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
        let (keys, args) = receipts::read_call(reader, peer, up_to, &self.core.retention);
        // A retried call is harmless: the marker cannot move twice to the same place.
        let reply = self
            .core
            .fcall(receipts::READ, &keys, &args, &self.core.opts)
            .await?;
        Ok(receipts::parse_read_reply(reply)?.map(|up_to| ReadOutcome {
            conversation: dm_conversation(reader, peer),
            up_to,
        }))
    }

    async fn connection_opened(&self, user: &str, node: &str) -> Result<u64, EngineError> {
        let fanout = self.core.retention.presence_fanout_max;
        let (keys, args) = presence::conn_open_call(user, node, fanout);
        // Not idempotent: never written twice.
        let reply = self
            .core
            .fcall(presence::CONN_OPEN, &keys, &args, &self.core.once)
            .await?;
        Ok(number(&reply))
    }

    async fn connection_closed(&self, user: &str, node: &str) -> Result<(), EngineError> {
        let fanout = self.core.retention.presence_fanout_max;
        let (keys, args) = presence::conn_close_call(user, node, &now_rfc3339(), fanout);
        self.core
            .fcall(presence::CONN_CLOSE, &keys, &args, &self.core.once)
            .await?;
        Ok(())
    }

    async fn drop_presence(&self, user: &str, node: &str) -> Result<(), EngineError> {
        let fanout = self.core.retention.presence_fanout_max;
        let (keys, args) = presence::conn_close_call(user, node, &now_rfc3339(), fanout);
        // Idempotent: a resent call finds nothing left to drop.
        self.core
            .fcall(presence::CONN_DROP, &keys, &args, &self.core.opts)
            .await?;
        Ok(())
    }

    async fn heartbeat(&self, node: &str, ttl_secs: u64) -> Result<(), EngineError> {
        let (keys, args) = presence::heartbeat_call(node, ttl_secs, now_ms());
        self.core
            .fcall(presence::HEARTBEAT, &keys, &args, &self.core.opts)
            .await?;
        Ok(())
    }

    async fn drop_node_users(&self, node: &str) -> Result<(), EngineError> {
        let fanout = self.core.retention.presence_fanout_max;
        let (keys, args) = presence::reap_batch_call(node, &now_rfc3339(), REAP_BATCH, fanout);
        loop {
            let left = self
                .core
                .fcall(presence::REAP_BATCH, &keys, &args, &self.core.opts)
                .await?;
            if number(&left) == 0 {
                return Ok(());
            }
        }
    }
}
