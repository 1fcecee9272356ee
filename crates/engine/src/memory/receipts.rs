//! The memory engine's read markers and conversation list ([`Receipts`]).
//!
//! The same rules as the Redis engine: a conversation counts its messages (`seq`),
//! each participant has a read marker (sequence number, message id) that only moves
//! forward, and unread = seq − marker.

use async_trait::async_trait;
use bytes::Bytes;
use chat_protocol::{dm_conversation, Event, StreamId, User};

use super::{MemoryEngine, State};
use crate::{ConversationSummary, EngineError, LiveEvent, ReadOutcome, Receipts};

impl State {
    fn summaries(&self, user: &str, limit: usize) -> Vec<ConversationSummary> {
        let Some(peers) = self.convs.get(user) else {
            return Vec::new();
        };
        let mut order: Vec<(&String, u64)> = peers.iter().map(|(p, ms)| (p, *ms)).collect();
        // As ZREVRANGE: score descending, ties by member descending.
        order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(a.0)));
        order.truncate(limit);
        order
            .into_iter()
            .map(|(peer, _)| {
                let conversation = dm_conversation(user, peer);
                let meta = self.metas.get(&conversation);
                let marker = |who: &str| meta.and_then(|m| m.reads.get(who)).copied();
                let mine = marker(user);
                ConversationSummary {
                    peer: User {
                        id: peer.clone(),
                        name: self
                            .users
                            .get(peer)
                            .cloned()
                            .unwrap_or_else(|| peer.clone()),
                    },
                    last: meta.and_then(|m| m.last.clone()),
                    unread: meta
                        .map(|m| m.seq.saturating_sub(mine.map(|r| r.0).unwrap_or(0)))
                        .unwrap_or(0),
                    read_up_to: mine.map(|r| r.1.to_string()),
                    peer_read_up_to: marker(peer).map(|r| r.1.to_string()),
                    conversation,
                }
            })
            .collect()
    }
}

#[async_trait]
impl Receipts for MemoryEngine {
    async fn mark_read(
        &self,
        reader: &str,
        peer: &str,
        up_to: StreamId,
    ) -> Result<Option<ReadOutcome>, EngineError> {
        let conversation = dm_conversation(reader, peer);
        let mut st = self.lock();
        // The newest message at or before `up_to`: clamps to the last one.
        let Some((id, seq)) = st
            .conversations
            .get(&conversation)
            .and_then(|history| history.range(..=up_to).next_back())
            .map(|(id, (seq, _))| (*id, *seq))
        else {
            return Ok(None);
        };
        let Some(meta) = st.metas.get_mut(&conversation) else {
            return Ok(None);
        };
        if meta.reads.get(reader).is_some_and(|r| r.0 >= seq) {
            return Ok(None);
        }
        meta.reads.insert(reader.to_string(), (seq, id));
        let up_to = id.to_string();
        let json = Bytes::from(
            Event::Read {
                conversation: &conversation,
                by: reader,
                up_to: &up_to,
            }
            .to_json(),
        );
        for user in [reader, peer] {
            let event = st.append_inbox(user, json.clone(), self.retention.inbox_max_len);
            st.nodes.deliver(user, LiveEvent::Inbox(event));
        }
        Ok(Some(ReadOutcome {
            conversation,
            up_to,
        }))
    }

    async fn conversations(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, EngineError> {
        Ok(self.lock().summaries(user_id, limit))
    }
}
