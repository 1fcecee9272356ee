//! Messages on Redis ([`Messages`]): sends, histories and inboxes.
//!
//! A send goes to the [`super::shape::Shape`] chosen at connect (one batched
//! `FCALL chat_send` on a single Redis, slot-local calls on a cluster), which checks
//! the nonce, appends the message to the conversation stream, appends an event to
//! both participants' inboxes and publishes it on their channels. When the sender is
//! subscribed on this node, their own event is published only for their connections
//! on other nodes, and handed to the sink here, before `send` returns. A send with a
//! nonce that fails `Unavailable` (a timeout, a partial Cluster write) is sent again
//! with it a bounded number of times, so it ends as the stored message or as
//! [`EngineError::MaybeStored`].
//!
//! A clear (`chat_conv_clear`, then `chat_inbox_clear` for each participant) deletes
//! the conversation, records the newest message it held in each participant's `clr`
//! hash and appends a `cleared` event to both inboxes; reads skip the cleared
//! messages and chain the `prev` of what they return over them. Reads are plain
//! stream commands; the stored entry forms are in [`super::inbox`].

use std::sync::Arc;

use async_trait::async_trait;
use chat_protocol::{dm_conversation, Event, Message, StreamId};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use super::conn::{all_ok, entries, map_err, text};
use super::shape::Sent;
use super::{functions, inbox, keys, Core, RedisEngine};
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
        // A send with a nonce that fails `Unavailable` may have run anyway (a timeout:
        // Redis may still run the call; on a cluster, the conversation append may have
        // succeeded and an inbox append failed). It is sent again with the same nonce,
        // a bounded number of times: the retry returns the stored message (and on a
        // cluster completes the inbox appends) or stores it, so the answer is the
        // stored message or an honest `Unavailable`.
        let retries = if request.nonce.is_some() {
            SEND_RETRIES
        } else {
            0
        };
        let mut uncertain = false;
        let mut attempt = 0;
        let result = loop {
            // After an unanswered attempt the sender's own event is published like the
            // peer's (nothing handed to this node's sink can be trusted to be first).
            match self.shape.send(request.clone(), local && !uncertain).await {
                Err(e) if attempt < retries && e.may_have_run() => {
                    uncertain = true;
                    attempt += 1;
                    tracing::warn!(attempt, error = %e, "send failed; retrying with its nonce");
                    tokio::time::sleep(SEND_RETRY_BACKOFF * attempt).await;
                }
                Err(e) if e.is_unavailable() && (uncertain || e.may_have_run()) => {
                    break Err(EngineError::MaybeStored(e.to_string()));
                }
                other => break other,
            }
        };
        let Sent { outcome, own } = result?;
        if let Some(own) = own {
            // The sender's connections on this node: ahead of whatever the caller
            // answers once this returns (the ack).
            self.core
                .sink
                .deliver(&sender, LiveEvent::Inbox(Arc::new(own)));
        } else if uncertain && local && outcome.duplicate {
            // The unanswered attempt stored it and published it only for the sender's
            // connections elsewhere: the ones here read it from the inbox.
            self.core.sink.resync();
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

    async fn clear_conversation(&self, a: &str, b: &str) -> Result<Option<StreamId>, EngineError> {
        let core = &self.core;
        // The conversation's keys share its hash tag: one slot-local call.
        let keys = vec![keys::conv_msgs(a, b), keys::conv_meta(a, b)];
        let reply = core
            .fcall(functions::send::CONV_CLEAR, &keys, &[], &core.opts)
            .await?;
        let Some(up_to) = text(reply).and_then(|t| StreamId::parse(&t)) else {
            return Ok(None);
        };
        let conversation = dm_conversation(a, b);
        let up_to_text = up_to.to_string();
        let event = Event::Cleared {
            conversation: &conversation,
            up_to: &up_to_text,
        }
        .to_json();
        // Then each participant, in their own slot. A retried call appends a second
        // identical `cleared` event: harmless (clients treat it as idempotent).
        let tell = |user: &str, other: &str| {
            let keys = vec![
                keys::inbox(user),
                keys::inbox_head(user),
                keys::channel(user),
                keys::inbox_cleared(user),
            ];
            let args = vec![
                event.clone(),
                other.to_string(),
                up_to_text.clone(),
                core.retention.inbox_max_len.to_string(),
                core.retention.inbox_ttl_secs.to_string(),
            ];
            async move {
                core.fcall(functions::send::INBOX_CLEAR, &keys, &args, &core.opts)
                    .await
            }
        };
        if a == b {
            tell(a, b).await?;
        } else {
            let (x, y) = tokio::join!(tell(a, b), tell(b, a));
            x?;
            y?;
        }
        Ok(Some(up_to))
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
        // The inbox and its clears (same slot): one round trip.
        let pipeline = self.core.pool.next_connected().pipeline();
        let _: () = pipeline
            .xrange(&key, start, "+", Some(count as u64 + 1))
            .await
            .map_err(map_err)?;
        let _: () = pipeline
            .hgetall(keys::inbox_cleared(user_id))
            .await
            .map_err(map_err)?;
        let mut replies = all_ok(pipeline.try_all::<Value>().await)?.into_iter();
        let v = replies.next().unwrap_or(Value::Null);
        let cleared = cleared_markers(replies.next().unwrap_or(Value::Null));
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
        // A message a clear deleted is skipped; the next event's `prev` is then the
        // last one returned (or `after`): nothing between them is for the reader.
        // When a whole page was skipped, the next one is read.
        let mut out = Vec::with_capacity(count.min(256));
        loop {
            let mut scanned = 0usize;
            let mut last_scanned = None;
            for e in found.by_ref() {
                scanned += 1;
                last_scanned = Some(e.id.clone());
                if inbox::hidden_by_clear(&e, &cleared) {
                    continue;
                }
                let event = inbox::event(user_id, &e, prev)?;
                prev = event.id;
                out.push(event);
                if out.len() == count {
                    return Ok(out);
                }
            }
            // A full read has `count + 1` entries (with `after`) or `count` (without).
            let (Some(last), true) = (last_scanned, scanned >= count) else {
                return Ok(out);
            };
            let v: Value = self
                .core
                .cmd()
                .xrange(&key, format!("({last}"), "+", Some(count as u64))
                .await
                .map_err(map_err)?;
            found = entries(v)?.into_iter().peekable();
        }
    }
}

/// How often a send with a nonce is sent again after `Unavailable`, and the pause
/// before each (times the attempt number).
pub(super) const SEND_RETRIES: u32 = 3;
pub(super) const SEND_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// The `prev` of the first event a read returns when the entry before it is gone
/// (trimmed): it matches no cursor, so it proves no recovery.
const UNKNOWN_PREV: StreamId = StreamId {
    ms: u64::MAX,
    seq: u64::MAX,
};

/// The `clr` hash of an inbox (other participant → newest message cleared).
fn cleared_markers(v: Value) -> Vec<(String, StreamId)> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(map) => map
            .inner()
            .into_iter()
            .map(|(k, v)| (k.into(), v))
            .collect(),
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(k, v)| Some((text(k)?, StreamId::parse(&text(v)?)?)))
        .collect()
}
