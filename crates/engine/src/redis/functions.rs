//! The `chat` Redis Function libraries (`scripts/chat.lua` for messages and read
//! receipts, `scripts/presence.lua` for presence) and how the engine calls them.
//!
//! The libraries are loaded with `FUNCTION LOAD REPLACE` when the engine connects, and
//! again whenever a call fails with "Function not found" (a restarted Redis without
//! persistence has lost it). Functions, unlike the `EVALSHA` script cache, survive
//! restarts with persistence and failovers. This file builds the keys and arguments of
//! each function in the order documented at the top of each function in the Lua file,
//! and parses their replies.

use chat_protocol::{dm_conversation, Message};
use fred::prelude::*;

use super::conn::{map_err, text};
use super::keys;
use crate::{EngineError, Retention, SendRequest};

/// The Lua source of the message library.
pub(crate) const LIBRARY: &str = include_str!("scripts/chat.lua");

/// The Lua source of the presence library.
pub(crate) const PRESENCE_LIBRARY: &str = include_str!("scripts/presence.lua");

/// The function doing a whole send on a single Redis.
pub(crate) const SEND: &str = "chat_send";
/// Moves a read marker and tells both participants.
pub(crate) const READ: &str = "chat_read";
/// Presence: a connection opened / closed, a node heartbeat, a dead node's cleanup.
pub(crate) const CONN_OPEN: &str = "chat_conn_open";
pub(crate) const CONN_CLOSE: &str = "chat_conn_close";
pub(crate) const HEARTBEAT: &str = "chat_heartbeat";
pub(crate) const REAP_BATCH: &str = "chat_reap_batch";

/// Loads (or replaces) both libraries.
pub(crate) async fn load<C: FunctionInterface + Sync>(client: &C) -> Result<(), EngineError> {
    for library in [LIBRARY, PRESENCE_LIBRARY] {
        let _: Value = client.function_load(true, library).await.map_err(map_err)?;
    }
    Ok(())
}

/// Keys and arguments of `chat_send` for a request.
pub(crate) fn send_call(req: &SendRequest, retention: &Retention) -> (Vec<String>, Vec<String>) {
    let (from, to) = (req.from.as_str(), req.to.as_str());
    let nonce = req.nonce.as_deref().unwrap_or("");
    let keys = vec![
        keys::conv_msgs(from, to),
        keys::conv_meta(from, to),
        // Unused when there is no nonce, but always in the conversation's slot.
        keys::conv_nonce(from, to, from, nonce),
        keys::inbox(from),
        keys::convs(from),
        keys::channel(from),
        keys::inbox(to),
        keys::convs(to),
        keys::channel(to),
    ];
    let args = vec![
        dm_conversation(from, to),
        req.from.clone(),
        req.to.clone(),
        req.body.clone(),
        req.sent_at.clone(),
        nonce.to_string(),
        req.nonce_ttl_secs.to_string(),
        retention.history_max_len.to_string(),
        retention.history_max_age_secs.to_string(),
        retention.inbox_max_len.to_string(),
        retention.inbox_ttl_secs.to_string(),
    ];
    (keys, args)
}

/// Parses the `{dup, message JSON}` reply of `chat_send` / `chat_conv_append`.
pub(crate) fn parse_send_reply(reply: Value) -> Result<(bool, Message), EngineError> {
    let bad = |what: &str| EngineError::Internal(format!("unexpected chat_send reply: {what}"));
    let Value::Array(mut parts) = reply else {
        return Err(bad("not an array"));
    };
    if parts.len() != 2 {
        return Err(bad("length"));
    }
    let json = text(parts.pop().unwrap_or(Value::Null)).ok_or_else(|| bad("json"))?;
    let dup = match parts.pop() {
        Some(Value::Integer(n)) => n == 1,
        _ => return Err(bad("flag")),
    };
    let message: Message =
        serde_json::from_str(&json).map_err(|e| bad(&format!("message json: {e}")))?;
    Ok((dup, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_keys_of_one_conversation_share_a_slot() {
        let req = SendRequest {
            from: "bob".into(),
            to: "alice".into(),
            body: "hi".into(),
            nonce: None,
            nonce_ttl_secs: 60,
            sent_at: "2026-01-01T00:00:00.000Z".into(),
        };
        let (keys, args) = send_call(&req, &Retention::default());
        assert_eq!(keys.len(), 9);
        assert_eq!(args.len(), 11);
        let slot = |k: &str| fred::util::redis_keyslot(k.as_bytes());
        assert_eq!(slot(&keys[0]), slot(&keys[1]));
        assert_eq!(slot(&keys[0]), slot(&keys[2]));
        assert_eq!(args[0], "dm:alice:bob");
        assert_eq!(args[5], "");
    }

    #[test]
    fn library_declares_every_function() {
        assert!(LIBRARY.starts_with("#!lua name=chat\n"));
        for f in ["chat_send", "chat_conv_append", "chat_inbox_append", READ] {
            assert!(LIBRARY.contains(&format!("register_function('{f}'")), "{f}");
        }
        assert!(PRESENCE_LIBRARY.starts_with("#!lua name=chat_presence\n"));
        for f in [CONN_OPEN, CONN_CLOSE, HEARTBEAT, REAP_BATCH] {
            assert!(
                PRESENCE_LIBRARY.contains(&format!("register_function('{f}'")),
                "{f}"
            );
        }
    }
}
