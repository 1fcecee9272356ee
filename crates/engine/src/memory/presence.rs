//! The memory engine's presence ([`Presence`]): a per-user connection count (one
//! node, so no heartbeats and nobody to reap). Transitions go to every subscribed
//! conversation partner as an ephemeral frame and to
//! [`EventSink::presence`](crate::EventSink::presence).

use async_trait::async_trait;
use bytes::Bytes;
use chat_protocol::Event;

use super::{MemoryEngine, State};
use crate::events::now_rfc3339;
use crate::{EngineError, LiveEvent, Presence, PresenceInfo};

impl State {
    fn presence_of(&self, user: &str) -> PresenceInfo {
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
    /// Closes `n` of the user's connections (`u64::MAX`: all of them), announcing
    /// the offline transition.
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
        let frame = Event::Presence {
            user,
            online: false,
            last_seen_at: Some(&now),
        };
        self.announce(&st, user, frame.to_json());
    }

    /// Sends a presence frame to the most recent partners (at most
    /// `retention.presence_fanout_max`) that are subscribed, and to every node's
    /// watchers.
    fn announce(&self, st: &State, user: &str, frame: String) {
        let frame = Bytes::from(frame);
        if let Some(peers) = st.convs.get(user) {
            let mut recent: Vec<(&String, &u64)> = peers.iter().collect();
            let max = self.retention.presence_fanout_max;
            if max > 0 && recent.len() as u64 > max {
                recent.sort_unstable_by(|a, b| b.1.cmp(a.1).then_with(|| b.0.cmp(a.0)));
                recent.truncate(max as usize);
            }
            for (peer, _) in recent {
                st.nodes.deliver(peer, LiveEvent::Ephemeral(frame.clone()));
            }
        }
        st.nodes.presence(user, &frame);
    }
}

#[async_trait]
impl Presence for MemoryEngine {
    async fn connection_opened(&self, user_id: &str, _node: &str) -> Result<u64, EngineError> {
        let mut st = self.lock();
        let count = st.connections.entry(user_id.to_string()).or_insert(0);
        *count += 1;
        let count = *count;
        if count == 1 {
            let frame = Event::Presence {
                user: user_id,
                online: true,
                last_seen_at: None,
            };
            self.announce(&st, user_id, frame.to_json());
        }
        Ok(count)
    }

    async fn connection_closed(&self, user_id: &str, _node: &str) -> Result<(), EngineError> {
        self.close_n(user_id, 1);
        Ok(())
    }

    async fn drop_presence(&self, user_id: &str, _node: &str) -> Result<(), EngineError> {
        // Every connection of the user is gone.
        self.close_n(user_id, u64::MAX);
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
}
