//! The memory engine's messages ([`Messages`]): sends, histories and inboxes.
//!
//! A send checks the nonce, appends the message to the conversation's history (with
//! retention), moves the sender's read marker, indexes the conversation for both
//! participants and appends the event to both inboxes, handing it to the sink for
//! each participant subscribed here (the sender's own event included) while the state
//! lock is held.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chat_protocol::{dm_conversation, Event, Message, StreamId};

use super::MemoryEngine;
use crate::events::now_ms;
use crate::{EngineError, InboxEvent, LiveEvent, Messages, SendOutcome, SendRequest};

#[async_trait]
impl Messages for MemoryEngine {
    async fn send(&self, req: SendRequest) -> Result<SendOutcome, EngineError> {
        let conversation = dm_conversation(&req.from, &req.to);
        let mut st = self.lock();
        st.prune();
        let now = Instant::now();
        let nonce_key = req
            .nonce
            .as_ref()
            .map(|n| (conversation.clone(), req.from.clone(), n.clone()));
        if let Some(key) = &nonce_key {
            if let Some((message, exp)) = st.nonces.get(key) {
                if *exp > now {
                    return Ok(SendOutcome {
                        message: message.clone(),
                        duplicate: true,
                    });
                }
            }
        }
        let id = st.next_id();
        let message = Message {
            id: id.to_string(),
            conversation: conversation.clone(),
            from: req.from.clone(),
            to: req.to.clone(),
            body: req.body,
            sent_at: req.sent_at,
            room: None,
        };
        let meta = st.metas.entry(conversation.clone()).or_default();
        meta.seq += 1;
        let seq = meta.seq;
        meta.last = Some(message.clone());
        // One's own messages are never unread.
        meta.reads.insert(req.from.clone(), (seq, id));
        for (user, peer) in [(&req.from, &req.to), (&req.to, &req.from)] {
            st.convs
                .entry(user.clone())
                .or_default()
                .insert(peer.clone(), id.ms);
        }
        let history = st.conversations.entry(conversation).or_default();
        history.insert(id, (seq, message.clone()));
        if self.retention.history_max_len > 0 {
            while history.len() as u64 > self.retention.history_max_len {
                history.pop_first();
            }
        }
        if self.retention.history_max_age_secs > 0 {
            let min_ms = now_ms().saturating_sub(self.retention.history_max_age_secs * 1000);
            history.retain(|k, _| k.ms >= min_ms);
        }
        if let Some(key) = nonce_key {
            st.nonces.insert(
                key,
                (
                    message.clone(),
                    now + Duration::from_secs(req.nonce_ttl_secs),
                ),
            );
        }
        let json = Bytes::from(Event::Message { message: &message }.to_json());
        for user in [&message.from, &message.to] {
            let event = st.append_inbox(user, json.clone(), self.retention.inbox_max_len);
            if st.subscribed.contains(user.as_str()) {
                let live = match &req.trace {
                    Some(trace) => Arc::new(InboxEvent {
                        trace: Some(trace.clone()),
                        ..InboxEvent::clone(&event)
                    }),
                    None => event,
                };
                self.sink.deliver(user, LiveEvent::Inbox(live));
            }
        }
        Ok(SendOutcome {
            message,
            duplicate: false,
        })
    }

    async fn history(
        &self,
        a: &str,
        b: &str,
        before: Option<StreamId>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), EngineError> {
        let st = self.lock();
        let Some(history) = st.conversations.get(&dm_conversation(a, b)) else {
            return Ok((Vec::new(), false));
        };
        let upper = before.unwrap_or(StreamId {
            ms: u64::MAX,
            seq: u64::MAX,
        });
        let mut newest: Vec<Message> = history
            .range(..upper)
            .rev()
            .take(limit + 1)
            .map(|(_, (_, m))| m.clone())
            .collect();
        let more = newest.len() > limit;
        newest.truncate(limit);
        newest.reverse();
        Ok((newest, more))
    }

    async fn clear_conversation(&self, a: &str, b: &str) -> Result<(), EngineError> {
        let conversation = dm_conversation(a, b);
        let mut st = self.lock();
        st.conversations.remove(&conversation);
        st.metas.remove(&conversation);
        Ok(())
    }

    async fn inbox_head(&self, user_id: &str) -> Result<StreamId, EngineError> {
        Ok(self
            .lock()
            .inboxes
            .get(user_id)
            .map(|i| i.last)
            .unwrap_or(StreamId::ZERO))
    }

    async fn read_inbox(
        &self,
        user_id: &str,
        after: StreamId,
        count: usize,
    ) -> Result<Vec<InboxEvent>, EngineError> {
        let st = self.lock();
        let Some(inbox) = st.inboxes.get(user_id) else {
            return Ok(Vec::new());
        };
        let start = inbox.events.partition_point(|e| e.id <= after);
        Ok(inbox
            .events
            .iter()
            .skip(start)
            .take(count)
            .map(|e| InboxEvent::clone(e))
            .collect())
    }
}
