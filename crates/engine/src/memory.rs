//! The in-memory engine: a single node with no Redis (`cargo run` on a laptop).
//!
//! It keeps the same promises as the Redis engine — per-user inboxes with a `prev`
//! chain, idempotent sends, sliding sessions, retention — inside one mutex, so the
//! protocol tests can run against both. It never does I/O and never blocks: live
//! events go to the sink while the state lock is held, which keeps them in order.
//! Read markers, conversation lists, presence and the directory are in [`social`].

mod social;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use chat_protocol::{dm_conversation, Message, StreamId, User};

use crate::events::{message_event_json, now_ms};
use crate::{
    ConversationSummary, Engine, EngineError, EventSink, InboxEvent, LiveEvent, PresenceInfo,
    ReadOutcome, Retention, SendOutcome, SendRequest,
};

/// Everything a single node stores.
#[derive(Default)]
struct State {
    users: HashMap<String, String>,
    sessions: HashMap<String, (String, Instant)>,
    user_sessions: HashMap<String, HashSet<String>>,
    /// Conversation id → history: message id → (sequence number, message).
    conversations: HashMap<String, BTreeMap<StreamId, (u64, Message)>>,
    /// Conversation id → message count, last message and read markers.
    metas: HashMap<String, Meta>,
    /// User → peer → ms of the last message (the conversation index).
    convs: HashMap<String, HashMap<String, u64>>,
    /// The directory: (lower-cased name, id).
    names: BTreeSet<(String, String)>,
    /// User → open connections.
    connections: HashMap<String, u64>,
    /// User → RFC 3339 time they went offline.
    seen: HashMap<String, String>,
    /// (conversation, from, nonce) → (message, expiry).
    nonces: HashMap<(String, String, String), (Message, Instant)>,
    inboxes: HashMap<String, Inbox>,
    subscribed: HashSet<String>,
    /// Last id handed out: ids are `<ms>-<seq>` and strictly increase, like Redis's.
    clock: StreamId,
    inserts: u64,
}

/// A conversation's counters, as the Redis engine keeps them in its meta hash.
#[derive(Default)]
struct Meta {
    /// Messages ever sent (since the last clear).
    seq: u64,
    last: Option<Message>,
    /// User → read marker (sequence number, message id).
    reads: HashMap<String, (u64, StreamId)>,
}

#[derive(Default)]
struct Inbox {
    events: VecDeque<Arc<InboxEvent>>,
    last: StreamId,
}

/// A single-node engine keeping everything in this process.
pub struct MemoryEngine {
    state: Mutex<State>,
    sink: Arc<dyn EventSink>,
    retention: Retention,
}

impl MemoryEngine {
    pub fn new(retention: Retention, sink: Arc<dyn EventSink>) -> Arc<MemoryEngine> {
        Arc::new(MemoryEngine {
            state: Mutex::new(State::default()),
            sink,
            retention,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave half-written state that matters
        // more than staying up: recover the guard.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn next_id(&mut self) -> StreamId {
        let ms = now_ms();
        self.clock = if ms > self.clock.ms {
            StreamId { ms, seq: 0 }
        } else {
            self.clock.next()
        };
        self.clock
    }

    fn prune(&mut self) {
        self.inserts += 1;
        if !self.inserts.is_multiple_of(1024) {
            return;
        }
        let now = Instant::now();
        self.nonces.retain(|_, (_, exp)| *exp > now);
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, (_, exp))| *exp <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for s in expired {
            if let Some((uid, _)) = self.sessions.remove(&s) {
                if let Some(set) = self.user_sessions.get_mut(&uid) {
                    set.remove(&s);
                }
            }
        }
    }

    fn append_inbox(&mut self, user: &str, json: Bytes, max_len: u64) -> Arc<InboxEvent> {
        let id = self.next_id();
        let inbox = self.inboxes.entry(user.to_string()).or_default();
        let event = Arc::new(InboxEvent {
            id,
            prev: inbox.last,
            json,
            trace: None,
        });
        inbox.last = id;
        inbox.events.push_back(event.clone());
        if max_len > 0 {
            while inbox.events.len() as u64 > max_len {
                inbox.events.pop_front();
            }
        }
        event
    }
}

#[async_trait]
impl Engine for MemoryEngine {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn ready(&self) -> bool {
        true
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>, EngineError> {
        Ok(self.lock().users.get(id).map(|name| User {
            id: id.to_string(),
            name: name.clone(),
        }))
    }

