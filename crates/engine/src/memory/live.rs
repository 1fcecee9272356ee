//! The memory engine's live delivery ([`Live`]): a set of subscribed users; events
//! for them go straight to the sink.

use async_trait::async_trait;
use bytes::Bytes;

use super::MemoryEngine;
use crate::{EngineError, Live, LiveEvent};

#[async_trait]
impl Live for MemoryEngine {
    async fn subscribe(&self, user_id: &str) -> Result<(), EngineError> {
        self.lock().subscribed.insert(user_id.to_string());
        Ok(())
    }

    async fn unsubscribe(&self, user_id: &str) -> Result<(), EngineError> {
        self.lock().subscribed.remove(user_id);
        Ok(())
    }

    async fn publish_ephemeral(&self, user_id: &str, frame: &str) -> Result<(), EngineError> {
        let st = self.lock();
        if st.subscribed.contains(user_id) {
            self.sink.deliver(
                user_id,
                LiveEvent::Ephemeral(Bytes::from(frame.to_string())),
            );
        }
        Ok(())
    }

    async fn disconnect_user(&self, user_id: &str) -> Result<(), EngineError> {
        let st = self.lock();
        if st.subscribed.contains(user_id) {
            self.sink.deliver(user_id, LiveEvent::Disconnect);
        }
        Ok(())
    }
}
