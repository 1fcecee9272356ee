//! The bytes the Lua library writes where it splices an id only it knows, against
//! the protocol crate's serialization of the same event and [`super::payload`]'s
//! forms: each function runs for real on a `redis-server` (chat_testkit), and what it
//! published and stored is compared byte for byte.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::time::Duration;

use bytes::Bytes;
use chat_protocol::{Event, Message, StreamId};
use chat_testkit::RedisServer;
use fred::clients::{Client, SubscriberClient};
use fred::prelude::*;
use tokio::sync::broadcast::Receiver;

use super::functions::send::{self, InboxAppend, Stored};
use super::functions::{self, presence, receipts};
use super::payload::{self, Transition};
use super::{conn, keys};
use crate::events::now_rfc3339;
use crate::{LiveEvent, Retention, SendRequest};

struct Setup {
    _server: RedisServer,
    client: Client,
    _sub: SubscriberClient,
    rx: Receiver<fred::types::Message>,
}

/// A Redis with the library loaded, and a subscriber on the channels of `users` and
/// on the global presence channel.
async fn setup(users: &[&str]) -> Setup {
    let server = RedisServer::start();
    let builder = conn::builder(&server.url(), Duration::from_secs(3)).unwrap();
    let client = builder.build().unwrap();
    client.init().await.unwrap();
    functions::load(&client).await.unwrap();
    let sub = builder.build_subscriber_client().unwrap();
    let rx = sub.message_rx();
    sub.init().await.unwrap();
    for user in users {
        sub.ssubscribe(keys::channel(user)).await.unwrap();
    }
    sub.subscribe(keys::PRESENCE_CHANNEL).await.unwrap();
    Setup {
        _server: server,
        client,
        _sub: sub,
        rx,
    }
}

impl Setup {
    async fn fcall(&self, function: &str, keys: Vec<String>, args: Vec<String>) -> Value {
        self.client.fcall(function, keys, args).await.unwrap()
    }

    /// The next payload published, and its channel.
    async fn next(&mut self) -> (String, Bytes) {
        let message = tokio::time::timeout(Duration::from_secs(5), self.rx.recv())
            .await
            .expect("a payload within 5 s")
            .unwrap();
        (
            message.channel.to_string(),
            message.value.into_bytes().unwrap(),
        )
    }

    /// The next payload, which must be on `channel`.
    async fn next_on(&mut self, channel: &str) -> Bytes {
        let (on, payload) = self.next().await;
        assert_eq!(on, channel, "{payload:?}");
        payload
    }
}

/// The inbox event a payload carries (its id, prev and trace), checked to be the
/// payload form of exactly `event`.
fn inbox_payload(bytes: &Bytes, event: &str, trace: Option<&str>) -> (StreamId, StreamId) {
    let Some(LiveEvent::Inbox(e)) = payload::parse(bytes.clone()) else {
        panic!("not an inbox payload: {bytes:?}");
    };
    assert_eq!(
        bytes,
        payload::inbox(e.id, e.prev, trace, event).as_bytes(),
        "the payload form"
    );
    assert_eq!(e.json, event.as_bytes(), "the event bytes");
    (e.id, e.prev)
}

fn request(body: &str, trace: Option<&str>) -> SendRequest {
    SendRequest {
        from: "alice".into(),
        to: "bob".into(),
        body: body.into(),
        nonce: Some(format!("n-{body}")),
        nonce_ttl_secs: 60,
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        trace: trace.map(str::to_string),
    }
}