    async fn upsert_user(&self, id: &str, name: &str) -> Result<bool, EngineError> {
        Ok(self.lock().set_name(id, name))
    }

    async fn create_guest(&self, name: &str) -> Result<User, EngineError> {
        let id = new_guest_id();
        self.lock().set_name(&id, name);
        Ok(User {
            id,
            name: name.to_string(),
        })
    }

    async fn create_session(&self, user_id: &str, ttl_secs: u64) -> Result<String, EngineError> {
        let session = new_session_token();
        let mut st = self.lock();
        st.prune();
        st.sessions.insert(
            session.clone(),
            (
                user_id.to_string(),
                Instant::now() + Duration::from_secs(ttl_secs),
            ),
        );
        st.user_sessions
            .entry(user_id.to_string())
            .or_default()
            .insert(session.clone());
        Ok(session)
    }

    async fn resume_session(
        &self,
        session: &str,
        ttl_secs: u64,
    ) -> Result<Option<User>, EngineError> {
        let mut st = self.lock();
        let now = Instant::now();
        let uid = match st.sessions.get_mut(session) {
            Some((uid, exp)) if *exp > now => {
                *exp = now + Duration::from_secs(ttl_secs);
                uid.clone()
            }
            _ => return Ok(None),
        };
        Ok(st.users.get(&uid).map(|name| User {
            id: uid.clone(),
            name: name.clone(),
        }))
    }

    async fn revoke_sessions(&self, user_id: &str) -> Result<(), EngineError> {
        let mut st = self.lock();
        if let Some(set) = st.user_sessions.remove(user_id) {
            for s in set {
                st.sessions.remove(&s);
            }
        }
        Ok(())
    }

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
                        sender_event: None,
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
        let json = Bytes::from(message_event_json(&message));
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
            sender_event: None,
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

    async fn mark_read(
        &self,
        reader: &str,
        peer: &str,
        up_to: StreamId,
    ) -> Result<Option<ReadOutcome>, EngineError> {
        Ok(self.read(reader, peer, up_to))
    }

    async fn conversations(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, EngineError> {
        Ok(self.lock().summaries(user_id, limit))
    }

    async fn connection_opened(&self, user_id: &str, _node: &str) -> Result<u64, EngineError> {
        Ok(self.opened(user_id))
    }

    async fn connection_closed(&self, user_id: &str, _node: &str) -> Result<(), EngineError> {
        self.closed(user_id);
        Ok(())
    }

    async fn drop_presence(&self, user_id: &str, _node: &str) -> Result<(), EngineError> {
        self.drop_all(user_id);
        Ok(())
    }

    async fn heartbeat(&self, _node: &str, _ttl_secs: u64) -> Result<(), EngineError> {
        Ok(())
    }

    async fn reap_dead_nodes(&self) -> Result<usize, EngineError> {
        // One node: there is nobody else to reap.
        Ok(0)
    }

    async fn reset_node(&self, _node: &str) -> Result<(), EngineError> {
        // Nothing outlives the process.
        Ok(())
    }

    async fn presence(&self, user_ids: &[String]) -> Result<Vec<PresenceInfo>, EngineError> {
        let st = self.lock();
        Ok(user_ids.iter().map(|u| st.presence_of(u)).collect())
    }

    async fn search_users(&self, prefix: &str, limit: usize) -> Result<Vec<User>, EngineError> {
        Ok(self.lock().search(prefix, limit))
    }

    async fn disconnect_user(&self, user_id: &str) -> Result<(), EngineError> {
        let st = self.lock();
        if st.subscribed.contains(user_id) {
            self.sink.deliver(user_id, LiveEvent::Disconnect);
        }
        Ok(())
    }
}

/// A fresh guest id: `g-` and 20 hex digits.
pub fn new_guest_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("g-{}", &hex[..20])
}

/// A fresh session secret: 256 random bits, hex (URL-safe).
pub fn new_session_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}
