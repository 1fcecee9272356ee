//! The single Redis's messages: sends delivered and chained in both inboxes, nonces
//! (retries, trimmed originals, the nonce windows), history pages, inbox reads after
//! a cursor, and where the sender's own event is delivered. One `redis-server` per
//! test, on a free port (`common::single`).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use chat_engine::prelude::*;
use chat_engine::redis::{RedisConfig, RedisEngine};
use chat_engine::{InboxEvent, Retention};
use chat_protocol::StreamId;
use chat_testkit::{eventually, RedisServer};
use common::single::{barrier, engine, engine_with, req};
use common::{assert_chain, RecordingSink, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_stores_delivers_and_chains_inboxes() {
    let server = RedisServer::start();
    let (engine, sink) = engine(&server).await;
    assert_eq!(engine.kind(), "redis");
    assert!(engine.ready().await);
    engine.upsert_user("alice", "Alice").await.unwrap();
    engine.upsert_user("bob", "Bob").await.unwrap();
    engine.upsert_user("carol", "Carol").await.unwrap();
    engine.subscribe("alice").await.unwrap();
    engine.subscribe("carol").await.unwrap();

    let fcalls_before = server.command_calls("fcall");
    let body = "hi \"bob\" / <b>é</b> 👋";
    let m1 = engine
        .send(req("alice", "bob", body, Some("n-1")))
        .await
        .unwrap();
    assert!(!m1.duplicate);
    let m = &m1.message;
    assert_eq!(m.conversation, "dm:alice:bob");
    assert_eq!(
        (m.from.as_str(), m.to.as_str(), m.body.as_str()),
        ("alice", "bob", body)
    );
    assert_eq!(m.sent_at, "2026-01-01T00:00:00.000Z");
    let m2 = engine
        .send(req("bob", "alice", "yo", None))
        .await
        .unwrap()
        .message;
    let m3 = engine
        .send(req("alice", "bob", "3", Some("n-3")))
        .await
        .unwrap()
        .message;
    assert!(StreamId::parse(&m1.message.id).unwrap() < StreamId::parse(&m2.id).unwrap());
    assert!(StreamId::parse(&m2.id).unwrap() < StreamId::parse(&m3.id).unwrap());
    // Exactly one round trip (one FCALL) per send.
    assert_eq!(server.command_calls("fcall") - fcalls_before, 3);

    // Stored, in the documented layout.
    let (history, more) = engine.history("bob", "alice", None, 50).await.unwrap();
    assert!(!more);
    assert_eq!(history, vec![m1.message.clone(), m2.clone(), m3.clone()]);
    for key in [
        "chat:{c:alice:bob}:msgs",
        "chat:{c:alice:bob}:meta",
        "chat:{u:alice}:inbox",
        "chat:{u:alice}:head",
        "chat:{u:bob}:inbox",
        "chat:{u:alice}:convs",
        "chat:user:alice",
    ] {
        assert_eq!(
            server.command(&["EXISTS", key]).as_deref(),
            Some(":1\r\n"),
            "{key}"
        );
    }
    assert!(server
        .command(&["HGET", "chat:{c:alice:bob}:meta", "s"])
        .unwrap()
        .contains("\r\n3\r\n"));

    // Both inboxes: one event per message, prev chain from 0-0.
    for user in ["alice", "bob"] {
        let events = engine.read_inbox(user, StreamId::ZERO, 100).await.unwrap();
        assert_eq!(events.len(), 3, "{user}");
        assert_chain(&events);
        for (e, m) in events.iter().zip([&m1.message, &m2, &m3]) {
            let v: serde_json::Value = serde_json::from_slice(&e.json).unwrap();
            assert_eq!(v["type"], "message");
            let got: chat_protocol::Message = serde_json::from_value(v["message"].clone()).unwrap();
            assert_eq!(&got, m);
        }
        assert_eq!(engine.inbox_head(user).await.unwrap(), events[2].id);
    }

    // Live: alice (subscribed) got exactly her inbox, each event once; bob (not
    // subscribed) nothing. Alice's own events are handed to the sink by `send` itself,
    // so one may come ahead of bob's still on its way through pub/sub (a node orders
    // them by `prev`): compare in id order.
    barrier(&engine, &sink, "carol", "1").await;
    let stored = engine
        .read_inbox("alice", StreamId::ZERO, 100)
        .await
        .unwrap();
    let mut live: Vec<InboxEvent> = sink
        .inbox("alice")
        .iter()
        .map(|e| InboxEvent::clone(e))
        .collect();
    live.sort_by_key(|e| e.id);
    assert_eq!(live, stored);
    assert!(sink.inbox("bob").is_empty());

    // Ephemeral frames reach subscribed users only.
    engine
        .publish_ephemeral("alice", "{\"type\":\"typing\",\"from\":\"bob\"}")
        .await
        .unwrap();
    engine
        .publish_ephemeral("bob", "{\"type\":\"typing\",\"from\":\"alice\"}")
        .await
        .unwrap();
    barrier(&engine, &sink, "carol", "2").await;
    assert_eq!(
        sink.ephemeral("alice"),
        vec!["{\"type\":\"typing\",\"from\":\"bob\"}"]
    );
    assert!(sink.ephemeral("bob").is_empty());

    // After unsubscribing nothing more arrives.
    engine.unsubscribe("alice").await.unwrap();
    engine
        .send(req("bob", "alice", "after", None))
        .await
        .unwrap();
    barrier(&engine, &sink, "carol", "3").await;
    assert_eq!(sink.inbox("alice").len(), 3);
    assert_eq!(sink.resyncs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_retry_returns_the_original_and_stores_nothing() {
    let server = RedisServer::start();
    let (engine, sink) = engine(&server).await;
    engine.subscribe("alice").await.unwrap();
    let first = engine
        .send(req("alice", "bob", "once", Some("nonce-1")))
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = engine
        .send(req("alice", "bob", "once", Some("nonce-1")))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, first.message);
    // The nonce is a field of the conversation's hash of the current day (a client
    // nonce is remembered 24 h: the hash of a window of 86,400 s of Redis's clock,
    // expiring two windows after it starts), holding the message id. alice is the
    // conversation's first participant: '<'.
    let keys = server
        .command(&["KEYS", "chat:{c:alice:bob}:n:86400:*"])
        .unwrap();
    let key = keys
        .lines()
        .find(|l| l.starts_with("chat:"))
        .expect("one nonce hash")
        .to_string();
    let window: u64 = key.rsplit(':').next().unwrap().parse().unwrap();
    let stored = server.command(&["HGET", &key, "<nonce-1"]).unwrap();
    assert!(
        stored.ends_with(&format!("\r\n{}\r\n", first.message.id)),
        "{stored:?}"
    );
    let expire_at = server.command(&["EXPIRETIME", &key]).unwrap();
    assert_eq!(expire_at, format!(":{}\r\n", (window + 2) * 86_400));
    // Same nonce from the other participant is a different send.
    let other = engine
        .send(req("bob", "alice", "mine", Some("nonce-1")))
        .await
        .unwrap();
    assert!(!other.duplicate);

    let (history, _) = engine.history("alice", "bob", None, 10).await.unwrap();
    assert_eq!(history, vec![first.message.clone(), other.message.clone()]);
    for user in ["alice", "bob"] {
        let events = engine.read_inbox(user, StreamId::ZERO, 10).await.unwrap();
        assert_eq!(events.len(), 2, "{user}");
        assert_chain(&events);
    }
    barrier(&engine, &sink, "alice", "x").await;
    assert_eq!(sink.inbox("alice").len(), 2);
}

/// A retry whose original was trimmed from the history by retention is still
/// recognised: same id, nothing stored again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_retry_after_the_original_was_trimmed() {
    let server = RedisServer::start();
    let retention = Retention {
        history_max_len: 10,
        history_max_age_secs: 0,
        inbox_max_len: 0,
        inbox_ttl_secs: 0,
        ..Retention::default()
    };
    let (engine, _sink) = engine_with(&server, retention, 1, 3000).await;
    let first = engine
        .send(req("alice", "bob", "the original", Some("early")))
        .await
        .unwrap();
    for i in 0..300 {
        engine
            .send(req("bob", "alice", &format!("{i}"), None))
            .await
            .unwrap();
    }
    let (history, _) = engine.history("alice", "bob", None, 1000).await.unwrap();
    assert!(
        history.iter().all(|m| m.id != first.message.id),
        "the original is trimmed"
    );
    let retry = engine
        .send(req("alice", "bob", "the original", Some("early")))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message.id, first.message.id);
    assert_eq!(retry.message.body, "the original");
    assert_eq!(retry.message.conversation, first.message.conversation);
    let inbox = engine
        .read_inbox("alice", StreamId::ZERO, 1000)
        .await
        .unwrap();
    assert_eq!(inbox.len(), 301, "nothing appended for the retry");
}

