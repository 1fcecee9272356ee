//! Read receipts and the conversation list on Redis ([`Receipts`]).
//!
//! - `mark_read` finds the newest message at or before `up_to` (its sequence number
//!   is stored in the conversation stream entry), moves the reader's marker
//!   (`r:<user>`, `ru:<user>` in the conversation's meta hash) only forward, and
//!   appends and publishes the read event to both inboxes: one `FCALL chat_read` on a
//!   single Redis, `chat_read_marker` then two `chat_inbox_append` on a cluster (see
//!   [`super::shape::Shape::mark_read`]).
//! - `conversations` reads the user's conversation index (newest first), then one
//!   pipeline of the metas (`s`, `lm`, both markers) and the peers' names: two round
//!   trips, whatever the number of conversations. Unread = `s` − `r:<user>`.

use async_trait::async_trait;
use chat_protocol::{dm_conversation, Message, StreamId, User};
use fred::prelude::*;

use super::conn::{all_ok, map_err, number, text};
use super::{keys, RedisEngine};
use crate::{ConversationSummary, EngineError, ReadOutcome, Receipts};

#[async_trait]
impl Receipts for RedisEngine {
    async fn mark_read(
        &self,
        reader: &str,
        peer: &str,
        up_to: StreamId,
    ) -> Result<Option<ReadOutcome>, EngineError> {
        self.shape.mark_read(reader, peer, up_to).await
    }

    async fn conversations(
        &self,
        user: &str,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, EngineError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = i64::try_from(limit).unwrap_or(i64::MAX) - 1;
        let peers: Vec<String> = self
            .core
            .cmd()
            .zrevrange(keys::convs(user), 0, stop, false)
            .await
            .map_err(map_err)?;
        if peers.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.core.pool.next_connected().pipeline();
        let mine = format!("r:{user}");
        let mine_id = format!("ru:{user}");
        for peer in &peers {
            let peer_id = format!("ru:{peer}");
            let fields = vec!["s", "lm", mine.as_str(), mine_id.as_str(), peer_id.as_str()];
            let _: () = pipeline
                .hmget(keys::conv_meta(user, peer), fields)
                .await
                .map_err(map_err)?;
            let _: () = pipeline
                .hget(keys::user(peer), "name")
                .await
                .map_err(map_err)?;
        }
        let replies = all_ok(pipeline.try_all::<Value>().await)?;
        let mut out = Vec::with_capacity(peers.len());
        for (peer, pair) in peers.into_iter().zip(replies.chunks(2)) {
            let [meta, name] = pair else {
                return Err(EngineError::Internal("short pipeline reply".into()));
            };
            let meta: Vec<Value> = match meta {
                Value::Array(values) => values.clone(),
                _ => Vec::new(),
            };
            let field = |i: usize| meta.get(i).cloned().unwrap_or(Value::Null);
            let seq = number(&field(0));
            let last: Option<Message> = text(field(1))
                .map(|json| serde_json::from_str(&json))
                .transpose()
                .map_err(|e| EngineError::Internal(format!("corrupt last message: {e}")))?;
            let read = number(&field(2));
            out.push(ConversationSummary {
                conversation: dm_conversation(user, &peer),
                peer: User {
                    name: text(name.clone()).unwrap_or_else(|| peer.clone()),
                    id: peer,
                },
                last,
                unread: seq.saturating_sub(read),
                read_up_to: text(field(3)),
                peer_read_up_to: text(field(4)),
            });
        }
        Ok(out)
    }
}
