//! Every Redis key and channel name the engine uses, in one place.
//!
//! Keys that a cluster-mode Redis Function touches together share a hash tag, so on
//! Redis Cluster each call is slot-local: `{c:<a>:<b>}` (user ids sorted) for a
//! conversation's stream, metadata and nonce keys, and `{u:<id>}` for a user's inbox,
//! conversation index, presence hash and live channel. The single-Redis functions
//! (`chat_send`, `chat_read`, `chat_conn_open`/`close`, `chat_heartbeat`,
//! `chat_reap_batch`) combine slots and are never called on a cluster; there the
//! untagged keys (`chat:names`, `chat:nodes`, `chat:node:<n>:*`, `chat:user:<id>`,
//! `chat:sess:*`, `chat:usess:*`, `chat:usesst:*`) are only touched by plain single-key commands. User
//! ids never contain `:` or braces (`chat_protocol::valid_user_id`), so joining them
//! needs no escaping. Users and sessions are looked up one key at a time and need no
//! tag.
//!
//! Presence keeps a per-user hash (node → open connections) in the user's slot, and
//! per node a set of its users and a heartbeat key; `chat:nodes` lists every node that
//! ever heartbeated (until it is reaped). The presence functions build some user keys
//! themselves (`chat:{u:<id>}:ch`, `chat:{u:<id>}:pres`,
//! `chat:user:<id>`) for users they discover (conversation partners, a dead node's
//! users): the `lua_builds_the_same_keys` test keeps those in step with this file.
//!
//! # The key table
//!
//! `<a>`,`<b>` are the two user ids, sorted; braces are hash tags; every key starts
//! with `chat:`. Numeric options 0 mean "unlimited". This table is the one list
//! (`docs/architecture.md` links here); the Lua files' headers name what they touch.
//!
//! | key | type and what it holds | written by |
//! | --- | --- | --- |
//! | `chat:{c:<a>:<b>}:msgs` | stream, the history; entry id = message `id`; one field `m` = `<seq> <sender> <sent_at> <body>`; `MAXLEN ~ history_max_len`, `MINID ~` for `history_max_age_secs` | `send.lua` |
//! | `chat:{c:<a>:<b>}:meta` | hash: `s` (message count = last seq), `last` (last id), `lm` (last message JSON), `r:<user>` (read marker, a seq) and `ru:<user>` (its id), `nw:<ttl>`/`np:<ttl>` (newest nonce window and the one before) | `send.lua`, `receipts.lua` |
//! | `chat:{c:<a>:<b>}:n:<ttl>:<window>` | hash of one nonce window (`window` = Redis time / `ttl`): field `<` or `>` (sender is the first or second id) + nonce → message id; `EXPIREAT` two windows after its start, so a nonce lives ≥ `ttl` and < 2 `ttl`. Nonces arrive namespaced: `c:` client (24 h), `p:` API (24 h), `a:` gateway-made (60 s) | `send.lua` (`nonce_place`) |
//! | `chat:{u:<id>}:inbox` | stream, the user's events in accepted order; entry id = cursor; one field `m` = `<d><other> <message id> <sent_at> <body>`, `r` = `<d><other> <id read up to>` or `c` = `><other> <up_to>` (a clear) (`<d>`: `>` the owner sent/read, `<` the other did; rebuilt in `inbox.rs`); `MAXLEN ~ inbox_max_len`; expires 63/64 to all of `inbox_ttl_secs` after the last append | `inbox.lua` |
//! | `chat:{u:<id>}:clr` | hash: peer → the newest message of that conversation a clear deleted (only forward); reads of the inbox skip those messages; expires with the inbox (`inbox_ttl_secs`) | `send.lua` (`chat_inbox_clear`) |
//! | `chat:{u:<id>}:head` | string, the inbox's newest id (`SET … GET KEEPTTL` returns the previous id for the payload); expires after `inbox_ttl_secs / 64`; remaking it refreshes the inbox's expiry | `inbox.lua` |
//! | `chat:{u:<id>}:convs` | sorted set: peer → ms of the last message; the conversation list and the partners told about presence; at most `convs_max` (oldest dropped) | `inbox.lua` |
//! | `chat:{u:<id>}:rooms` | set: the rooms the user is a member of | `redis/rooms.rs` |
//! | `chat:{u:<id>}:pres` | hash: node → open connections there; online while not empty | `presence.lua` |
//! | `chat:{u:<id>}:ch` | sharded channel: inbox events, ephemeral frames, `! disconnect`, `@ <room> …` (a `member` event about the user) | `inbox.lua`, `presence.lua`, `live.rs`, `cluster.rs`, `redis/rooms.rs` |
//! | `chat:user:<id>` | hash: `name`, `idx` (its `chat:names` member), `seen` (RFC 3339, last went offline), `guest` (`1` for a guest, whose hash expires after `guest_ttl_secs` without a sign-in) | `accounts.rs`, `presence.lua`, `cluster.rs` |
//! | `chat:names` | sorted set, scores 0: `<lower-cased name>\0<id>` | `accounts.rs` |
//! | `chat:guests` | sorted set: guests' `chat:names` members → ms their user hash expires; swept to drop expired guests from the directory | `accounts.rs` |
//! | `chat:sess:<hash>` | `<hash>`: the hex SHA-256 of the session secret, never the secret itself (a Redis reader or a backup cannot resume a session; one stored under its raw secret by an earlier version is moved under its hash at its next resume); string: `#<created ms> ` (no resume once `auth.session_max_age_secs` old; a value without it, from before, is marked at its next resume), the user id, then ` <JSON array>` when the sign-in's token had a `rooms` claim (kept for every resume); `EX auth.session_ttl_secs`, slid by `GETEX` on resume | `accounts.rs` |
//! | `chat:usesst:<id>` | sorted set: the user's sessions, member `<hash>`, score its creation (ms) (revoke all); at most `auth.max_sessions_per_user` (a new session past it revokes the oldest), those past `auth.session_max_age_secs` dropped at each new session; expiry pushed with each | `accounts.rs` |
//! | `chat:usess:<id>` | set of earlier versions (the user's sessions by `<hash>`): no longer written; read when revoking all, and a session listed there moves to `usesst` at its next resume; expires on its own | `accounts.rs` |
//! | `chat:node:<node>:users` | set: users with a connection on the node | `presence.lua`, `cluster.rs` |
//! | `chat:node:<node>:alive` | string, the heartbeat: `SET … EX 15` | `chat_heartbeat`, `cluster.rs` |
//! | `chat:node:<node>:ready` | string, the readiness probe: `SET … EX 60` by every `/readyz` (a Redis refusing writes is not ready) | `redis/mod.rs` |
//! | `chat:node:<node>:reaping` | the reaper's claim, `SET NX EX 30`, deleted when done | `redis/presence.rs` |
//! | `chat:nodes` | sorted set: node → ms of its last heartbeat, until reaped | `chat_heartbeat`, `cluster.rs`, `redis/presence.rs` |
//! | `chat:presence` | plain pub/sub channel every node subscribes to | `presence.lua`, `cluster.rs` |
//! | `chat:{r:<room>}:meta` | hash: `name`, `s` (messages sent), `e` (newest event id), `lm` (last message frame), `lt` (id of the last message, or of the event that created the room), `r:<user>` (a member's read marker, a seq) | `rooms.lua` |
//! | `chat:{r:<room>}:members` | sorted set, scores 0: member ids (`ZRANGEBYLEX` pages by id) | `rooms.lua` |
//! | `chat:{r:<room>}:names` | hash: member → display name at join | `rooms.lua` |
//! | `chat:{r:<room>}:ev` | stream, the room's messages and `member` events; fields `p` (previous event id), `j`/`t` (frame before/after its id), `k` (`m`, `j`, `l`), `s` (seq, messages), `u` (member, member events); `MAXLEN ~ history_max_len`, `MINID ~` for `history_max_age_secs` | `rooms.lua` |
//! | `chat:{r:<room>}:ch` | sharded channel: `"<id> <prev> <flag> <frame>"` (flag `-` message, `+<user>` joined, `~<user>` left) | `rooms.lua` |
//! | `chat:{r:<room>}:n:<from>:<nonce>` | string: a room message's id, `EX` the nonce TTL (nonce namespaced as for 1:1 sends) | `rooms.lua` (`chat_room_send`) |

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

