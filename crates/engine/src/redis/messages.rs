//! Messages on Redis ([`Messages`]): sends, histories and inboxes.
//!
//! A send goes to the [`super::shape::Shape`] chosen at connect (one batched
//! `FCALL chat_send` on a single Redis, slot-local calls on a cluster), which checks
//! the nonce, appends the message to the conversation stream, appends an event to
//! both participants' inboxes and publishes it on their channels. When the sender is
//! subscribed on this node, their own event is published only for their connections
//! on other nodes, and handed to the sink here, before `send` returns. Reads are plain
//! stream commands; the stored entry forms are in [`super::inbox`].

use std::sync::Arc;

use async_trait::async_trait;
use chat_protocol::{Message, StreamId};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use super::conn::{entries, map_err};
use super::shape::Sent;
use super::{inbox, keys, Core, RedisEngine};
use crate::{EngineError, InboxEvent, LiveEvent, Messages, SendOutcome, SendRequest};

impl Core {
    /// Whether entries were ever trimmed from (or deleted in) the stream `key`:
    /// `XINFO STREAM`'s `entries-added` above its `length`.
    async fn inbox_trimmed(&self, key: &str) -> Result<bool, EngineError> {
        let v: Value = self
            .cmd()
            .custom(
                CustomCommand::new_static("XINFO", ClusterHash::FirstKey, false),
                vec!["STREAM".to_string(), key.to_string()],
            )
            .await
            .map_err(map_err)?;
        let field = |name: &str| -> Option<i64> {
            match &v {
                Value::Array(items) => items
                    .chunks(2)
                    .find(|kv| kv[0].as_str().as_deref() == Some(name))
                    .and_then(|kv| kv.get(1))
                    .and_then(|n| n.as_i64()),
                Value::Map(map) => map
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(name))
                    .and_then(|(_, n)| n.as_i64()),
                _ => None,
            }
        };
        match (field("entries-added"), field("length")) {
            (Some(added), Some(length)) => Ok(added > length),
            _ => Err(EngineError::Internal(
                "unexpected XINFO STREAM reply".into(),
            )),
        }
    }

    async fn last_entry_id(&self, key: String) -> Result<StreamId, EngineError> {
        let v: Value = self
            .cmd()
            .xrevrange(key, "+", "-", Some(1))
            .await
            .map_err(map_err)?;
        Ok(entries(v)?
            .first()
            .and_then(|e| StreamId::parse(&e.id))
            .unwrap_or(StreamId::ZERO))
    }
}

#[async_trait]
impl Messages for RedisEngine {
    async fn send(&self, request: SendRequest) -> Result<SendOutcome, EngineError> {
        let sender = request.from.clone();
        let local = self.core.subscribers.is_subscribed(&sender);
        let Sent { outcome, own } = self.shape.send(request, local).await?;
        if let Some(own) = own {
            // The sender's connections on this node: ahead of whatever the caller
            // answers once this returns (the ack).
            self.core
                .sink
                .deliver(&sender, LiveEvent::Inbox(Arc::new(own)));
        }
        Ok(outcome)
    }

    async fn history(
        &self,
        a: &str,
        b: &str,
        before: Option<StreamId>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), EngineError> {
        let end = match before {
            Some(id) => format!("({id}"),
            None => "+".to_string(),
        };
        let v: Value = self
            .core
            .cmd()
            .xrevrange(keys::conv_msgs(a, b), end, "-", Some(limit as u64 + 1))
            .await
            .map_err(map_err)?;
        let mut found = entries(v)?;
        let more = found.len() > limit;
        found.truncate(limit);
        let messages = found
            .into_iter()
            .rev()
            .map(|e| inbox::conversation_message(a, b, e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((messages, more))
    }

    async fn clear_conversation(&self, a: &str, b: &str) -> Result<(), EngineError> {
        // Both keys share the conversation's hash tag: one DEL works on Cluster too.
        let _: i64 = self
            .core
            .cmd()
            .del(vec![keys::conv_msgs(a, b), keys::conv_meta(a, b)])
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn inbox_head(&self, user_id: &str) -> Result<StreamId, EngineError> {
        self.core.last_entry_id(keys::inbox(user_id)).await
    }

    async fn read_inbox(
        &self,
        user_id: &str,
        after: StreamId,
        count: usize,
    ) -> Result<Vec<InboxEvent>, EngineError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        // Entries hold no link to their predecessor: read `after` itself too. If it is
        // still there, every entry after it is (trimming removes the oldest first), so
        // the first event's `prev` is `after`; if it is gone, the first event's `prev`
        // is unknown and reported as [`UNKNOWN_PREV`], which proves nothing.
        let key = keys::inbox(user_id);
        let start = if after == StreamId::ZERO {
            "-".to_string()
        } else {
            after.to_string()
        };
        let v: Value = self
            .core
            .cmd()
            .xrange(&key, start, "+", Some(count as u64 + 1))
            .await
            .map_err(map_err)?;
        let mut found = entries(v)?.into_iter().peekable();
        let mut prev = match found.peek() {
            None => return Ok(Vec::new()),
            Some(first) if StreamId::parse(&first.id) == Some(after) => {
                found.next();
                after
            }
            Some(_) if after == StreamId::ZERO && !self.core.inbox_trimmed(&key).await? => after,
            Some(_) => UNKNOWN_PREV,
        };
        found
            .take(count)
            .map(|e| {
                let event = inbox::event(user_id, &e, prev)?;
                prev = event.id;
                Ok(event)
            })
            .collect()
    }
}

/// The `prev` of the first event a read returns when the entry before it is gone
/// (trimmed): it matches no cursor, so it proves no recovery.
const UNKNOWN_PREV: StreamId = StreamId {
    ms: u64::MAX,
    seq: u64::MAX,
};
