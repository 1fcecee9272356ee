//! The calls `loadtest/redis-function-instructions` measures, made with this module's
//! own builders and reply parsers, so the measured arguments are the engine's.
//!
//! [`fcall_instructions_driver`] is an ignored test, run by that script only (it needs
//! a Redis the script started under callgrind, on `CHAT_BENCH_PORT`). It loads the
//! library, sends `CHAT_BENCH_MESSAGES` 1:1 messages as `FCALL chat_send` with
//! `CHAT_BENCH_BATCH` messages per call (or, with `CHAT_BENCH_ROOM_MEMBERS` set, room
//! messages as `FCALL chat_room_send` into one room of that many members), pipelined
//! 16 calls deep over one plain socket, and fails unless every reply says stored and
//! every stream afterwards holds exactly what was sent: a measurement can never count
//! work that was not done.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed unwrap is a failed run

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use chat_protocol::rooms::{MemberChange, MemberEvent};
use chat_protocol::{room_conversation, Event, Message, User};
use fred::prelude::*;

use super::super::keys;
use super::rooms::{MemberCall, RoomSend, RoomSent};
use super::{send, LIBRARY};
use crate::{Retention, SendRequest};

/// Calls written before their replies are read.
const PIPELINE: usize = 16;
/// 1:1 messages go round this many conversations, `g-aNNN` → `g-bNNN`.
const CONVERSATIONS: usize = 200;
const BODY: &str = "hello world from the benchmark 1234567890";
const SENT_AT: &str = "2026-12-04T04:00:00.000Z";
/// The node the calls come from; every sender is subscribed on it (as under load).
const NODE: &str = "n1";
/// This node's clock, fixed (no age limit is set, so it is never read).
const NOW_MS: u64 = 1_764_820_800_000;
const ROOM: &str = "bench";

/// What the streams keep: more than any run sends.
fn retention() -> Retention {
    Retention {
        history_max_len: 10_000,
        history_max_age_secs: 0,
        inbox_max_len: 10_000,
        inbox_ttl_secs: 604_800,
        ..Retention::default()
    }
}

fn env(name: &str) -> Option<usize> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

/// One RESP connection, written and read by hand: the bytes Redis sees are exactly
/// the calls, `PIPELINE` per write.
struct Conn {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let writer = TcpStream::connect(("127.0.0.1", port)).expect("the measured Redis");
        let reader = BufReader::new(writer.try_clone().unwrap());
        Conn { writer, reader }
    }

    fn write(&mut self, frames: &[Vec<u8>]) {
        self.writer.write_all(&frames.concat()).unwrap();
    }

    fn command(&mut self, parts: &[&str]) -> Value {
        self.write(&[frame(parts.iter().copied())]);
        self.reply()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "a whole reply line: {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    /// The next reply; an error reply fails the run.
    fn reply(&mut self) -> Value {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        let n = || rest.parse::<i64>().unwrap();
        match kind {
            "+" => Value::String(rest.into()),
            "-" => panic!("redis refused a call: {rest}"),
            ":" => Value::Integer(n()),
            "$" if n() < 0 => Value::Null,
            "$" => {
                let mut bytes = vec![0; n() as usize + 2];
                self.reader.read_exact(&mut bytes).unwrap();
                bytes.truncate(bytes.len() - 2);
                Value::String(String::from_utf8(bytes).unwrap().into())
            }
            "*" if n() < 0 => Value::Null,
            "*" => Value::Array((0..n()).map(|_| self.reply()).collect()),
            _ => panic!("not a RESP2 reply: {line}"),
        }
    }
}

/// A command as RESP.
fn frame<'a>(parts: impl ExactSizeIterator<Item = &'a str>) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// `FCALL function` as RESP.
fn fcall(function: &str, keys: &[String], args: &[String]) -> Vec<u8> {
    let count = keys.len().to_string();
    let head = ["FCALL", function, count.as_str()];
    let rest = keys.iter().chain(args).map(String::as_str);
    frame(head.into_iter().chain(rest).collect::<Vec<_>>().into_iter())
}

/// Sends `calls` `PIPELINE` at a time, each reply to `check` with its call's index.
fn pipelined(conn: &mut Conn, calls: &[Vec<u8>], mut check: impl FnMut(usize, Value)) {
    for (chunk, frames) in calls.chunks(PIPELINE).enumerate() {
        conn.write(frames);
        for i in 0..frames.len() {
            let reply = conn.reply();
            check(chunk * PIPELINE + i, reply);
        }
    }
}

fn xlen(conn: &mut Conn, key: &str) -> i64 {
    conn.command(&["XLEN", key]).as_i64().unwrap()
}