/// Conversation metadata hash: `s` (message count), `last` (last message id), `lm`
/// (last message JSON), and per participant `r:<user>` (read marker: the sequence
/// number of the last read message) and `ru:<user>` (its id). Stream entries carry
/// their sequence number first in their one field `m` (see `redis/inbox.rs`).
pub fn conv_meta(a: &str, b: &str) -> String {
    format!("{}:meta", conv_tag(a, b))
}

/// The nonces of the conversation of `a`, `b` remembered for `ttl` seconds, sent in
/// window `window` (Redis's clock in seconds / `ttl`): a hash, field `<` or `>` (the
/// sender is the first or the second of the sorted pair) followed by the nonce, value
/// the message id. `send.lua` (`nonce_place`) builds these names from the
/// conversation's stream key; the `lua_builds_the_same_keys` test keeps both in step.
pub fn conv_nonces(a: &str, b: &str, ttl: u64, window: u64) -> String {
    format!("{}:n:{ttl}:{window}", conv_tag(a, b))
}

/// The user's hash tag.
fn user_tag(user: &str) -> String {
    format!("{PREFIX}{{u:{user}}}")
}

/// The user's inbox stream: one field per entry, `m` (a message) or `r` (a read
/// receipt), in the stored form of `redis/inbox.rs`.
pub fn inbox(user: &str) -> String {
    format!("{}:inbox", user_tag(user))
}

