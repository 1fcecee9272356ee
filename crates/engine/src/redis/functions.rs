//! The `chat` Redis Function library and how the engine calls it.
//!
//! The library is assembled from one file per concern, concatenated in this order
//! under one `#!lua name=chat` header: `scripts/inbox.lua` (inbox appends and their
//! publish), `scripts/send.lua` (messages), `scripts/receipts.lua` (read markers) and
//! `scripts/presence.lua` (connection counts, heartbeats, reaping). It is loaded with
//! `FUNCTION LOAD REPLACE` when the engine connects, and again whenever a call fails
//! with "Function not found" (a restarted Redis without persistence has lost it).
//! Functions, unlike the `EVALSHA` script cache, survive restarts with persistence
//! and failovers. This file builds the keys and arguments of each function in the
//! order documented at the top of each function in the Lua files, and parses their
//! replies (each function replies with a fixed number of values).

use bytes::Bytes;
use chat_protocol::{dm_conversation, Event, Message, StreamId};
use fred::prelude::*;

use super::conn::{map_err, text, Entry};
use super::{inbox, keys};
use crate::{EngineError, Retention, SendRequest};

/// The Lua source of the library.
pub(crate) const LIBRARY: &str = concat!(
    "#!lua name=chat\n",
    include_str!("scripts/inbox.lua"),
    "\n",
    include_str!("scripts/send.lua"),
    "\n",
    include_str!("scripts/receipts.lua"),
    "\n",
    include_str!("scripts/presence.lua"),
    "\n",
    include_str!("scripts/rooms.lua"),
);

/// The function doing a whole send on a single Redis.
pub(crate) const SEND: &str = "chat_send";
/// Moves a read marker and tells both participants.
pub(crate) const READ: &str = "chat_read";
/// Presence: a connection opened / closed, a node heartbeat, a dead node's cleanup.
pub(crate) const CONN_OPEN: &str = "chat_conn_open";
pub(crate) const CONN_CLOSE: &str = "chat_conn_close";
pub(crate) const CONN_DROP: &str = "chat_conn_drop";
pub(crate) const HEARTBEAT: &str = "chat_heartbeat";
pub(crate) const REAP_BATCH: &str = "chat_reap_batch";

/// Cluster mode: the conversation half of a send.
pub(crate) const CONV_APPEND: &str = "chat_conv_append";
/// Cluster mode: one inbox append and its publish.
pub(crate) const INBOX_APPEND: &str = "chat_inbox_append";
/// A clear: the conversation's half, then each participant's inbox (any mode).
pub(crate) const CONV_CLEAR: &str = "chat_conv_clear";
pub(crate) const INBOX_CLEAR: &str = "chat_inbox_clear";
/// Cluster mode: the conversation half of a read receipt.
pub(crate) const READ_MARKER: &str = "chat_read_marker";
/// Cluster mode: the user-slot halves of the presence calls.
pub(crate) const PRES_OPEN: &str = "chat_pres_open";
pub(crate) const PRES_CLOSE: &str = "chat_pres_close";
pub(crate) const PRES_DROP: &str = "chat_pres_drop";

/// How many of an inbox's newest entries `chat_inbox_append` searches for the message
/// before appending it when the send was a nonce retry (the first attempt may have
/// appended it). A first attempt searches nothing: its appends are written once
/// (never resent by fred), so they cannot have run before.
pub(crate) const RETRY_DEDUPE_WINDOW: usize = 256;

/// Loads (or replaces) the library; on Redis Cluster on every primary (fred's
/// `FUNCTION LOAD` to each primary node).
///
/// A Redis that kept its data from before the library was one (`chat` and
/// `chat_presence`) refuses the load because `chat_presence`'s functions already exist:
/// that library is then deleted and the load retried.
pub(crate) async fn load<C: FunctionInterface + Sync>(client: &C) -> Result<(), EngineError> {
    match client
        .function_load_cluster::<Value, _>(true, LIBRARY)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if super::conn::is_function_name_taken(&e) => {
            let _ = client.function_delete_cluster(OLD_LIBRARY).await;
            let _: Value = client
                .function_load_cluster(true, LIBRARY)
                .await
                .map_err(map_err)?;
            Ok(())
        }
        Err(e) => Err(map_err(e)),
    }
}

