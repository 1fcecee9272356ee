//! `scripts/send.lua`: storing 1:1 messages and clearing conversations.
//!
//! On one Redis a whole send is `chat_send`, a batch of them in one call (every key in
//! one call, whatever its slot). On a cluster the conversation and the two inboxes live
//! in different slots: `chat_conv_append`, then `chat_inbox_append` for each
//! participant. A clear is `chat_conv_clear`, then `chat_inbox_clear` for each
//! participant (any mode). This module builds the keys and arguments of each, in the
//! order their Lua names them, and parses their replies; it never calls Redis.

use bytes::Bytes;
use chat_protocol::{dm_conversation, Message, StreamId};
use fred::prelude::*;

use super::super::conn::{text, Entry};
use super::super::{inbox, keys};
use super::history_args;
use crate::{EngineError, Retention, SendRequest};

/// A batch of whole sends on a single Redis.
pub(crate) const SEND: &str = "chat_send";
/// Cluster mode: the conversation half of a send.
pub(crate) const CONV_APPEND: &str = "chat_conv_append";
/// Cluster mode: one inbox append and its publish (a message's, or a read receipt's:
/// `receipts.lua`'s cluster half ends with two of these).
pub(crate) const INBOX_APPEND: &str = "chat_inbox_append";
/// A clear: the conversation's half, then each participant's inbox (any mode).
pub(crate) const CONV_CLEAR: &str = "chat_conv_clear";
pub(crate) const INBOX_CLEAR: &str = "chat_inbox_clear";

/// The Lua file, to check it against [`SIGNATURES`].
#[cfg(test)]
pub(super) const LUA: &str = include_str!("../scripts/send.lua");

/// The keys and arguments of each function, by the names `send.lua` gives them.
#[cfg(test)]
pub(super) const SIGNATURES: &[super::Signature] = &[
    super::Signature {
        name: SEND,
        keys: "",
        args: "history_max_len history_max_age_secs now_ms inbox_max_len inbox_ttl_secs convs_max",
        each_keys: concat!(
            "msgs meta from_inbox from_head from_convs from_ch from_pres ",
            "to_inbox to_head to_convs to_ch"
        ),
        each_args: "conversation from to body sent_at nonce nonce_ttl tail trace node",
    },
    super::Signature::fixed(
        CONV_APPEND,
        "msgs meta",
        concat!(
            "history_max_len history_max_age_secs now_ms ",
            "conversation from to body sent_at nonce nonce_ttl tail"
        ),
    ),
    super::Signature::fixed(
        INBOX_APPEND,
        "inbox head convs ch pres",
        concat!(
            "event kind ref other dir body sent_at score ",
            "inbox_max_len inbox_ttl_secs window trace node convs_max"
        ),
    ),
    super::Signature::fixed(CONV_CLEAR, "msgs meta", ""),
    super::Signature::fixed(
        INBOX_CLEAR,
        "inbox head ch clr",
        "event other up_to inbox_max_len inbox_ttl_secs",
    ),
];

/// How many of an inbox's newest entries `chat_inbox_append` searches for the message
/// before appending it when the send was a nonce retry (the first attempt may have
/// appended it). A first attempt searches nothing: its appends are written once
/// (never resent by fred), so they cannot have run before.
pub(crate) const RETRY_DEDUPE_WINDOW: usize = 256;

/// Keys of one message in `chat_send` (and, first two, `chat_conv_append`).
pub(crate) const SEND_KEYS: usize = 11;
/// Arguments of one message in `chat_send` after the batch's shared ones.
pub(crate) const SEND_ARGS: usize = 10;
/// Arguments of a `chat_send` batch before the messages'.
pub(crate) const BATCH_ARGS: usize = 6;

/// The JSON of the message a request stores, after its `id` (`,"conversation":…}`):
/// serialized once by the protocol crate with an empty id, so Lua only prepends
/// `{"id":"<id>"` instead of encoding every field itself.
pub(crate) fn message_tail(req: &SendRequest) -> String {
    let message = message_of(req, String::new());
    let json = serde_json::to_string(&message).expect("a message always serializes");
    const HEAD: &str = r#"{"id":"""#;
    debug_assert!(json.starts_with(HEAD));
    json[HEAD.len()..].to_string()
}

/// One message's conversation arguments: conversation, from, to, body, sent_at,
/// nonce, nonce_ttl, tail.
fn message_args(req: &SendRequest, args: &mut Vec<String>) {
    args.extend([
        dm_conversation(&req.from, &req.to),
        req.from.clone(),
        req.to.clone(),
        req.body.clone(),
        req.sent_at.clone(),
        req.nonce.clone().unwrap_or_default(),
        req.nonce_ttl_secs.to_string(),
        message_tail(req),
    ]);
}

