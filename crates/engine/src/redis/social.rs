//! Read receipts, the conversation list and the user directory on Redis.
//!
//! - `mark_read` is one `FCALL chat_read` (on Redis Cluster `chat_read_marker`, then
//!   two `chat_inbox_append`): it finds the newest message at or before
//!   `up_to` (its sequence number is stored in the stream entry, field `q`), moves the
//!   reader's marker (`r:<user>`, `ru:<user>` in the conversation's meta hash) only
//!   forward, and appends and publishes the read event to both inboxes.
//! - `conversations` reads the user's conversation index (newest first), then one
//!   pipeline of the metas (`s`, `lm`, both markers) and the peers' names: two round
//!   trips, whatever the number of conversations. Unread = `s` − `r:<user>`.
//! - The directory is the sorted set [`keys::NAMES`] of `<lower-cased name>\0<id>`,
//!   searched with `ZRANGEBYLEX`; each user hash remembers its member (`idx`) so a
//!   rename removes the old one.

use bytes::Bytes;
use chat_protocol::{dm_conversation, Message, StreamId, User};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use super::conn::{map_err, text};
use super::{functions, keys, RedisEngine};
use crate::{ConversationSummary, EngineError, ReadOutcome};

/// The results of a pipeline, or the first error.
pub(super) fn all_ok(
    results: Vec<Result<Value, fred::error::Error>>,
) -> Result<Vec<Value>, EngineError> {
    results.into_iter().map(|r| r.map_err(map_err)).collect()
}

/// An integer reply or a numeric string; 0 when missing.
pub(super) fn number(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

impl RedisEngine {
    pub(super) async fn read_up_to(
        &self,
        reader: &str,
        peer: &str,
        up_to: StreamId,
    ) -> Result<Option<ReadOutcome>, EngineError> {
        let conversation = dm_conversation(reader, peer);
        if self.clustered() {
            return self
                .cluster_read_up_to(reader, peer, up_to, conversation)
                .await;
        }
        let keys = vec![
            keys::conv_msgs(reader, peer),
            keys::conv_meta(reader, peer),
            keys::inbox(reader),
            keys::inbox_head(reader),
            keys::channel(reader),
            keys::inbox(peer),
            keys::inbox_head(peer),
            keys::channel(peer),
        ];
        let args = vec![
            conversation.clone(),
            reader.to_string(),
            up_to.to_string(),
            self.retention.inbox_max_len.to_string(),
            self.retention.inbox_ttl_secs.to_string(),
            peer.to_string(),
        ];
        // A retried call is harmless: the marker cannot move twice to the same place.
        let reply = self
            .fcall(functions::READ, &keys, &args, &self.opts)
            .await?;
        Ok(text(reply).map(|up_to| ReadOutcome {
            conversation,
            up_to,
        }))
    }

    /// Cluster mode: `chat_read_marker` in the conversation's slot, then the read
    /// event appended to both inboxes concurrently.
    async fn cluster_read_up_to(
        &self,
        reader: &str,
        peer: &str,
        up_to: StreamId,
        conversation: String,
    ) -> Result<Option<ReadOutcome>, EngineError> {
        let keys = vec![keys::conv_msgs(reader, peer), keys::conv_meta(reader, peer)];
        let args = vec![conversation.clone(), reader.to_string(), up_to.to_string()];
        let reply = self
            .fcall(functions::READ_MARKER, &keys, &args, &self.opts)
            .await?;
        let Value::Array(parts) = reply else {
            return Ok(None); // nothing moved
        };
        let mut parts = parts.into_iter().map(text);
        let (Some(Some(id)), Some(Some(event))) = (parts.next(), parts.next()) else {
            return Err(EngineError::Internal(
                "unexpected chat_read_marker reply".into(),
            ));
        };
        let stored = |read| functions::Stored::Read { up_to: &id, read };
        let (a, b) = tokio::join!(
            self.inbox_append(reader, peer, &event, stored(true), 0, None, None),
            self.inbox_append(peer, reader, &event, stored(false), 0, None, None),
        );
        a?;
        b?;
        Ok(Some(ReadOutcome {
            conversation,
            up_to: id,
        }))
    }

    pub(super) async fn conversation_list(
        &self,
        user: &str,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, EngineError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = i64::try_from(limit).unwrap_or(i64::MAX) - 1;
        let peers: Vec<String> = self
            .cmd()
            .zrevrange(keys::convs(user), 0, stop, false)
            .await
            .map_err(map_err)?;
        if peers.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.pool.next_connected().pipeline();
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

    /// Sets the user's name and keeps the directory in step. Returns whether the user
    /// existed. Two round trips (read the old index member, then write), each slot-local
    /// so it works on Redis Cluster too; concurrent renames of one user may leave a stale
    /// directory member, which `search` drops (its name no longer matches).
    pub(super) async fn set_name(&self, id: &str, name: &str) -> Result<bool, EngineError> {
        let key = keys::user(id);
        let old: Vec<Option<String>> = self
            .cmd()
            .hmget(&key, vec!["name", "idx"])
            .await
            .map_err(map_err)?;
        let existed = old.first().is_some_and(Option::is_some);
        let old_member = old.get(1).cloned().flatten();
        let member = keys::name_member(id, name);
        let pipeline = self.pool.next_connected().pipeline();
        let _: () = pipeline
            .hset(&key, vec![("name", name), ("idx", member.as_str())])
            .await
            .map_err(map_err)?;
        if let Some(old) = old_member.filter(|m| *m != member) {
            let _: () = pipeline.zrem(keys::NAMES, old).await.map_err(map_err)?;
        }
        let _: () = pipeline
            .zadd(
                keys::NAMES,
                None,
                None,
                false,
                false,
                (0.0, member.as_str()),
            )
            .await
            .map_err(map_err)?;
        all_ok(pipeline.try_all::<Value>().await)?;
        Ok(existed)
    }

    pub(super) async fn search(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<User>, EngineError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lower = prefix.to_lowercase();
        let (min, max) = if lower.is_empty() {
            (Bytes::from_static(b"-"), Bytes::from_static(b"+"))
        } else {
            let mut min = b"[".to_vec();
            min.extend_from_slice(lower.as_bytes());
            let mut max = min.clone();
            // No UTF-8 byte is 0xff: every member starting with the prefix sorts below.
            max.push(0xff);
            (Bytes::from(min), Bytes::from(max))
        };
        // Stale members (see `set_name`) are skipped, so ask for a few more.
        let want = limit + limit / 4 + 4;
        let cmd = CustomCommand::new_static("ZRANGEBYLEX", ClusterHash::FirstKey, false);
        let members: Vec<String> = self
            .cmd()
            .custom(
                cmd,
                vec![
                    Value::from(keys::NAMES),
                    Value::Bytes(min),
                    Value::Bytes(max),
                    Value::from("LIMIT"),
                    Value::from(0),
                    Value::from(want as i64),
                ],
            )
            .await
            .map_err(map_err)?;
        let ids: Vec<(String, String)> = members
            .iter()
            .filter_map(|m| m.rsplit_once('\0'))
            .map(|(name, id)| (name.to_string(), id.to_string()))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.pool.next_connected().pipeline();
        for (_, id) in &ids {
            let _: () = pipeline
                .hget(keys::user(id), "name")
                .await
                .map_err(map_err)?;
        }
        let names = all_ok(pipeline.try_all::<Value>().await)?;
        Ok(ids
            .into_iter()
            .zip(names)
            .filter_map(|((indexed, id), name)| {
                let name = text(name)?;
                (name.to_lowercase() == indexed).then_some(User { id, name })
            })
            .take(limit)
            .collect())
    }
}
