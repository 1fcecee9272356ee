//! The memory engine's messages ([`Messages`]): sends, histories and inboxes.
//!
//! A send checks the nonce, appends the message to the conversation's history (with
//! retention), moves the sender's read marker, indexes the conversation for both
//! participants and appends the event to both inboxes, handing it to the sink for
//! each participant subscribed here (the sender's own event included) while the state
//! lock is held.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chat_protocol::{dm_conversation, Event, Message, StreamId};

use super::faults::Op;
use super::{MemoryEngine, State};
use crate::events::now_ms;
use crate::{EngineError, InboxEvent, LiveEvent, Messages, SendOutcome, SendRequest};

#[async_trait]
impl Messages for MemoryEngine {
    async fn send(&self, req: SendRequest) -> Result<SendOutcome, EngineError> {
        self.faults.check(Op::Send)?;
        let conversation = dm_conversation(&req.from, &req.to);
        let mut st = self.lock();
        st.prune();
        let nonce = SendNonce::new(&conversation, &req.from, req.nonce.as_deref());
        if let Some(message) = nonce.stored(&st) {
            return Ok(SendOutcome {
                message,
                duplicate: true,
            });
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
            let convs = st.convs.entry(user.clone()).or_default();
            let new_peer = convs.insert(peer.clone(), id.ms).is_none();
            let max = self.retention.convs_max;
            if new_peer && max > 0 && convs.len() as u64 > max {
                // The oldest conversation leaves the list (as Redis's ZREMRANGEBYRANK).
                let oldest = convs
                    .iter()
                    .min_by(|a, b| a.1.cmp(b.1).then_with(|| a.0.cmp(b.0)))
                    .map(|(p, _)| p.clone());
                if let Some(oldest) = oldest {
                    convs.remove(&oldest);
                }
            }
        }
        let history = st.conversations.entry(conversation).or_default();
        history.insert(id, (seq, message.clone()));
        if self.retention.history_max_len > 0 {
            while history.len() as u64 > self.retention.history_max_len {
                history.pop_first();
            }
        }
        if self.retention.history_max_age_secs > 0 {
            // From the oldest end only (ids are in time order): O(trimmed) per send.
            let min_ms = now_ms().saturating_sub(self.retention.history_max_age_secs * 1000);
            while history
                .first_key_value()
                .is_some_and(|(k, _)| k.ms < min_ms)
            {
                history.pop_first();
            }
        }
        nonce.remember(&mut st, &message, req.nonce_ttl_secs);
        let json = Bytes::from(Event::Message { message: &message }.to_json());
        for user in [&message.from, &message.to] {
            let event = st.append_inbox(user, json.clone(), self.retention.inbox_max_len);
            if st.nodes.has_user(user) {
                let live = match &req.trace {
                    Some(trace) => Arc::new(InboxEvent {
                        trace: Some(trace.clone()),
                        ..InboxEvent::clone(&event)
                    }),
                    None => event,
                };
                st.nodes.deliver(user, LiveEvent::Inbox(live));
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

    async fn clear_conversation(&self, a: &str, b: &str) -> Result<Option<StreamId>, EngineError> {
        let conversation = dm_conversation(a, b);
        let mut st = self.lock();
        let newest = st
            .conversations
            .remove(&conversation)
            .and_then(|history| history.last_key_value().map(|(id, _)| *id));
        let last = st
            .metas
            .remove(&conversation)
            .and_then(|meta| meta.last)
            .and_then(|m| StreamId::parse(&m.id));
        let Some(up_to) = newest.max(last) else {
            return Ok(None);
        };
        let json = Bytes::from(
            Event::Cleared {
                conversation: &conversation,
                up_to: &up_to.to_string(),
            }
            .to_json(),
        );
        let users = if a == b { vec![a] } else { vec![a, b] };
        for user in users {
            let marker = st
                .inboxes
                .entry(user.to_string())
                .or_default()
                .cleared
                .entry(conversation.clone())
                .or_insert(up_to);
            *marker = (*marker).max(up_to);
            let event = st.append_inbox(user, json.clone(), self.retention.inbox_max_len);
            st.nodes.deliver(user, LiveEvent::Inbox(event));
        }
        Ok(Some(up_to))
    }

    async fn inbox_head(&self, user_id: &str) -> Result<StreamId, EngineError> {
        self.faults.check(Op::InboxHead)?;
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
        self.faults.check(Op::ReadInbox)?;
        let st = self.lock();
        let Some(inbox) = st.inboxes.get(user_id) else {
            return Ok(Vec::new());
        };
        let start = inbox.events.partition_point(|e| e.id <= after);
        let mut out: Vec<InboxEvent> = Vec::new();
        // The `prev` of the next event returned: the one before it in the inbox, or
        // the last event returned when a cleared message was skipped between them.
        let mut prev = None;
        for event in inbox.events.iter().skip(start) {
            if out.len() == count {
                break;
            }
            if !inbox.cleared.is_empty() && hidden_by_clear(&inbox.cleared, &event.json) {
                prev.get_or_insert(event.prev);
                continue;
            }
            let mut event = InboxEvent::clone(event);
            if let Some(p) = prev.replace(event.id) {
                event.prev = p;
            }
            out.push(event);
        }
        Ok(out)
    }
}

/// A send's nonce: looked up before the send stores anything and remembered after it
/// stored, the same for 1:1 and room sends (`rooms.rs`).
pub(super) struct SendNonce {
    /// (conversation, sender, nonce) in `State::nonces`; none for a send without a
    /// nonce, which is never a retry.
    key: Option<(String, String, String)>,
    /// When the send arrived: a nonce counts as seen until its expiry passes this, and
    /// a new one expires its ttl after this.
    now: Instant,
}

impl SendNonce {
    pub(super) fn new(conversation: &str, from: &str, nonce: Option<&str>) -> SendNonce {
        SendNonce {
            key: nonce.map(|n| (conversation.to_string(), from.to_string(), n.to_string())),
            now: Instant::now(),
        }
    }

    /// The message an earlier send with this nonce stored, while it is remembered.
    pub(super) fn stored(&self, st: &State) -> Option<Message> {
        let (message, expires) = st.nonces.get(self.key.as_ref()?)?;
        (*expires > self.now).then(|| message.clone())
    }

    /// Remembers that this nonce stored `message`, for `ttl_secs`.
    pub(super) fn remember(self, st: &mut State, message: &Message, ttl_secs: u64) {
        if let Some(key) = self.key {
            let expires = self.now + Duration::from_secs(ttl_secs);
            st.nonces.insert(key, (message.clone(), expires));
        }
    }
}

/// Whether an inbox event is a message a clear of its conversation deleted.
fn hidden_by_clear(cleared: &HashMap<String, StreamId>, json: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Stored {
        message: Option<Ref>,
    }
    #[derive(serde::Deserialize)]
    struct Ref {
        id: String,
        conversation: String,
    }
    let Ok(Stored { message: Some(m) }) = serde_json::from_slice::<Stored>(json) else {
        return false;
    };
    match (cleared.get(&m.conversation), StreamId::parse(&m.id)) {
        (Some(up_to), Some(id)) => id <= *up_to,
        _ => false,
    }
}