/// Keys and arguments of `chat_send` for a batch of requests, in order (see the
/// function's comment in `send.lua`). Each request comes with whether its sender is
/// subscribed on this node, `node` (then the sender's own event is published only for
/// their connections elsewhere). `now_ms`: this node's clock.
pub(crate) fn send_call<'a>(
    requests: impl ExactSizeIterator<Item = (&'a SendRequest, bool)>,
    node: &str,
    retention: &Retention,
    now_ms: u64,
) -> (Vec<String>, Vec<String>) {
    let n = requests.len();
    let mut keys = Vec::with_capacity(SEND_KEYS * n);
    let mut args = Vec::with_capacity(BATCH_ARGS + SEND_ARGS * n);
    args.extend(history_args(retention, now_ms));
    args.push(retention.inbox_max_len.to_string());
    args.push(retention.inbox_ttl_secs.to_string());
    args.push(retention.convs_max.to_string());
    for (req, local) in requests {
        let (from, to) = (req.from.as_str(), req.to.as_str());
        keys.extend([
            keys::conv_msgs(from, to),
            keys::conv_meta(from, to),
            keys::inbox(from),
            keys::inbox_head(from),
            keys::convs(from),
            keys::channel(from),
            keys::presence(from),
            keys::inbox(to),
            keys::inbox_head(to),
            keys::convs(to),
            keys::channel(to),
        ]);
        message_args(req, &mut args);
        args.push(trace_arg(req.trace.as_deref()));
        args.push(if local { node } else { "" }.to_string());
    }
    (keys, args)
}

/// Keys and arguments of `chat_conv_append` (cluster mode): the conversation's two
/// keys, the history options and the message.
pub(crate) fn conv_append_call(
    req: &SendRequest,
    retention: &Retention,
    now_ms: u64,
) -> (Vec<String>, Vec<String>) {
    let (from, to) = (req.from.as_str(), req.to.as_str());
    let keys = vec![keys::conv_msgs(from, to), keys::conv_meta(from, to)];
    let mut args = Vec::with_capacity(11);
    args.extend(history_args(retention, now_ms));
    message_args(req, &mut args);
    (keys, args)
}

/// What an inbox append stores (`chat_inbox_append`, cluster mode): see
/// [`super::inbox`] for the stored form.
pub(crate) enum Stored<'a> {
    /// A message; `sent`: the inbox's owner sent it.
    Message { message: &'a Message, sent: bool },
    /// A read receipt up to `up_to`; `read`: the inbox's owner read.
    Read { up_to: &'a str, read: bool },
}

/// One `chat_inbox_append` (cluster mode): `event` appended to `user`'s inbox as
/// `stored` and published, `other` being the conversation's other participant.
pub(crate) struct InboxAppend<'a> {
    pub user: &'a str,
    pub other: &'a str,
    /// The event JSON, published live.
    pub event: &'a str,
    pub stored: Stored<'a>,
    /// A message is skipped if one of the inbox's newest `window` entries already
    /// holds it (a retried send; 0: not searched).
    pub window: usize,
    pub trace: Option<&'a str>,
    /// The node that delivers to `user`'s connections itself: then the event is
    /// published only if `user` has connections on another node.
    pub node: Option<&'a str>,
}

impl InboxAppend<'_> {
    /// Keys and arguments of the call, in the order `chat_inbox_append` documents.
    pub(crate) fn call(&self, retention: &Retention) -> (Vec<String>, Vec<String>) {
        let user = self.user;
        let keys = vec![
            keys::inbox(user),
            keys::inbox_head(user),
            keys::convs(user),
            keys::channel(user),
            keys::presence(user),
        ];
        let dir = |own: bool| if own { ">" } else { "<" }.to_string();
        let (kind, reference, dir, body, sent_at, score) = match &self.stored {
            Stored::Message { message, sent } => (
                "m",
                message.id.clone(),
                dir(*sent),
                message.body.clone(),
                message.sent_at.clone(),
                StreamId::parse(&message.id).map(|id| id.ms).unwrap_or(0),
            ),
            Stored::Read { up_to, read } => (
                "r",
                up_to.to_string(),
                dir(*read),
                String::new(),
                String::new(),
                0,
            ),
        };
        let args = vec![
            self.event.to_string(),
            kind.to_string(),
            reference,
            self.other.to_string(),
            dir,
            body,
            sent_at,
            score.to_string(),
            retention.inbox_max_len.to_string(),
            retention.inbox_ttl_secs.to_string(),
            self.window.to_string(),
            trace_arg(self.trace),
            self.node.unwrap_or("").to_string(),
            retention.convs_max.to_string(),
        ];
        (keys, args)
    }
}