/// `messages` 1:1 messages, `batch` per `chat_send`; then every conversation and both
/// inboxes hold each of its messages once.
fn one_to_one(conn: &mut Conn, messages: usize, batch: usize) {
    assert!(
        batch > 0 && messages.is_multiple_of(batch),
        "{messages} messages in calls of {batch}"
    );
    let pair = |i: usize| {
        let n = i % CONVERSATIONS;
        (format!("g-a{n:03}"), format!("g-b{n:03}"))
    };
    let requests: Vec<SendRequest> = (0..messages)
        .map(|i| {
            let (from, to) = pair(i);
            SendRequest {
                from,
                to,
                body: BODY.into(),
                nonce: Some(format!("nonce-{i}")),
                nonce_ttl_secs: 86_400,
                sent_at: SENT_AT.into(),
                trace: None,
            }
        })
        .collect();
    let batches: Vec<Vec<(&SendRequest, bool)>> = requests
        .chunks(batch)
        .map(|b| b.iter().map(|r| (r, true)).collect())
        .collect();
    let calls: Vec<Vec<u8>> = batches
        .iter()
        .map(|b| {
            let (keys, args) = send::send_call(b.iter().copied(), NODE, &retention(), NOW_MS);
            fcall(send::SEND, &keys, &args)
        })
        .collect();
    pipelined(conn, &calls, |call, reply| {
        let replies = send::parse_send_reply(reply, &batches[call]).unwrap();
        assert!(
            replies
                .iter()
                .all(|r| !r.duplicate && r.sender_entry.is_some()),
            "call {call}: every message stored"
        );
    });
    for n in 0..CONVERSATIONS.min(messages) {
        let sent = (0..messages).filter(|i| i % CONVERSATIONS == n).count() as i64;
        let (a, b) = pair(n);
        assert_eq!(xlen(conn, &keys::conv_msgs(&a, &b)), sent, "{a} → {b}");
        assert_eq!(xlen(conn, &keys::inbox(&a)), sent, "{a}'s inbox");
        assert_eq!(xlen(conn, &keys::inbox(&b)), sent, "{b}'s inbox");
    }
    println!("stored {messages} messages in {} calls", calls.len());
}

/// `members` join one room, whose channel two connections subscribe (as two nodes),
/// then `messages` room messages from the members in turn; then the room's stream
/// holds every join and every message.
fn room(port: u16, conn: &mut Conn, messages: usize, members: usize) {
    let user = |i: usize| {
        let id = format!("g-m{:05}", i % members);
        User {
            name: id.clone(),
            id,
        }
    };
    let _nodes: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut node = Conn::open(port);
            node.write(&[frame(["SSUBSCRIBE", &keys::room_channel(ROOM)].into_iter())]);
            node.reply();
            node.writer
        })
        .collect();
    let joins: Vec<Vec<u8>> = (0..members)
        .map(|i| {
            let user = user(i);
            let event = MemberEvent::new(ROOM, MemberChange::Joined, &user);
            let (head, tail) = event.split_at_id();
            let call = MemberCall {
                room: ROOM,
                user: &user.id,
                head,
                tail,
                retention: &retention(),
                now_ms: NOW_MS,
            };
            let (keys, args) = call.join_call(&user.name, ROOM, members as u64 + 1);
            fcall(super::rooms::JOIN, &keys, &args)
        })
        .collect();
    pipelined(conn, &joins, |i, reply| {
        let (code, _) = super::rooms::parse_member_reply(reply).unwrap();
        assert_eq!(code, 1, "join {i}");
    });
    let sends: Vec<Vec<u8>> = (0..messages)
        .map(|i| {
            // As `RedisEngine::room_send` builds it.
            let from = user(i).id;
            let blank = Message {
                id: String::new(),
                conversation: room_conversation(ROOM),
                from: from.clone(),
                to: String::new(),
                body: BODY.into(),
                sent_at: SENT_AT.into(),
                room: Some(ROOM.into()),
            };
            let (head, tail) = Event::Message { message: &blank }.split_at_id().unwrap();
            let nonce = format!("nonce-{i}");
            let (keys, args) = RoomSend {
                room: ROOM,
                from: &from,
                nonce: &nonce,
                nonce_ttl_secs: 86_400,
                head,
                tail,
            }
            .call(&retention(), NOW_MS);
            fcall(super::rooms::SEND, &keys, &args)
        })
        .collect();
    pipelined(conn, &sends, |i, reply| {
        let sent = super::rooms::parse_send_reply(reply).unwrap();
        assert!(matches!(sent, RoomSent::Stored(_)), "message {i}: {sent:?}");
    });
    let events = xlen(conn, &keys::room_events(ROOM));
    assert_eq!(events, (members + messages) as i64, "joins and messages");
    println!("stored {messages} room messages from {members} members");
}

#[test]
#[ignore = "run by loadtest/redis-function-instructions against its Redis"]
fn fcall_instructions_driver() {
    let port = env("CHAT_BENCH_PORT").expect("CHAT_BENCH_PORT: the measured Redis") as u16;
    let messages = env("CHAT_BENCH_MESSAGES").unwrap_or(4000);
    let mut conn = Conn::open(port);
    let library = match std::env::var("CHAT_BENCH_LIBRARY") {
        Ok(path) if !path.is_empty() => std::fs::read_to_string(path).unwrap(),
        _ => LIBRARY.to_string(),
    };
    let loaded = conn.command(&["FUNCTION", "LOAD", "REPLACE", &library]);
    assert_eq!(
        loaded.as_str().as_deref(),
        Some("chat"),
        "the library loaded"
    );
    match env("CHAT_BENCH_ROOM_MEMBERS").unwrap_or(0) {
        0 => one_to_one(&mut conn, messages, env("CHAT_BENCH_BATCH").unwrap_or(1)),
        members => room(port, &mut conn, messages, members),
    }
}
