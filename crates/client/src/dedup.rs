//! De-duplication of delivered messages. Delivery is at-least-once (a recovery replay
//! may overlap live delivery, a retried send may be delivered again), so the client
//! drops a `message` whose conversation + id it has seen recently. A room's `member`
//! events share its message ids' sequence, so they are kept under the room's
//! conversation (`room:<id>`) too.
//!
//! Memory is bounded: each conversation remembers its last `per_conversation` ids and
//! at most `max_conversations` conversations are tracked (the least recently used is
//! forgotten first). It must never grow with the number of messages.

use std::collections::{HashMap, HashSet, VecDeque};

/// Ids per conversation kept by default: far more than a replay can overlap.
pub const DEFAULT_PER_CONVERSATION: usize = 2048;
/// Conversations tracked by default.
pub const DEFAULT_MAX_CONVERSATIONS: usize = 1024;

/// A bounded set of recently seen `(conversation, id)` pairs.
#[derive(Debug, Clone)]
pub struct RecentIds {
    per_conversation: usize,
    max_conversations: usize,
    conversations: HashMap<String, Recent>,
    /// Logical clock for least-recently-used eviction of whole conversations.
    tick: u64,
}

#[derive(Debug, Clone, Default)]
struct Recent {
    order: VecDeque<String>,
    ids: HashSet<String>,
    last_used: u64,
}

impl Default for RecentIds {
    fn default() -> Self {
        Self::new(DEFAULT_PER_CONVERSATION, DEFAULT_MAX_CONVERSATIONS)
    }
}

impl RecentIds {
    pub fn new(per_conversation: usize, max_conversations: usize) -> RecentIds {
        RecentIds {
            per_conversation: per_conversation.max(1),
            max_conversations: max_conversations.max(1),
            conversations: HashMap::new(),
            tick: 0,
        }
    }

    /// Records the id; returns `true` if it was not seen recently (deliver it) and
    /// `false` for a duplicate (drop it).
    pub fn insert(&mut self, conversation: &str, id: &str) -> bool {
        self.tick += 1;
        if !self.conversations.contains_key(conversation)
            && self.conversations.len() >= self.max_conversations
        {
            self.evict_oldest();
        }
        let recent = self
            .conversations
            .entry(conversation.to_string())
            .or_default();
        recent.last_used = self.tick;
        if recent.ids.contains(id) {
            return false;
        }
        recent.ids.insert(id.to_string());
        recent.order.push_back(id.to_string());
        while recent.order.len() > self.per_conversation {
            if let Some(old) = recent.order.pop_front() {
                recent.ids.remove(&old);
            }
        }
        true
    }

    /// Whether the id was seen recently.
    pub fn contains(&self, conversation: &str, id: &str) -> bool {
        self.conversations
            .get(conversation)
            .is_some_and(|r| r.ids.contains(id))
    }

    /// Number of ids remembered, over all conversations.
    pub fn len(&self) -> usize {
        self.conversations.values().map(|r| r.ids.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.conversations.is_empty()
    }

    fn evict_oldest(&mut self) {
        let oldest = self
            .conversations
            .iter()
            .min_by_key(|(_, r)| r.last_used)
            .map(|(c, _)| c.clone());
        if let Some(c) = oldest {
            self.conversations.remove(&c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_duplicates_per_conversation() {
        let mut seen = RecentIds::default();
        assert!(seen.insert("dm:a:b", "1-0"));
        assert!(!seen.insert("dm:a:b", "1-0"));
        // The same id in another conversation is a different message.
        assert!(seen.insert("dm:a:c", "1-0"));
        assert!(seen.contains("dm:a:b", "1-0"));
        assert!(!seen.contains("dm:a:b", "2-0"));
    }

    #[test]
    fn bounded_per_conversation() {
        let mut seen = RecentIds::new(3, 10);
        for i in 0..10 {
            assert!(seen.insert("c", &format!("{i}-0")));
        }
        assert_eq!(seen.len(), 3);
        assert!(seen.contains("c", "9-0"));
        assert!(!seen.contains("c", "6-0"));
        // Forgotten ids are accepted again: the bound trades memory for exactness.
        assert!(seen.insert("c", "0-0"));
    }

    #[test]
    fn evicts_least_recently_used_conversation() {
        let mut seen = RecentIds::new(10, 2);
        seen.insert("a", "1-0");
        seen.insert("b", "1-0");
        seen.insert("a", "2-0"); // `a` used more recently than `b`
        seen.insert("c", "1-0"); // evicts `b`
        assert!(seen.contains("a", "1-0"));
        assert!(!seen.contains("b", "1-0"));
        assert!(seen.contains("c", "1-0"));
    }
}