/// A `traceparent` as a Lua argument: `''` when absent or not a plain token (it is
/// spliced into the live payload, which is space-separated).
fn trace_arg(trace: Option<&str>) -> String {
    match trace {
        Some(t) if !t.is_empty() && t.len() <= 128 && t.bytes().all(|b| b.is_ascii_graphic()) => {
            t.to_string()
        }
        _ => String::new(),
    }
}

/// One message's part of a `chat_send` reply, or a `chat_conv_append` reply.
pub(crate) struct SendReply {
    pub duplicate: bool,
    pub message: Message,
    /// `chat_send` only, not for a duplicate: the sender's new inbox entry id and
    /// the one before it.
    pub sender_entry: Option<(StreamId, StreamId)>,
}

fn bad_reply(what: &str) -> EngineError {
    EngineError::Internal(format!("unexpected chat_send reply: {what}"))
}

/// The message a send request stores, under `id`.
fn message_of(req: &SendRequest, id: String) -> Message {
    Message {
        id,
        conversation: dm_conversation(&req.from, &req.to),
        from: req.from.clone(),
        to: req.to.clone(),
        body: req.body.clone(),
        sent_at: req.sent_at.clone(),
        room: None,
    }
}

/// The message `req` stored (or a retry of it found) with id `id`: from the stored
/// conversation entry when there is one, else from the request itself (a new
/// message, or a duplicate whose original retention trimmed: the retry carries the
/// same body).
fn stored_message(req: &SendRequest, id: String, entry: &str) -> Result<Message, EngineError> {
    if entry.is_empty() {
        return Ok(message_of(req, id));
    }
    let entry = Entry {
        id,
        fields: vec![("m".to_string(), Bytes::from(entry.to_string()))],
    };
    inbox::conversation_message(&req.from, &req.to, entry)
}

/// Parses `dup, id, entry` (the first three values of a `chat_send` message part, or
/// a `chat_conv_append` reply) into whether it was a duplicate and the message.
fn parse_stored(
    req: &SendRequest,
    parts: &mut impl Iterator<Item = Value>,
) -> Result<(bool, Message), EngineError> {
    let duplicate = match parts.next() {
        Some(Value::Integer(0)) => false,
        Some(Value::Integer(1)) => true,
        _ => return Err(bad_reply("flag")),
    };
    let id = parts.next().and_then(text).ok_or_else(|| bad_reply("id"))?;
    let entry = parts.next().and_then(text).unwrap_or_default();
    // A new message's third value is not an entry (chat_send: the sender's entry id).
    let entry = if duplicate { entry.as_str() } else { "" };
    Ok((duplicate, stored_message(req, id, entry)?))
}

/// Parses a `chat_send` reply for `requests` ([`send_call`]): 4 values per message:
/// `0`, the new message's id, the sender's new inbox entry id and the one before it;
/// or for a duplicate `1`, the stored message's id, its conversation entry (`''` if
/// trimmed), `''`. A new message is the request with its id: its JSON crosses
/// neither the Lua reply nor a JSON parser.
pub(crate) fn parse_send_reply(
    reply: Value,
    requests: &[(&SendRequest, bool)],
) -> Result<Vec<SendReply>, EngineError> {
    let Value::Array(parts) = reply else {
        return Err(bad_reply("not an array"));
    };
    if parts.len() != 4 * requests.len() {
        return Err(bad_reply("length"));
    }
    let mut parts = parts.into_iter();
    let mut out = Vec::with_capacity(requests.len());
    for (req, _) in requests {
        let mut four: Vec<Value> = parts.by_ref().take(4).collect();
        let prev = four.pop().and_then(text);
        let third = four.get(2).cloned().and_then(text);
        let (duplicate, message) = parse_stored(req, &mut four.into_iter())?;
        let sender_entry = if duplicate {
            None
        } else {
            let id = |t: Option<String>| t.and_then(|t| StreamId::parse(&t));
            id(third).zip(id(prev))
        };
        out.push(SendReply {
            duplicate,
            message,
            sender_entry,
        });
    }
    Ok(out)
}

/// Parses a `chat_conv_append` reply `{dup, id, entry}` for `req`.
pub(crate) fn parse_conv_append_reply(
    reply: Value,
    req: &SendRequest,
) -> Result<SendReply, EngineError> {
    let Value::Array(parts) = reply else {
        return Err(bad_reply("not an array"));
    };
    if parts.len() != 3 {
        return Err(bad_reply("length"));
    }
    let (duplicate, message) = parse_stored(req, &mut parts.into_iter())?;
    Ok(SendReply {
        duplicate,
        message,
        sender_entry: None,
    })
}

#[cfg(test)]
mod tests;