/// Sends one message alice → bob with `chat_send`; returns the stored message.
async fn send(s: &mut Setup, body: &str, trace: Option<&str>, local: bool) -> Message {
    let req = request(body, trace);
    let requests = [(&req, local)];
    let (keys, args) = send::send_call(
        requests.iter().copied(),
        "node-1",
        &Retention::default(),
        crate::events::now_ms(),
    );
    let reply = s.fcall(send::SEND, keys, args).await;
    let mut replies = send::parse_send_reply(reply, &requests).unwrap();
    replies.remove(0).message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_send_writes_the_protocol_message_event() {
    let mut s = setup(&["alice", "bob"]).await;
    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let body = "say \"hi\" \u{1f600}\n\t\\ </script> \u{7f}";
    let message = send(&mut s, body, Some(trace), false).await;
    assert_eq!(message.body, body);
    let event = Event::Message { message: &message }.to_json();
    let alice = s.next_on(&keys::channel("alice")).await;
    let (id, prev) = inbox_payload(&alice, &event, Some(trace));
    assert_eq!(prev, StreamId::ZERO);
    let bob = s.next_on(&keys::channel("bob")).await;
    inbox_payload(&bob, &event, Some(trace));
    // The conversation's last message, as stored in its meta hash.
    let lm: String = s
        .client
        .hget(keys::conv_meta("alice", "bob"), "lm")
        .await
        .unwrap();
    assert_eq!(lm, serde_json::to_string(&message).unwrap());

    // Without a trace; the sender delivered locally (published only for bob).
    let second = send(&mut s, "plain", None, true).await;
    let event = Event::Message { message: &second }.to_json();
    let bob = s.next_on(&keys::channel("bob")).await;
    let (_, bob_prev) = inbox_payload(&bob, &event, None);
    assert!(bob_prev > StreamId::ZERO);
    assert!(id > prev);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_inbox_append_publishes_the_event_it_was_given() {
    let mut s = setup(&["carol"]).await;
    let message = Message {
        id: "1700000000000-0".into(),
        conversation: "dm:alice:carol".into(),
        from: "alice".into(),
        to: "carol".into(),
        body: "hi there".into(),
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        room: None,
    };
    let event = Event::Message { message: &message }.to_json();
    let (keys, args) = InboxAppend {
        user: "carol",
        other: "alice",
        event: &event,
        stored: Stored::Message {
            message: &message,
            sent: false,
        },
        window: 0,
        trace: Some("00-abc-def-01"),
        node: None,
    }
    .call(&Retention::default());
    s.fcall(send::INBOX_APPEND, keys, args).await;
    let carol = s.next_on(&keys::channel("carol")).await;
    let (_, prev) = inbox_payload(&carol, &event, Some("00-abc-def-01"));
    assert_eq!(prev, StreamId::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_read_writes_the_protocol_read_event() {
    let mut s = setup(&["alice", "bob"]).await;
    let message = send(&mut s, "read me", None, false).await;
    s.next().await;
    s.next().await;
    let up_to = StreamId::parse(&message.id).unwrap();
    let (keys, args) = receipts::read_call("bob", "alice", up_to, &Retention::default());
    let reply = s.fcall(receipts::READ, keys, args).await;
    let id = receipts::parse_read_reply(reply).unwrap().unwrap();
    assert_eq!(id, message.id);
    let event = Event::Read {
        conversation: "dm:alice:bob",
        by: "bob",
        up_to: &id,
    }
    .to_json();
    let bob = s.next_on(&keys::channel("bob")).await;
    inbox_payload(&bob, &event, None);
    let alice = s.next_on(&keys::channel("alice")).await;
    inbox_payload(&alice, &event, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_functions_publish_the_protocol_presence_frames() {
    let mut s = setup(&["bob"]).await;
    // bob is alice's conversation partner.
    send(&mut s, "hello", None, false).await;
    s.next_on(&keys::channel("bob")).await;
    let channel = keys::PRESENCE_CHANNEL;

    // chat_conn_open and chat_conn_close publish the payloads they are given.
    let online = Transition::new("alice", true, None);
    let (keys, args) = presence::conn_open_call("alice", "n1", 0);
    s.fcall(presence::CONN_OPEN, keys, args).await;
    assert_eq!(s.next_on(&keys::channel("bob")).await, online.partner);
    assert_eq!(s.next_on(channel).await, online.global);

    // chat_reap_batch splices each user into the template: the same bytes as the
    // transition built here.
    let now = now_rfc3339();
    let (keys, args) = presence::reap_batch_call("n1", &now, 10, 0);
    let left = s.fcall(presence::REAP_BATCH, keys, args).await;
    assert_eq!(left.as_u64(), Some(0));
    let offline = Transition::new("alice", false, Some(&now));
    assert_eq!(s.next_on(&keys::channel("bob")).await, offline.partner);
    assert_eq!(s.next_on(channel).await, offline.global);
    let (user, frame) = payload::parse_presence(Bytes::from(offline.global)).unwrap();
    assert_eq!(user, "alice");
    assert_eq!(
        frame,
        Event::Presence {
            user: "alice",
            online: false,
            last_seen_at: Some(&now)
        }
        .to_json()
        .as_bytes()
    );
    let seen: String = s.client.hget(keys::user("alice"), "seen").await.unwrap();
    assert_eq!(seen, now);
}

/// A Redis that kept the library of earlier versions (`chat` and a separate
/// `chat_presence` holding `chat_conn_open`) still takes the one library: the old
/// presence library is deleted and the load retried, instead of a node retrying its
/// connect forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_loads_over_the_earlier_split_library() {
    let server = RedisServer::start();
    let builder = conn::builder(&server.url(), Duration::from_secs(3)).unwrap();
    let client = builder.build().unwrap();
    client.init().await.unwrap();
    let old = "#!lua name=chat_presence\n\
               redis.register_function('chat_conn_open', function(keys, args) return 1 end)\n";
    let _: Value = client.function_load::<Value, _>(true, old).await.unwrap();
    functions::load(&client).await.unwrap();
    let libraries: Value = client
        .function_list::<Value, &str>(None, false)
        .await
        .unwrap();
    let listed = format!("{libraries:?}");
    assert!(listed.contains("\"chat\""), "chat loaded: {listed}");
    assert!(
        !listed.contains("chat_presence"),
        "old library gone: {listed}"
    );
}
