//! Live delivery on Redis ([`Live`]): each user has a sharded pub/sub channel
//! ([`keys::channel`]) that the nodes they are connected to subscribe to
//! ([`super::subscriber`]); ephemeral frames and disconnects are published on it.

use async_trait::async_trait;
use fred::prelude::*;

use super::conn::map_err;
use super::{keys, payload, RedisEngine};
use crate::{EngineError, Live};

#[async_trait]
impl Live for RedisEngine {
    async fn subscribe(&self, user_id: &str) -> Result<(), EngineError> {
        self.core.subscribers.subscribe(user_id).await
    }

    async fn unsubscribe(&self, user_id: &str) -> Result<(), EngineError> {
        self.core.subscribers.unsubscribe(user_id).await
    }

    async fn publish_ephemeral(&self, user_id: &str, frame: &str) -> Result<(), EngineError> {
        let _: i64 = self
            .core
            .pool
            .next_connected()
            .with_options(&self.core.opts)
            .spublish(keys::channel(user_id), payload::ephemeral(frame))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn disconnect_user(&self, user_id: &str) -> Result<(), EngineError> {
        let _: i64 = self
            .core
            .pool
            .next_connected()
            .with_options(&self.core.opts)
            .spublish(keys::channel(user_id), payload::DISCONNECT)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}
