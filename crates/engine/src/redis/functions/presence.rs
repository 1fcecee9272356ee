//! `scripts/presence.lua`: who is online, node heartbeats and a dead node's cleanup.
//!
//! On one Redis every presence write is one call that also announces a transition
//! (`chat_conn_open`, `chat_conn_close`, `chat_conn_drop`, `chat_heartbeat`,
//! `chat_reap_batch`): this module builds their keys and arguments, in the order their
//! Lua names them, with the presence payloads ready-made ([`super::super::payload`]).
//! On a cluster only the user-slot halves run in Lua (`chat_pres_open`,
//! `chat_pres_close`, `chat_pres_drop`); `cluster.rs` calls them and does the rest.

use super::super::keys;
use super::super::payload::{ReapTemplate, Transition};

/// A connection of the user opened / closed on a node (single Redis).
pub(crate) const CONN_OPEN: &str = "chat_conn_open";
pub(crate) const CONN_CLOSE: &str = "chat_conn_close";
/// The node has no connection of the user any more, whatever its count says.
pub(crate) const CONN_DROP: &str = "chat_conn_drop";
/// The node is alive for a while more.
pub(crate) const HEARTBEAT: &str = "chat_heartbeat";
/// Closes a dead node's connections of a batch of users.
pub(crate) const REAP_BATCH: &str = "chat_reap_batch";
/// Cluster mode: the user-slot halves of the presence calls.
pub(crate) const PRES_OPEN: &str = "chat_pres_open";
pub(crate) const PRES_CLOSE: &str = "chat_pres_close";
pub(crate) const PRES_DROP: &str = "chat_pres_drop";

/// The Lua file, to check it against [`SIGNATURES`].
#[cfg(test)]
pub(super) const LUA: &str = include_str!("../scripts/presence.lua");

/// The keys and arguments of each function, by the names `presence.lua` gives them.
#[cfg(test)]
pub(super) const SIGNATURES: &[super::Signature] = &[
    super::Signature::fixed(
        CONN_OPEN,
        "pres node_users convs",
        "user node channel online_partner online_global fanout",
    ),
    super::Signature::fixed(
        CONN_CLOSE,
        "pres node_users convs user_hash",
        "user node channel now offline_partner offline_global fanout",
    ),
    super::Signature::fixed(
        CONN_DROP,
        "pres node_users convs user_hash",
        "user node channel now offline_partner offline_global fanout",
    ),
    super::Signature::fixed(HEARTBEAT, "alive nodes", "node ttl_secs now_ms"),
    super::Signature::fixed(
        REAP_BATCH,
        "node_users",
        "node channel now batch before between after fanout",
    ),
    super::Signature::fixed(PRES_OPEN, "pres convs", "node fanout"),
    super::Signature::fixed(PRES_CLOSE, "pres convs", "node fanout"),
    super::Signature::fixed(PRES_DROP, "pres convs", "node fanout"),
];

/// Keys and arguments of `chat_conn_open`: `user` opened a connection on `node`;
/// `fanout`: the most recent partners told when that takes the user online.
pub(crate) fn conn_open_call(user: &str, node: &str, fanout: u64) -> (Vec<String>, Vec<String>) {
    let keys = vec![
        keys::presence(user),
        keys::node_users(node),
        keys::convs(user),
    ];
    let online = Transition::new(user, true, None);
    let args = vec![
        user.to_string(),
        node.to_string(),
        keys::PRESENCE_CHANNEL.to_string(),
        online.partner,
        online.global,
        fanout.to_string(),
    ];
    (keys, args)
}

/// Keys and arguments of `chat_conn_close` and `chat_conn_drop` (the same): `now`
/// (RFC 3339) is the user's `seen` should they go offline.
pub(crate) fn conn_close_call(
    user: &str,
    node: &str,
    now: &str,
    fanout: u64,
) -> (Vec<String>, Vec<String>) {
    let keys = vec![
        keys::presence(user),
        keys::node_users(node),
        keys::convs(user),
        keys::user(user),
    ];
    let offline = Transition::new(user, false, Some(now));
    let args = vec![
        user.to_string(),
        node.to_string(),
        keys::PRESENCE_CHANNEL.to_string(),
        now.to_string(),
        offline.partner,
        offline.global,
        fanout.to_string(),
    ];
    (keys, args)
}

/// Keys and arguments of `chat_heartbeat`: `node` is alive for `ttl_secs` more (at
/// least one), as of `now_ms`.
pub(crate) fn heartbeat_call(node: &str, ttl_secs: u64, now_ms: u64) -> (Vec<String>, Vec<String>) {
    let keys = vec![keys::node_alive(node), keys::NODES.to_string()];
    let args = vec![
        node.to_string(),
        ttl_secs.max(1).to_string(),
        now_ms.to_string(),
    ];
    (keys, args)
}

/// Keys and arguments of `chat_reap_batch`: up to `batch` of the dead `node`'s users
/// lose its connections, going offline at `now` (RFC 3339) when those were their last.
pub(crate) fn reap_batch_call(
    node: &str,
    now: &str,
    batch: usize,
    fanout: u64,
) -> (Vec<String>, Vec<String>) {
    let keys = vec![keys::node_users(node)];
    let offline = ReapTemplate::offline(now);
    let args = vec![
        node.to_string(),
        keys::PRESENCE_CHANNEL.to_string(),
        now.to_string(),
        batch.to_string(),
        offline.before,
        offline.between,
        offline.after,
        fanout.to_string(),
    ];
    (keys, args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signature(name: &str) -> &'static super::super::Signature {
        SIGNATURES
            .iter()
            .find(|s| s.name == name)
            .expect("a signature")
    }

    #[test]
    fn calls_put_each_value_where_the_lua_names_it() {
        let (keys, args) = conn_open_call("alice", "n1", 5);
        let open = signature(CONN_OPEN);
        open.check_call(&keys, &args, 0);
        assert_eq!(open.key(&keys, "node_users"), keys::node_users("n1"));
        let online = Transition::new("alice", true, None);
        assert_eq!(open.arg(&args, "online_global"), online.global);
        assert_eq!(open.arg(&args, "fanout"), "5");

        let now = "2026-01-01T00:00:00.000Z";
        let (keys, args) = conn_close_call("alice", "n1", now, 5);
        for name in [CONN_CLOSE, CONN_DROP] {
            let close = signature(name);
            close.check_call(&keys, &args, 0);
            assert_eq!(close.key(&keys, "user_hash"), keys::user("alice"));
            assert_eq!(close.arg(&args, "now"), now);
            let offline = Transition::new("alice", false, Some(now));
            assert_eq!(close.arg(&args, "offline_partner"), offline.partner);
            assert_eq!(close.arg(&args, "channel"), keys::PRESENCE_CHANNEL);
        }

        let (keys, args) = heartbeat_call("n1", 0, 7);
        let beat = signature(HEARTBEAT);
        beat.check_call(&keys, &args, 0);
        assert_eq!(beat.key(&keys, "nodes"), keys::NODES);
        assert_eq!(
            (beat.arg(&args, "ttl_secs"), beat.arg(&args, "now_ms")),
            ("1", "7")
        );

        let (keys, args) = reap_batch_call("n1", now, 10, 5);
        let reap = signature(REAP_BATCH);
        reap.check_call(&keys, &args, 0);
        assert_eq!(
            (reap.arg(&args, "batch"), reap.arg(&args, "fanout")),
            ("10", "5")
        );
        assert_eq!(reap.arg(&args, "after"), ReapTemplate::offline(now).after);
    }
}