/// The presence library of earlier versions, now part of `chat`.
const OLD_LIBRARY: &str = "chat_presence";

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
    let message = Message {
        id: String::new(),
        conversation: dm_conversation(&req.from, &req.to),
        from: req.from.clone(),
        to: req.to.clone(),
        body: req.body.clone(),
        sent_at: req.sent_at.clone(),
        room: None,
    };
    let json = serde_json::to_string(&message).expect("a message always serializes");
    const HEAD: &str = r#"{"id":"""#;
    debug_assert!(json.starts_with(HEAD));
    json[HEAD.len()..].to_string()
}

/// The history options every send shares (room events too, `rooms.lua`):
/// `history_max_len`, `history_max_age_secs`, `now_ms`.
pub(crate) fn history_args(retention: &Retention, now_ms: u64) -> [String; 3] {
    [
        retention.history_max_len.to_string(),
        retention.history_max_age_secs.to_string(),
        now_ms.to_string(),
    ]
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

/// Keys and arguments of `chat_read` (single Redis): the read event is passed as
/// the bytes around its `up_to` id, which only the function knows.
pub(crate) fn read_call(
    reader: &str,
    peer: &str,
    up_to: StreamId,
    retention: &Retention,
) -> (Vec<String>, Vec<String>) {
    let keys = vec![
        keys::conv_msgs(reader, peer),
        keys::conv_meta(reader, peer),
        keys::inbox(reader),
        keys::inbox_head(reader),
        keys::channel(reader),
        keys::inbox(peer),
        keys::inbox_head(peer),
        keys::channel(peer),
    ];
    let conversation = dm_conversation(reader, peer);
    let (head, tail) = Event::Read {
        conversation: &conversation,
        by: reader,
        up_to: "",
    }
    .split_at_id()
    .expect("a read event with a blank up_to splits");
    let args = vec![
        reader.to_string(),
        peer.to_string(),
        up_to.to_string(),
        retention.inbox_max_len.to_string(),
        retention.inbox_ttl_secs.to_string(),
        head,
        tail,
    ];
    (keys, args)
}

/// Parses the reply of `chat_read` or `chat_read_marker`: `{1, id}` when the marker
/// moved to `id`, `{0, ''}` when nothing moved.
pub(crate) fn parse_read_reply(reply: Value) -> Result<Option<String>, EngineError> {
    let bad = || EngineError::Internal("unexpected chat_read reply".into());
    let Value::Array(parts) = reply else {
        return Err(bad());
    };
    let [moved, id] = <[Value; 2]>::try_from(parts).map_err(|_| bad())?;
    match moved {
        Value::Integer(1) => text(id).map(Some).ok_or_else(bad),
        Value::Integer(0) => Ok(None),
        _ => Err(bad()),
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

/// The message `req` stored (or a retry of it found) with id `id`: from the stored
/// conversation entry when there is one, else from the request itself (a new
/// message, or a duplicate whose original retention trimmed: the retry carries the
/// same body).
fn stored_message(req: &SendRequest, id: String, entry: &str) -> Result<Message, EngineError> {
    if entry.is_empty() {
        return Ok(Message {
            id,
            conversation: dm_conversation(&req.from, &req.to),
            from: req.from.clone(),
            to: req.to.clone(),
            body: req.body.clone(),
            sent_at: req.sent_at.clone(),
            room: None,
        });
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
            trace: None,
        };
        let two = [req.clone(), req.clone()];
        let (keys, args) = send_call(
            [(&two[0], false), (&two[1], true)].into_iter(),
            "n1",
            &Retention::default(),
            7,
        );
        assert_eq!(keys.len(), 2 * SEND_KEYS);
        assert_eq!(args.len(), BATCH_ARGS + 2 * SEND_ARGS);
        assert_eq!(keys[6], keys::presence("bob"));
        assert_eq!(keys[SEND_KEYS + 6], keys::presence("bob"));
        let slot = |k: &str| fred::util::redis_keyslot(k.as_bytes());
        assert_eq!(slot(&keys[0]), slot(&keys[1]));
        for user_keys in [&keys[2..7], &keys[7..11]] {
            assert!(user_keys.iter().all(|k| slot(k) == slot(&user_keys[0])));
        }
        assert_eq!(args[2], "7");
        let first = &args[BATCH_ARGS..BATCH_ARGS + SEND_ARGS];
        assert_eq!(first[0], "dm:alice:bob");
        assert_eq!(first[5], "");
        assert_eq!(first[8], "");
        assert_eq!(first[9], "", "the sender is not subscribed here");
        assert_eq!(
            args[BATCH_ARGS + SEND_ARGS + 9],
            "n1",
            "the sender is local"
        );
    }

    #[test]
    fn send_replies_rebuild_new_messages_and_parse_duplicates() {
        let req = |nonce: &str| SendRequest {
            from: "bob".into(),
            to: "alice".into(),
            body: "hi \"there\"".into(),
            nonce: Some(nonce.into()),
            nonce_ttl_secs: 60,
            sent_at: "2026-01-01T00:00:00.000Z".into(),
            trace: None,
        };
        let (new, retry) = (req("n1"), req("n0"));
        let requests = [(&new, true), (&retry, true)];
        let stored = Message {
            id: "3-0".into(),
            conversation: "dm:alice:bob".into(),
            from: "bob".into(),
            to: "alice".into(),
            body: "earlier".into(),
            sent_at: "2025-12-31T00:00:00.000Z".into(),
            room: None,
        };
        let s = |t: &str| Value::String(t.into());
        let reply = Value::Array(vec![
            Value::Integer(0),
            s("5-1"),
            s("9-0"),
            s("8-0"),
            Value::Integer(1),
            s("3-0"),
            s("7 bob 2025-12-31T00:00:00.000Z earlier"),
            s(""),
        ]);
        let out = parse_send_reply(reply, &requests).unwrap();
        let expected = Message {
            id: "5-1".into(),
            body: new.body.clone(),
            sent_at: new.sent_at.clone(),
            ..stored.clone()
        };
        assert!(!out[0].duplicate);
        assert_eq!(out[0].message, expected);
        assert_eq!(
            out[0].sender_entry,
            Some((
                StreamId::parse("9-0").unwrap(),
                StreamId::parse("8-0").unwrap()
            ))
        );
        assert!(out[1].duplicate);
        assert_eq!(out[1].message, stored);
        assert_eq!(out[1].sender_entry, None);
        assert!(parse_send_reply(Value::Array(vec![]), &requests).is_err());
        // A duplicate whose original was trimmed: rebuilt from the retried request.
        let trimmed = Value::Array(vec![Value::Integer(1), s("3-0"), s(""), s("")]);
        let out = parse_send_reply(trimmed, &requests[1..]).unwrap();
        assert!(out[0].duplicate);
        assert_eq!(
            out[0].message,
            Message {
                id: "3-0".into(),
                body: retry.body.clone(),
                sent_at: retry.sent_at.clone(),
                ..stored.clone()
            }
        );
        let conv = Value::Array(vec![Value::Integer(0), s("4-0"), s("")]);
        let out = parse_conv_append_reply(conv, &new).unwrap();
        assert_eq!((out.duplicate, out.message.id.as_str()), (false, "4-0"));
        assert_eq!(out.message.body, new.body);
        assert!(parse_conv_append_reply(Value::Array(vec![]), &new).is_err());
    }

    #[test]
    fn read_calls_pass_the_event_around_its_id() {
        let up_to = StreamId::parse("5-1").unwrap();
        let (keys, args) = read_call("bob", "alice", up_to, &Retention::default());
        assert_eq!(keys.len(), 8);
        assert_eq!(&args[..3], ["bob", "alice", "5-1"]);
        let event = Event::Read {
            conversation: "dm:alice:bob",
            by: "bob",
            up_to: "7-0",
        };
        assert_eq!(format!("{}7-0{}", args[5], args[6]), event.to_json());
        let s = |t: &str| Value::String(t.into());
        let moved = Value::Array(vec![Value::Integer(1), s("7-0")]);
        assert_eq!(parse_read_reply(moved).unwrap().as_deref(), Some("7-0"));
        let still = Value::Array(vec![Value::Integer(0), s("")]);
        assert_eq!(parse_read_reply(still).unwrap(), None);
        assert!(parse_read_reply(Value::Null).is_err());
    }

    #[test]
    fn message_tail_is_the_protocol_json_after_the_id() {
        let req = SendRequest {
            from: "bob".into(),
            to: "alice".into(),
            body: "say \"hi\" \u{1f600}\n".into(),
            nonce: None,
            nonce_ttl_secs: 60,
            sent_at: "2026-01-01T00:00:00.000Z".into(),
            trace: None,
        };
        let message = Message {
            id: "1733212312000-3".into(),
            conversation: dm_conversation("bob", "alice"),
            from: "bob".into(),
            to: "alice".into(),
            body: req.body.clone(),
            sent_at: req.sent_at.clone(),
            room: None,
        };
        // What send.lua's message_from_tail builds.
        let built = format!(r#"{{"id":"{}"{}"#, message.id, message_tail(&req));
        assert_eq!(built, serde_json::to_string(&message).unwrap());
    }

    #[test]
    fn cluster_calls_are_slot_local() {
        let slot = |k: &str| fred::util::redis_keyslot(k.as_bytes());
        let req = SendRequest {
            from: "bob".into(),
            to: "alice".into(),
            body: "hi".into(),
            nonce: Some("n".into()),
            nonce_ttl_secs: 60,
            sent_at: "2026-01-01T00:00:00.000Z".into(),
            trace: None,
        };
        let (keys, args) = conv_append_call(&req, &Retention::default(), 7);
        assert_eq!((keys.len(), args.len()), (2, 11));
        assert!(keys.iter().all(|k| slot(k) == slot(&keys[0])));
        let message = Message {
            id: "1-0".into(),
            conversation: "dm:alice:bob".into(),
            from: "bob".into(),
            to: "alice".into(),
            body: "hi".into(),
            sent_at: "t".into(),
            room: None,
        };
        let (keys, args) = InboxAppend {
            user: "bob",
            other: "alice",
            event: "{}",
            stored: Stored::Message {
                message: &message,
                sent: true,
            },
            window: 16,
            trace: None,
            node: Some("n1"),
        }
        .call(&Retention::default());
        assert_eq!((keys.len(), args.len()), (5, 14));
        assert_eq!(&args[1..5], ["m", "1-0", "alice", ">"]);
        assert_eq!(args[13], Retention::default().convs_max.to_string());
        assert_eq!(args[7], "1");
        assert_eq!((args[10].as_str(), args[12].as_str()), ("16", "n1"));
        assert!(keys.iter().all(|k| slot(k) == slot(&keys[0])));
    }

    #[test]
    fn library_declares_every_function() {
        assert!(LIBRARY.starts_with("#!lua name=chat\n"));
        assert_eq!(LIBRARY.matches("#!lua").count(), 1, "one library");
        for f in [
            SEND,
            CONV_APPEND,
            INBOX_APPEND,
            READ,
            READ_MARKER,
            CONN_OPEN,
            CONN_CLOSE,
            CONN_DROP,
            HEARTBEAT,
            REAP_BATCH,
            PRES_OPEN,
            PRES_CLOSE,
            PRES_DROP,
            CONV_CLEAR,
            INBOX_CLEAR,
        ] {
            assert!(LIBRARY.contains(&format!("register_function('{f}'")), "{f}");
        }
    }
}
