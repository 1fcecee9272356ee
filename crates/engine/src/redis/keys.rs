//! Every Redis key and channel name the engine uses, in one place.
//!
//! Keys that a single Redis Function touches together share a hash tag, so on Redis
//! Cluster each function call is slot-local: `{c:<a>:<b>}` (user ids sorted) for a
//! conversation's stream, metadata and nonce keys, and `{u:<id>}` for a user's inbox,
//! conversation index and live channel. User ids never contain `:` or braces
//! (`chat_protocol::valid_user_id`), so joining them needs no escaping. Users and
//! sessions are looked up one key at a time and need no tag.

/// Prefix of every key, so the engine can share a Redis with other applications.
const PREFIX: &str = "chat:";

/// The hash tag of the conversation between `a` and `b` (order-independent).
fn conv_tag(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("{PREFIX}{{c:{lo}:{hi}}}")
}

/// Conversation stream: the history; its entry ids are the message ids.
pub fn conv_msgs(a: &str, b: &str) -> String {
    format!("{}:msgs", conv_tag(a, b))
}

/// Conversation metadata hash: `s` (message count), `last` (last message id).
pub fn conv_meta(a: &str, b: &str) -> String {
    format!("{}:meta", conv_tag(a, b))
}

/// Idempotency key of a send by `from` with `nonce` in the conversation of `a`, `b`.
/// Value: the stored message JSON.
pub fn conv_nonce(a: &str, b: &str, from: &str, nonce: &str) -> String {
    format!("{}:n:{from}:{nonce}", conv_tag(a, b))
}

/// The user's hash tag.
fn user_tag(user: &str) -> String {
    format!("{PREFIX}{{u:{user}}}")
}

/// The user's inbox stream: entries `p` (previous id) and `e` (event JSON).
pub fn inbox(user: &str) -> String {
    format!("{}:inbox", user_tag(user))
}

/// The user's conversation index: sorted set of peer ids scored by last message ms.
pub fn convs(user: &str) -> String {
    format!("{}:convs", user_tag(user))
}

/// The user's live channel (sharded pub/sub).
pub fn channel(user: &str) -> String {
    format!("{}:ch", user_tag(user))
}

/// The user id behind a channel name built by [`channel`].
pub fn channel_user(channel: &str) -> Option<&str> {
    channel.strip_prefix("chat:{u:")?.strip_suffix("}:ch")
}

/// The user hash: `name`.
pub fn user(id: &str) -> String {
    format!("{PREFIX}user:{id}")
}

/// A session: string holding the user id, with a sliding expiry.
pub fn session(session: &str) -> String {
    format!("{PREFIX}sess:{session}")
}

/// The set of a user's sessions, for revoking them all.
pub fn user_sessions(user: &str) -> String {
    format!("{PREFIX}usess:{user}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_keys_are_symmetric_and_share_a_slot() {
        assert_eq!(conv_msgs("bob", "alice"), "chat:{c:alice:bob}:msgs");
        assert_eq!(conv_msgs("alice", "bob"), conv_msgs("bob", "alice"));
        assert_eq!(conv_meta("bob", "alice"), "chat:{c:alice:bob}:meta");
        assert_eq!(
            conv_nonce("bob", "alice", "bob", "n1"),
            "chat:{c:alice:bob}:n:bob:n1"
        );
        let slot = fred::util::redis_keyslot(conv_msgs("a", "b").as_bytes());
        assert_eq!(
            slot,
            fred::util::redis_keyslot(conv_meta("b", "a").as_bytes())
        );
        assert_eq!(
            slot,
            fred::util::redis_keyslot(conv_nonce("a", "b", "a", "x").as_bytes())
        );
    }

    #[test]
    fn user_keys_share_a_slot() {
        assert_eq!(inbox("alice"), "chat:{u:alice}:inbox");
        assert_eq!(convs("alice"), "chat:{u:alice}:convs");
        assert_eq!(channel("alice"), "chat:{u:alice}:ch");
        let slot = fred::util::redis_keyslot(inbox("alice").as_bytes());
        assert_eq!(slot, fred::util::redis_keyslot(convs("alice").as_bytes()));
        assert_eq!(slot, fred::util::redis_keyslot(channel("alice").as_bytes()));
    }

    #[test]
    fn channel_round_trip() {
        assert_eq!(channel_user(&channel("a.b@c-d")), Some("a.b@c-d"));
        assert_eq!(channel_user("chat:{u:x}:inbox"), None);
        assert_eq!(channel_user("other"), None);
    }

    #[test]
    fn plain_keys() {
        assert_eq!(user("alice"), "chat:user:alice");
        assert_eq!(session("abc"), "chat:sess:abc");
        assert_eq!(user_sessions("alice"), "chat:usess:alice");
    }
}
