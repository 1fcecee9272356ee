//! The memory engine's read markers, conversation list, presence and directory.
//!
//! The same rules as the Redis engine: a conversation counts its messages (`seq`),
//! each participant has a read marker (sequence number, message id) that only moves
//! forward, and unread = seq − marker. Presence is a per-user connection count (one
//! node, so no heartbeats); transitions go to every subscribed conversation partner as
//! an ephemeral frame and to [`EventSink::presence`](crate::EventSink::presence).

use bytes::Bytes;
use chat_protocol::{dm_conversation, StreamId, User};

use super::{MemoryEngine, State};
use crate::events::{now_rfc3339, presence_frame, read_event_json};
use crate::{ConversationSummary, LiveEvent, PresenceInfo, ReadOutcome};

impl State {
    /// Creates or renames a user, keeping the directory index in step. Returns
    /// whether the user existed.
    pub(super) fn set_name(&mut self, id: &str, name: &str) -> bool {
        let old = self.users.insert(id.to_string(), name.to_string());
        if let Some(old) = &old {
            self.names.remove(&(old.to_lowercase(), id.to_string()));
        }
        self.names.insert((name.to_lowercase(), id.to_string()));
        old.is_some()
    }

    pub(super) fn search(&self, prefix: &str, limit: usize) -> Vec<User> {
        let lower = prefix.to_lowercase();
        self.names
            .range((lower.clone(), String::new())..)
            .take_while(|(name, _)| name.starts_with(&lower))
            .take(limit)
            .map(|(_, id)| User {
                id: id.clone(),
                name: self.users.get(id).cloned().unwrap_or_default(),
            })
            .collect()
    }

    pub(super) fn summaries(&self, user: &str, limit: usize) -> Vec<ConversationSummary> {
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

    pub(super) fn presence_of(&self, user: &str) -> PresenceInfo {
        let online = self.connections.get(user).is_some_and(|n| *n > 0);
        PresenceInfo {
            online,
            last_seen_at: if online {
                None
            } else {
                self.seen.get(user).cloned()
            },
        }
    }
}

impl MemoryEngine {
    pub(super) fn read(&self, reader: &str, peer: &str, up_to: StreamId) -> Option<ReadOutcome> {
        let conversation = dm_conversation(reader, peer);
        let mut st = self.lock();
        // The newest message at or before `up_to`: clamps to the last one.
        let (id, seq) = st
            .conversations
            .get(&conversation)?
            .range(..=up_to)
            .next_back()
            .map(|(id, (seq, _))| (*id, *seq))?;
        let meta = st.metas.get_mut(&conversation)?;
        if meta.reads.get(reader).is_some_and(|r| r.0 >= seq) {
            return None;
        }
        meta.reads.insert(reader.to_string(), (seq, id));
        let up_to = id.to_string();
        let json = Bytes::from(read_event_json(&conversation, reader, &up_to));
        for user in [reader, peer] {
            let event = st.append_inbox(user, json.clone(), self.retention.inbox_max_len);
            if st.subscribed.contains(user) {
                self.sink.deliver(user, LiveEvent::Inbox(event));
            }
        }
        Some(ReadOutcome {
            conversation,
            up_to,
        })
    }

    pub(super) fn opened(&self, user: &str) -> u64 {
        let mut st = self.lock();
        let count = st.connections.entry(user.to_string()).or_insert(0);
        *count += 1;
        let count = *count;
        if count == 1 {
            self.announce(&st, user, presence_frame(user, true, None));
        }
        count
    }

    pub(super) fn closed(&self, user: &str) {
        self.close_n(user, 1);
    }

    /// Every connection of the user is gone.
    pub(super) fn drop_all(&self, user: &str) {
        self.close_n(user, u64::MAX);
    }

    fn close_n(&self, user: &str, n: u64) {
        let mut st = self.lock();
        let Some(count) = st.connections.get_mut(user) else {
            return;
        };
        *count = count.saturating_sub(n);
        if *count > 0 {
            return;
        }
        st.connections.remove(user);
        let now = now_rfc3339();
        st.seen.insert(user.to_string(), now.clone());
        self.announce(&st, user, presence_frame(user, false, Some(&now)));
    }

    /// Sends a presence frame to every subscribed partner and to the sink's watchers.
    fn announce(&self, st: &State, user: &str, frame: String) {
        let frame = Bytes::from(frame);
        if let Some(peers) = st.convs.get(user) {
            for peer in peers.keys() {
                if st.subscribed.contains(peer) {
                    self.sink.deliver(peer, LiveEvent::Ephemeral(frame.clone()));
                }
            }
        }
        self.sink.presence(user, frame);
    }
}