/// The newest id of the user's inbox (a string), kept by every append so that an
/// append need not read the stream's last entry; it expires together with the inbox.
pub fn inbox_head(user: &str) -> String {
    format!("{}:head", user_tag(user))
}

/// The clears of the user's conversations: hash other participant → the newest
/// message cleared; reads of the inbox skip those messages. Expires with the inbox.
pub fn inbox_cleared(user: &str) -> String {
    format!("{}:clr", user_tag(user))
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

/// The user hash: `name`, `idx` (the user's member of [`NAMES`]), `seen` (RFC 3339
/// time they last went offline).
pub fn user(id: &str) -> String {
    format!("{PREFIX}user:{id}")
}

/// The directory: sorted set, every score 0, members `<lower-cased name>\0<id>`, so
/// `ZRANGEBYLEX` finds names by prefix.
pub const NAMES: &str = "chat:names";

/// Guests' expiry: sorted set of directory members (as [`NAMES`]) scored by the ms
/// their user hash expires; swept to drop expired guests from the directory.
pub const GUESTS: &str = "chat:guests";

/// The directory member of a user.
pub fn name_member(id: &str, name: &str) -> String {
    format!("{}\0{id}", name.to_lowercase())
}

/// The user's presence: hash node → open connections on that node. Online while
/// not empty.
pub fn presence(user: &str) -> String {
    format!("{}:pres", user_tag(user))
}

/// The users with at least one connection on `node` (set).
pub fn node_users(node: &str) -> String {
    format!("{PREFIX}node:{node}:users")
}

/// The node's heartbeat: exists while the node is alive (`SET … EX ttl`).
pub fn node_alive(node: &str) -> String {
    format!("{PREFIX}node:{node}:alive")
}

/// The node's readiness probe: written (`SET … EX 60`) by every `/readyz`.
pub fn node_ready(node: &str) -> String {
    format!("{PREFIX}node:{node}:ready")
}

/// Claimed (`SET NX EX 30`) by the node that cleans up after a dead `node`.
pub fn node_reaping(node: &str) -> String {
    format!("{PREFIX}node:{node}:reaping")
}

/// Every node that heartbeated and was not reaped: sorted set node → last heartbeat ms.
pub const NODES: &str = "chat:nodes";

/// The global presence channel (plain pub/sub, every node subscribes): payload
/// `"<user id> <presence frame>"`.
pub const PRESENCE_CHANNEL: &str = "chat:presence";

/// A session, named by the hash of its secret (`accounts.rs`; an earlier version's
/// raw secret only to move it): string holding its creation time, the user id and
/// the sign-in's `rooms` claim, with a sliding expiry.
pub fn session(name: &str) -> String {
    format!("{PREFIX}sess:{name}")
}

/// The set of a user's sessions, for revoking them all.
pub fn user_sessions(user: &str) -> String {
    format!("{PREFIX}usess:{user}")
}

/// The user's live sessions by creation time: a sorted set, member the session's
/// hash, score its creation (ms). The oldest are revoked first past
/// `auth.max_sessions_per_user`, and those past `auth.session_max_age_secs` are
/// dropped at each new session. Replaces [`user_sessions`], the plain set of earlier
/// versions (still read when revoking all, until it expires).
pub fn user_session_times(user: &str) -> String {
    format!("{PREFIX}usesst:{user}")
}

// Rooms (protocol 1.1): every key of a room shares the tag `{r:<room>}` (one slot,
// so each room function is slot-local on a cluster); room ids are `a-z0-9_-` only
// (`chat_protocol::valid_room_id`). The user's set of rooms lives in the user's slot.

/// The room's hash tag.
fn room_tag(room: &str) -> String {
    format!("{PREFIX}{{r:{room}}}")
}

/// The room's metadata hash (see `scripts/rooms.lua`).
pub fn room_meta(room: &str) -> String {
    format!("{}:meta", room_tag(room))
}

/// The room's members: sorted set, every score 0, so `ZRANGEBYLEX` pages by id.
pub fn room_members(room: &str) -> String {
    format!("{}:members", room_tag(room))
}

/// The room's member names: hash member id → display name at join.
pub fn room_names(room: &str) -> String {
    format!("{}:names", room_tag(room))
}

/// The room's event stream: messages and `member` events; its ids are the events'.
pub fn room_events(room: &str) -> String {
    format!("{}:ev", room_tag(room))
}

/// The room's live channel (sharded pub/sub).
pub fn room_channel(room: &str) -> String {
    format!("{}:ch", room_tag(room))
}

/// The room id behind a channel name built by [`room_channel`].
pub fn channel_room(channel: &str) -> Option<&str> {
    channel.strip_prefix("chat:{r:")?.strip_suffix("}:ch")
}

/// A room message's nonce (string: the message id, expiring after the nonce TTL).
pub fn room_nonce(room: &str, from: &str, nonce: &str) -> String {
    format!("{}:n:{from}:{nonce}", room_tag(room))
}

/// The rooms a user is a member of (set).
pub fn user_rooms(user: &str) -> String {
    format!("{}:rooms", user_tag(user))
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
            conv_nonces("bob", "alice", 60, 7),
            "chat:{c:alice:bob}:n:60:7"
        );
        let slot = fred::util::redis_keyslot(conv_msgs("a", "b").as_bytes());
        assert_eq!(
            slot,
            fred::util::redis_keyslot(conv_meta("b", "a").as_bytes())
        );
        assert_eq!(
            slot,
            fred::util::redis_keyslot(conv_nonces("a", "b", 60, 1).as_bytes())
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
        assert_eq!(
            slot,
            fred::util::redis_keyslot(inbox_cleared("alice").as_bytes())
        );
        assert_eq!(
            slot,
            fred::util::redis_keyslot(inbox_head("alice").as_bytes())
        );
    }

    #[test]
    fn channel_round_trip() {
        assert_eq!(channel_user(&channel("a.b@c-d")), Some("a.b@c-d"));
        assert_eq!(channel_user("chat:{u:x}:inbox"), None);
        assert_eq!(channel_user("other"), None);
    }

    #[test]
    fn lua_builds_the_same_keys() {
        let chat = super::super::functions::LIBRARY;
        // nonce_place: the stream key without "msgs", then n:<ttl>:<window>.
        let msgs = conv_msgs("a", "b");
        let base = &msgs[..msgs.len() - "msgs".len()];
        assert_eq!(format!("{base}n:60:7"), conv_nonces("a", "b", 60, 7));
        assert!(chat.contains("string.sub(msgs, 1, -5) .. 'n:' .. a.nonce_ttl .. ':'"));
        let lua = chat;
        assert_eq!(presence("u"), "chat:{u:u}:pres");
        assert!(lua.contains("'chat:{u:' .. user .. '}:pres'"));
        assert_eq!(channel("u"), "chat:{u:u}:ch");
        assert!(lua.contains("'chat:{u:' .. peer .. '}:ch'"));
        assert_eq!(user("u"), "chat:user:u");
        assert!(lua.contains("'chat:user:' .. user"));
        assert_eq!(convs("u"), "chat:{u:u}:convs");
        assert!(lua.contains("'chat:{u:' .. user .. '}:convs'"));
        assert_eq!(name_member("x", "ÀB c"), "àb c\0x");
        assert_eq!(
            fred::util::redis_keyslot(presence("alice").as_bytes()),
            fred::util::redis_keyslot(inbox("alice").as_bytes())
        );
    }

    #[test]
    fn room_keys_share_a_slot() {
        let slot = fred::util::redis_keyslot(room_events("lobby").as_bytes());
        for key in [
            room_meta("lobby"),
            room_members("lobby"),
            room_names("lobby"),
            room_channel("lobby"),
            room_nonce("lobby", "alice", "n1"),
        ] {
            assert_eq!(fred::util::redis_keyslot(key.as_bytes()), slot, "{key}");
        }
        assert_eq!(channel_room(&room_channel("a_b-1")), Some("a_b-1"));
        assert_eq!(channel_room(&channel("alice")), None);
        assert_eq!(channel_user(&room_channel("lobby")), None);
        assert_eq!(
            fred::util::redis_keyslot(user_rooms("alice").as_bytes()),
            fred::util::redis_keyslot(inbox("alice").as_bytes())
        );
    }

    #[test]
    fn plain_keys() {
        assert_eq!(user("alice"), "chat:user:alice");
        assert_eq!(session("abc"), "chat:sess:abc");
        assert_eq!(user_sessions("alice"), "chat:usess:alice");
        assert_eq!(user_session_times("alice"), "chat:usesst:alice");
    }
}