/// Redis's clock in seconds (`TIME`).
fn redis_now(server: &RedisServer) -> u64 {
    let reply = server.command(&["TIME"]).unwrap();
    reply
        .lines()
        .find(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits until Redis's clock is in window `w` (of `ttl` seconds) or later.
async fn until_window(server: &RedisServer, ttl: u64, w: u64) {
    while redis_now(server) / ttl < w {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A nonce is kept in its window's hash and found from the next window too (at least
/// `ttl` seconds), then forgotten with its hash (less than 2 * `ttl`): no key per
/// message, nothing left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonce_windows_remember_at_least_the_ttl() {
    let server = RedisServer::start();
    let (engine, _sink) = engine(&server).await;
    let ttl = 2u64;
    let send = |nonce: &str| {
        let mut r = req("alice", "bob", "hi", Some(nonce));
        r.nonce_ttl_secs = ttl;
        engine.send(r)
    };
    let first = send("a").await.unwrap();
    assert!(!first.duplicate);
    let w0 = redis_now(&server) / ttl;
    let hash = |w: u64| format!("chat:{{c:alice:bob}}:n:{ttl}:{w}");
    // Sent in w0 or (if the window turned in between) w0 - 1 or w0: look in both.
    let in_window = |w: u64| {
        server
            .command(&["HGET", &hash(w), "<a"])
            .is_some_and(|r| r.contains(&first.message.id))
    };
    assert!(in_window(w0) || in_window(w0 - 1));

    until_window(&server, ttl, w0 + 1).await;
    let retry = send("a").await.unwrap();
    assert!(retry.duplicate, "found in the previous window's hash");
    assert_eq!(retry.message, first.message);
    let b = send("b").await.unwrap();
    assert!(!b.duplicate);
    assert!(
        send("b").await.unwrap().duplicate,
        "found in the current window's hash"
    );

    until_window(&server, ttl, w0 + 3).await;
    assert_eq!(
        server.command(&["EXISTS", &hash(w0)]).as_deref(),
        Some(":0\r\n"),
        "a window's hash expires two windows after it starts"
    );
    let late = send("a").await.unwrap();
    assert!(!late.duplicate, "forgotten after two windows");
    assert_ne!(late.message.id, first.message.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_over_250_messages() {
    let server = RedisServer::start();
    let (engine, _sink) = engine(&server).await;
    assert_eq!(
        engine.history("a", "b", None, 10).await.unwrap(),
        (vec![], false)
    );
    let mut sent = Vec::new();
    for i in 0..250 {
        let (from, to) = if i % 2 == 0 { ("a", "b") } else { ("b", "a") };
        sent.push(
            engine
                .send(req(from, to, &format!("m{i}"), None))
                .await
                .unwrap()
                .message,
        );
    }
    let mut all = Vec::new();
    let mut before = None;
    let mut pages = Vec::new();
    loop {
        let (page, more) = engine.history("b", "a", before, 100).await.unwrap();
        pages.push((page.len(), more));
        let ids: Vec<StreamId> = page
            .iter()
            .map(|m| StreamId::parse(&m.id).unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending");
        before = ids.first().copied();
        let mut page = page;
        page.extend(all);
        all = page;
        if !more {
            break;
        }
    }
    assert_eq!(pages, vec![(100, true), (100, true), (50, false)]);
    assert_eq!(all, sent);
    // A page ending exactly at the oldest message has no more.
    let (page, more) = engine
        .history("a", "b", StreamId::parse(&sent[3].id), 3)
        .await
        .unwrap();
    assert_eq!(page, sent[..3].to_vec());
    assert!(!more);
    let (page, more) = engine.history("a", "b", None, 1).await.unwrap();
    assert_eq!(page, vec![sent[249].clone()]);
    assert!(more);

    engine.clear_conversation("b", "a").await.unwrap();
    assert_eq!(
        engine.history("a", "b", None, 10).await.unwrap(),
        (vec![], false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_inbox_after_a_cursor() {
    let server = RedisServer::start();
    let (engine, _sink) = engine(&server).await;
    assert_eq!(engine.inbox_head("nobody").await.unwrap(), StreamId::ZERO);
    assert!(engine
        .read_inbox("nobody", StreamId::ZERO, 10)
        .await
        .unwrap()
        .is_empty());
    for i in 0..5 {
        engine
            .send(req("bob", "alice", &format!("{i}"), None))
            .await
            .unwrap();
    }
    let all = engine
        .read_inbox("alice", StreamId::ZERO, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    assert_chain(&all);
    let after = engine.read_inbox("alice", all[1].id, 2).await.unwrap();
    assert_eq!(after, all[2..4].to_vec());
    assert_eq!(after[0].prev, all[1].id);
    assert!(engine
        .read_inbox("alice", all[4].id, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(engine.inbox_head("alice").await.unwrap(), all[4].id);
}

/// A send whose sender is subscribed on the sending node hands the sender's own event
/// to the sink itself, before `send` returns; Redis publishes that event only while
/// the sender has connections on another node (the recipient's always is). A sender
/// not subscribed here (an API send) has it published as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_event_is_delivered_here_and_published_only_for_connections_elsewhere() {
    let server = RedisServer::start();
    let (engine, sink) = engine(&server).await;
    assert_eq!(engine.node_id(), "node-1");
    for user in ["alice", "bob", "carol"] {
        engine.subscribe(user).await.unwrap();
    }
    engine.connection_opened("alice", "node-1").await.unwrap();
    let send = |body: &str| req("alice", "bob", body, None);

    // Only on node-1: delivered here before `send` returned, not published.
    engine.send(send("one")).await.unwrap();
    let own = sink.inbox("alice");
    assert_eq!(own.len(), 1, "delivered before send returned");
    assert_eq!(own[0].trace, None);
    let stored = engine
        .read_inbox("alice", StreamId::ZERO, 10)
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!((own[0].id, own[0].prev), (stored[0].id, StreamId::ZERO));
    assert_eq!(own[0].json, stored[0].json);
    assert_eq!(own[0].frame(), stored[0].frame());
    barrier(&engine, &sink, "carol", "1").await;
    assert_eq!(sink.inbox("alice").len(), 1, "not published for alice");
    assert_eq!(sink.inbox("bob").len(), 1, "always published for bob");

    // A connection on node-2 as well: delivered here and published (for node-2), so
    // this node's subscription sees it a second time.
    engine.connection_opened("alice", "node-2").await.unwrap();
    engine.send(send("two")).await.unwrap();
    barrier(&engine, &sink, "carol", "2").await;
    let got = sink.inbox("alice");
    assert_eq!(got.len(), 3);
    assert_eq!((got[1].id, got[1].prev), (got[2].id, got[2].prev));
    assert_eq!(got[1].prev, own[0].id);

    // node-2's connection gone again: back to not publishing.
    engine.connection_closed("alice", "node-2").await.unwrap();
    engine.send(send("three")).await.unwrap();
    barrier(&engine, &sink, "carol", "3").await;
    assert_eq!(sink.inbox("alice").len(), 4);
    assert_eq!(sink.inbox("bob").len(), 3);

    // A retried send (same nonce) delivers nothing new.
    let with_nonce = req("alice", "bob", "four", Some("n-1"));
    assert!(!engine.send(with_nonce.clone()).await.unwrap().duplicate);
    assert_eq!(sink.inbox("alice").len(), 5);
    assert!(engine.send(with_nonce).await.unwrap().duplicate);
    barrier(&engine, &sink, "carol", "4").await;
    assert_eq!(sink.inbox("alice").len(), 5);

    // Not subscribed here: published as usual, so another node subscribed to alice
    // gets it even though alice's presence is only on node-1.
    let other_sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url: server.url(),
        node_id: "node-2".into(),
        ..RedisConfig::default()
    };
    let other = RedisEngine::connect(config, other_sink.clone())
        .await
        .unwrap();
    other.subscribe("alice").await.unwrap();
    engine.unsubscribe("alice").await.unwrap();
    engine.send(send("five")).await.unwrap();
    eventually("published for alice", WAIT, || {
        let got = other_sink.inbox("alice");
        async move { (got.len() == 1).then_some(got) }
    })
    .await;
    assert_eq!(sink.inbox("alice").len(), 5, "not delivered here");
}
