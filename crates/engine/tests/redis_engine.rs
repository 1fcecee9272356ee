//! The Redis engine against a real `redis-server` (one per test, on a free port).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_engine::prelude::*;
use chat_engine::redis::{RedisConfig, RedisEngine};
use chat_engine::testing::RecordingSink;
use chat_engine::{EngineError, InboxEvent, Retention, SendRequest};
use chat_protocol::StreamId;
use chat_testkit::{eventually, RedisServer};

const WAIT: Duration = Duration::from_secs(10);

async fn engine_with(
    server: &RedisServer,
    retention: Retention,
    subscribers: usize,
    timeout_ms: u64,
) -> (Arc<RedisEngine>, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url: server.url(),
        retention,
        subscribers,
        command_timeout_ms: timeout_ms,
        node_id: "node-1".into(),
    };
    let engine = RedisEngine::connect(config, sink.clone())
        .await
        .expect("connect");
    (engine, sink)
}

async fn engine(server: &RedisServer) -> (Arc<RedisEngine>, Arc<RecordingSink>) {
    engine_with(server, Retention::default(), 1, 3000).await
}

fn req(from: &str, to: &str, body: &str, nonce: Option<&str>) -> SendRequest {
    SendRequest {
        from: from.into(),
        to: to.into(),
        body: body.into(),
        nonce: nonce.map(str::to_string),
        nonce_ttl_secs: 86_400,
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        trace: None,
    }
}

/// Publishes an ephemeral marker to `user` and waits until it arrives: everything
/// published before it on the same subscriber connection has been delivered.
async fn barrier(engine: &RedisEngine, sink: &RecordingSink, user: &str, tag: &str) {
    let marker = format!("{{\"type\":\"barrier\",\"tag\":\"{tag}\"}}");
    engine.publish_ephemeral(user, &marker).await.unwrap();
    eventually("barrier delivered", WAIT, || {
        let got = sink.ephemeral(user).contains(&marker);
        async move { got.then_some(()) }
    })
    .await;
}

fn assert_chain(events: &[InboxEvent]) {
    let mut prev = StreamId::ZERO;
    for e in events {
        assert_eq!(e.prev, prev, "prev chain");
        assert!(e.id > prev);
        prev = e.id;
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_inboxes_and_history() {
    let server = RedisServer::start();
    let retention = Retention {
        history_max_len: 10,
        history_max_age_secs: 0,
        inbox_max_len: 10,
        inbox_ttl_secs: 3600,
        ..Retention::default()
    };
    let (engine, _sink) = engine_with(&server, retention, 1, 3000).await;
    engine
        .send(req("alice", "bob", "first", None))
        .await
        .unwrap();
    let cursor = engine.read_inbox("alice", StreamId::ZERO, 1).await.unwrap()[0].id;
    for i in 0..300 {
        engine
            .send(req("alice", "bob", &format!("{i}"), None))
            .await
            .unwrap();
    }
    let oldest = engine.read_inbox("alice", StreamId::ZERO, 1).await.unwrap();
    assert_ne!(oldest[0].prev, cursor, "the cursor's successor was trimmed");
    let after = engine.read_inbox("alice", cursor, 1).await.unwrap();
    assert_ne!(after[0].prev, cursor);
    let kept = engine
        .read_inbox("alice", StreamId::ZERO, 1000)
        .await
        .unwrap();
    assert!(
        kept.len() < 200,
        "inbox trimmed to about 10, kept {}",
        kept.len()
    );
    let (history, more) = engine.history("alice", "bob", None, 1000).await.unwrap();
    assert!(
        history.len() < 200 && !more,
        "history trimmed, kept {}",
        history.len()
    );
    assert_eq!(history.last().unwrap().body, "299");
    let ttl = server.command(&["TTL", "chat:{u:alice}:inbox"]).unwrap();
    assert!(
        ttl.starts_with(":3") || ttl.starts_with(":35"),
        "inbox ttl {ttl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_create_resume_slide_and_revoke() {
    let server = RedisServer::start();
    let (engine, _sink) = engine(&server).await;
    engine.upsert_user("alice", "Alice").await.unwrap();
    let s = engine.create_session("alice", None, 2).await.unwrap();
    assert_eq!(s.len(), 64);
    assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
    let user = engine.resume_session(&s, 2).await.unwrap().unwrap().user;
    assert_eq!((user.id.as_str(), user.name.as_str()), ("alice", "Alice"));
    assert!(engine.resume_session("unknown", 2).await.unwrap().is_none());

    // The expiry slides: 2.4 s after creation the session still works.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(engine.resume_session(&s, 2).await.unwrap().is_some());
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(engine.resume_session(&s, 2).await.unwrap().is_none());

    // Revoke every session of a user.
    let s1 = engine.create_session("alice", None, 60).await.unwrap();
    let s2 = engine.create_session("alice", None, 60).await.unwrap();
    let sb = engine.create_session("bob-less", None, 60).await.unwrap();
    assert!(engine.resume_session(&s1, 60).await.unwrap().is_some());
    engine.revoke_sessions("alice").await.unwrap();
    assert!(engine.resume_session(&s1, 60).await.unwrap().is_none());
    assert!(engine.resume_session(&s2, 60).await.unwrap().is_none());
    // A session whose user hash is gone is unknown.
    assert!(engine.resume_session(&sb, 60).await.unwrap().is_none());
    engine.revoke_sessions("nobody").await.unwrap();
}

/// A session key holding a bare user id (written before sessions kept the `rooms`
/// claim) still resumes, with no claim; a value whose claim part is unreadable is
/// an unknown session, never one without a restriction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_written_before_the_rooms_claim_still_resume() {
    let server = RedisServer::start();
    let (engine, _sink) = engine(&server).await;
    engine.upsert_user("old-timer", "Old").await.unwrap();
    let old = "0123456789abcdef".repeat(4);
    let key = format!("chat:sess:{old}");
    assert_eq!(
        server
            .command(&["SET", &key, "old-timer", "EX", "60"])
            .as_deref(),
        Some("+OK\r\n")
    );
    let session = engine.resume_session(&old, 60).await.unwrap().unwrap();
    assert_eq!(session.user.id, "old-timer");
    assert_eq!(session.user.name, "Old");
    assert_eq!(session.rooms, None, "an old session has no claim");
    // The resume slid its expiry and left the value as it was.
    let ttl = server.command(&["TTL", &key]).unwrap();
    assert!(ttl.starts_with(":6") || ttl.starts_with(":5"), "ttl {ttl}");
    assert_eq!(
        server.command(&["GET", &key]).as_deref(),
        Some("$9\r\nold-timer\r\n")
    );
    // What a new session with a claim stores, byte for byte.
    let claimed = engine
        .create_session("old-timer", Some(&["lobby".to_string()]), 60)
        .await
        .unwrap();
    let value = server
        .command(&["GET", &format!("chat:sess:{claimed}")])
        .unwrap();
    assert!(value.ends_with("old-timer [\"lobby\"]\r\n"), "{value}");
    // A corrupt claim part fails closed.
    server.command(&["SET", &key, "old-timer [lobby", "EX", "60"]);
    assert!(engine.resume_session(&old, 60).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_and_guests() {
    let server = RedisServer::start();
    let (engine, _sink) = engine(&server).await;
    assert!(engine.get_user("alice").await.unwrap().is_none());
    assert!(!engine.upsert_user("alice", "Alice").await.unwrap());
    assert!(engine.upsert_user("alice", "Alice B").await.unwrap());
    assert_eq!(
        engine.get_user("alice").await.unwrap().unwrap().name,
        "Alice B"
    );
    let guest = engine.create_guest("Zoë").await.unwrap();
    assert!(guest.id.starts_with("g-"));
    assert_eq!(guest.id.len(), 22);
    assert!(guest.id[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(chat_protocol::valid_user_id(&guest.id));
    assert_eq!(
        engine.get_user(&guest.id).await.unwrap(),
        Some(guest.clone())
    );
    assert_ne!(engine.create_guest("Zoë").await.unwrap().id, guest.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_redis_restart() {
    let mut server = RedisServer::start();
    let (engine, sink) = engine_with(&server, Retention::default(), 2, 1000).await;
    engine.subscribe("alice").await.unwrap();
    engine.subscribe("bob").await.unwrap();
    engine
        .send(req("bob", "alice", "before", Some("b-1")))
        .await
        .unwrap();
    eventually("live event before restart", WAIT, || {
        let n = sink.inbox("alice").len();
        async move { (n == 1).then_some(()) }
    })
    .await;

    server.kill();
    let started = Instant::now();
    let err = engine
        .send(req("bob", "alice", "down", Some("b-2")))
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Unavailable(_)), "{err:?}");
    eprintln!(
        "send while redis is down failed after {:?}: {err}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert!(!engine.ready().await);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(
        engine.history("a", "b", None, 10).await,
        Err(EngineError::Unavailable(_))
    ));

    // The restarted server lost everything, the function library included.
    server.restart();
    let sent = eventually("send works after restart", Duration::from_secs(20), || {
        let engine = engine.clone();
        async move {
            engine
                .send(req("bob", "alice", "back", Some("b-3")))
                .await
                .ok()
        }
    })
    .await;
    assert!(!sent.duplicate);
    let functions = server.command(&["FUNCTION", "LIST"]).unwrap();
    assert!(
        functions.contains("chat_send"),
        "library reloaded: {functions}"
    );
    eventually(
        "resync after the subscribers reconnected",
        Duration::from_secs(20),
        || {
            let n = sink.resyncs();
            async move { (n >= 2).then_some(()) }
        },
    )
    .await;
    eventually("ready again", WAIT, || {
        let engine = engine.clone();
        async move { engine.ready().await.then_some(()) }
    })
    .await;
    let live = engine
        .send(req("bob", "alice", "live", Some("b-4")))
        .await
        .unwrap();
    eventually("live event after restart", WAIT, || {
        let got = sink
            .inbox("alice")
            .iter()
            .any(|e| String::from_utf8_lossy(&e.json).contains(&live.message.id));
        async move { got.then_some(()) }
    })
    .await;
    // bob's subscription came back too.
    eventually("bob's live event after restart", WAIT, || {
        let got = sink
            .inbox("bob")
            .iter()
            .any(|e| String::from_utf8_lossy(&e.json).contains(&live.message.id));
        async move { got.then_some(()) }
    })
    .await;
    engine.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn age_retention_keeps_recent_messages() {
    for (max_len, max_age) in [(0, 3600), (5, 3600)] {
        let server = RedisServer::start();
        let retention = Retention {
            history_max_len: max_len,
            history_max_age_secs: max_age,
            inbox_max_len: 0,
            inbox_ttl_secs: 0,
            ..Retention::default()
        };
        let (engine, _sink) = engine_with(&server, retention, 1, 3000).await;
        for i in 0..3 {
            engine
                .send(req("a", "b", &format!("{i}"), None))
                .await
                .unwrap();
        }
        let (history, more) = engine.history("a", "b", None, 10).await.unwrap();
        assert_eq!(history.len(), 3);
        assert!(!more);
        // Retention 0: no trimming and no expiry on the inbox.
        assert_eq!(
            engine
                .read_inbox("a", StreamId::ZERO, 10)
                .await
                .unwrap()
                .len(),
            3
        );
        assert_eq!(
            server.command(&["TTL", "chat:{u:a}:inbox"]).as_deref(),
            Some(":-1\r\n")
        );
    }
}

/// The inbox's expiry is refreshed when an append starts a new 1/64 slice of the ttl
/// (not on every append), so an active inbox never expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_expiry_is_refreshed_by_later_appends() {
    let server = RedisServer::start();
    let retention = Retention {
        history_max_len: 0,
        history_max_age_secs: 0,
        inbox_max_len: 0,
        inbox_ttl_secs: 64,
        ..Retention::default()
    };
    let ttl = |user: &str| -> i64 {
        let reply = server
            .command(&["PTTL", &format!("chat:{{u:{user}}}:inbox")])
            .unwrap();
        reply.trim().trim_start_matches(':').parse().unwrap()
    };
    let (engine, _sink) = engine_with(&server, retention, 1, 3000).await;
    engine.send(req("a", "b", "one", None)).await.unwrap();
    let first = ttl("a");
    assert!(
        (60_000..=64_000).contains(&first),
        "new inbox gets the ttl: {first}"
    );
    // A slice is 1 s here: 2.5 s later the next append must push the expiry out again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let aged = ttl("a");
    assert!(
        aged <= first - 2_000,
        "ttl runs down between appends: {aged}"
    );
    engine.send(req("b", "a", "two", None)).await.unwrap();
    for user in ["a", "b"] {
        let refreshed = ttl(user);
        assert!(
            refreshed > 63_000,
            "{user}'s inbox expiry refreshed: {refreshed}"
        );
    }
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

/// The commands each send costs Redis, from `INFO commandstats`, per command.
fn commands_between(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(k, v)| *v > 0 && k != "info")
        .collect()
}

/// The Redis work of a send is pinned: a change that adds a command to the send path
/// fails here (timings stay out of tests; the harness measures those).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_commands_per_send_are_pinned() {
    let server = RedisServer::start();
    let (engine, _sink) = engine(&server).await;
    // The first sends create both inboxes (their head keys and expiry): not counted.
    engine
        .send(req("alice", "bob", "hi", Some("w1")))
        .await
        .unwrap();
    engine
        .send(req("bob", "alice", "hi", Some("w2")))
        .await
        .unwrap();
    let n = 40u64;
    let before = server.command_stats();
    for i in 0..n {
        let nonce = format!("n{i}");
        engine
            .send(req("alice", "bob", "hello", Some(&nonce)))
            .await
            .unwrap();
    }
    let mut used = commands_between(&before, &server.command_stats());
    // An inbox's expiry is refreshed when an append starts a new ttl/64 slice: rarely.
    let expires = used.remove("expire").unwrap_or(0);
    assert!(expires <= 4, "{expires} EXPIRE");
    let per_send: std::collections::BTreeMap<&str, u64> = [
        // one call per send here (sent one after the other, nothing to batch)
        ("fcall", 1),
        // Redis's clock, once per call, for the nonce window
        ("time", 1),
        // the conversation's sequence and nonce windows
        ("hmget", 1),
        // the nonce in this window's hash (the previous window had none)
        ("hget", 1),
        // the conversation, each inbox
        ("xadd", 3),
        // the nonce; the sequence, last id, last message, the sender's read marker
        ("hset", 2),
        // each inbox's head, returning the one before
        ("set", 2),
        // each participant's conversation index
        ("zadd", 2),
        // both participants' channels (no sending node: the sender's is published too)
        ("spublish", 2),
    ]
    .into_iter()
    .collect();
    let expected: std::collections::BTreeMap<String, u64> = per_send
        .iter()
        .map(|(k, v)| (k.to_string(), v * n))
        .collect();
    assert_eq!(used, expected, "commands for {n} sends");
    assert_eq!(per_send.values().sum::<u64>(), 15);

    // With the sender subscribed on this node, which delivers the sender's copy
    // itself, and connected nowhere else: one HKEYS of the presence hash, one publish.
    engine.subscribe("alice").await.unwrap();
    let before = server.command_stats();
    for i in 0..n {
        let r = req("alice", "bob", "hello", Some(&format!("m{i}")));
        engine.send(r).await.unwrap();
    }
    let mut used = commands_between(&before, &server.command_stats());
    used.remove("expire");
    assert_eq!(used.get("hkeys"), Some(&n));
    assert_eq!(used.get("spublish"), Some(&n));
    assert_eq!(used.get("xadd"), Some(&(3 * n)));

    // A retried nonce: the lookup and the stored message only.
    let before = server.command_stats();
    let retry = engine
        .send(req("alice", "bob", "hello", Some("n3")))
        .await
        .unwrap();
    assert!(retry.duplicate);
    let used = commands_between(&before, &server.command_stats());
    let expected: std::collections::BTreeMap<String, u64> = [
        ("fcall", 1),
        ("time", 1),
        ("hmget", 1),
        ("hget", 1),
        ("xrange", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(used, expected);
}

/// Sends that arrive while a call is in flight share the next call: fewer calls than
/// sends, every send stored once, in the order each sender issued them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_are_batched_into_fewer_calls() {
    let server = RedisServer::start();
    let (engine, sink) = engine(&server).await;
    engine.subscribe("bob").await.unwrap();
    let senders = 8usize;
    let each = 50usize;
    let before = server.command_stats();
    let mut tasks = Vec::new();
    for s in 0..senders {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let from = format!("user{s}");
            let mut ids = Vec::new();
            for i in 0..each {
                let out = engine
                    .send(req(
                        &from,
                        "bob",
                        &format!("{s}/{i}"),
                        Some(&format!("{s}-{i}")),
                    ))
                    .await
                    .unwrap();
                assert!(!out.duplicate);
                ids.push(StreamId::parse(&out.message.id).unwrap());
            }
            ids
        }));
    }
    for t in tasks {
        let ids = t.await.unwrap();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "one sender's sends in order"
        );
    }
    let used = commands_between(&before, &server.command_stats());
    let total = (senders * each) as u64;
    assert_eq!(
        used.get("xadd"),
        Some(&(3 * total)),
        "each message stored once"
    );
    assert!(used["fcall"] <= total);
    // Every message reached bob's inbox once, chained.
    let inbox = engine
        .read_inbox("bob", StreamId::ZERO, 10_000)
        .await
        .unwrap();
    assert_eq!(inbox.len(), senders * each);
    let mut prev = StreamId::ZERO;
    for e in &inbox {
        assert_eq!(e.prev, prev, "p chain");
        prev = e.id;
    }
    barrier(&engine, &sink, "bob", "end").await;
    let live = sink.inbox("bob");
    assert_eq!(live.len(), senders * each, "published once each");

    // Deterministically: while Redis holds the calls in flight (writes paused), the
    // other sends queue, and all of them go in the one next call.
    let before = server.command_stats();
    server
        .command(&["CLIENT", "PAUSE", "400", "WRITE"])
        .unwrap();
    let mut tasks = Vec::new();
    for s in 0..10 {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            engine
                .send(req(
                    &format!("user{s}"),
                    "bob",
                    "paused",
                    Some(&format!("p{s}")),
                ))
                .await
                .unwrap()
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        assert!(!t.await.unwrap().duplicate);
    }
    let used = commands_between(&before, &server.command_stats());
    assert_eq!(used["xadd"], 3 * 10);
    // Four calls in flight at most (redis/batch.rs IN_FLIGHT): the first four sends
    // alone, then the six queued behind them in one call.
    assert_eq!(
        used["fcall"], 5,
        "four sends alone, then the six queued behind them"
    );
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

/// Redis out of memory (`maxmemory` reached with `noeviction`) refuses every write:
/// each engine call that writes answers `Unavailable` (never `Internal`), `ready()`
/// is false until a write succeeds again, and nothing half-written is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_is_unavailable_and_not_ready() {
    let server = RedisServer::start();
    let (engine, _sink) = engine(&server).await;
    engine
        .send(req("oom-a", "oom-b", "before", Some("o0")))
        .await
        .unwrap();
    assert!(engine.ready().await);
    assert!(server
        .command(&["CONFIG", "SET", "maxmemory-policy", "noeviction"])
        .is_some_and(|r| r.starts_with("+OK")));
    assert!(server
        .command(&["CONFIG", "SET", "maxmemory", "1"])
        .is_some_and(|r| r.starts_with("+OK")));

    let unavailable = |r: Result<_, EngineError>, what: &str| match r {
        Err(EngineError::Unavailable(why)) => assert!(why.contains("OOM"), "{what}: {why}"),
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    };
    unavailable(
        engine
            .send(req("oom-a", "oom-b", "refused", Some("o1")))
            .await
            .map(|_| ()),
        "send",
    );
    unavailable(
        engine
            .send(req("oom-a", "oom-b", "refused", None))
            .await
            .map(|_| ()),
        "send without nonce",
    );
    unavailable(
        engine.create_session("oom-a", None, 60).await.map(|_| ()),
        "create_session",
    );
    unavailable(
        engine.upsert_user("oom-c", "C").await.map(|_| ()),
        "upsert_user",
    );
    unavailable(
        engine.connection_opened("oom-a", "n1").await.map(|_| ()),
        "connection_opened",
    );
    assert!(!engine.ready().await, "not ready while writes are refused");
    // Reads still work.
    let (history, _) = engine.history("oom-a", "oom-b", None, 10).await.unwrap();
    assert_eq!(history.len(), 1);

    assert!(server
        .command(&["CONFIG", "SET", "maxmemory", "0"])
        .is_some_and(|r| r.starts_with("+OK")));
    assert!(engine.ready().await, "ready again once writes succeed");
    engine
        .send(req("oom-a", "oom-b", "after", Some("o2")))
        .await
        .unwrap();
    let (history, _) = engine.history("oom-a", "oom-b", None, 10).await.unwrap();
    let bodies: Vec<&str> = history.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["before", "after"], "nothing refused was stored");
}

/// Redis stops answering writes (`CLIENT PAUSE … WRITE`) for longer than the command
/// timeout: a send with a nonce is retried with it and resolves truthfully — the
/// stored message once Redis answers within the retries, or `Unavailable` saying the
/// message may have been stored — and is stored exactly once, whatever the client's
/// retry with the same nonce does afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_during_a_write_pause_resolves_truthfully() {
    let server = RedisServer::start();
    let (engine, _sink) = engine_with(&server, Retention::default(), 1, 300).await;
    engine
        .send(req("pz-a", "pz-b", "warm up", Some("p0")))
        .await
        .unwrap();
    let pause = |ms: &str| {
        let reply = server.command(&["CLIENT", "PAUSE", ms, "WRITE"]);
        assert!(
            reply.as_deref().is_some_and(|r| r.starts_with("+OK")),
            "{reply:?}"
        );
    };
    let stored = |engine: Arc<RedisEngine>, body: &'static str| async move {
        let (history, _) = engine.history("pz-a", "pz-b", None, 50).await.unwrap();
        history.iter().filter(|m| m.body == body).count()
    };

    // Paused a little longer than the timeout: a retry gets the answer.
    pause("800");
    let started = Instant::now();
    let outcome = engine
        .send(req("pz-a", "pz-b", "short pause", Some("p1")))
        .await
        .expect("answered once the pause ends");
    assert!(started.elapsed() >= Duration::from_millis(700));
    let retry = engine
        .send(req("pz-a", "pz-b", "short pause", Some("p1")))
        .await
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message.id, outcome.message.id);
    assert_eq!(stored(engine.clone(), "short pause").await, 1);

    // Paused longer than every retry: unavailable, and says it may be stored.
    pause("3000");
    match engine
        .send(req("pz-a", "pz-b", "long pause", Some("p2")))
        .await
    {
        Err(EngineError::Unavailable(why)) => {
            assert!(why.contains(chat_engine::MAYBE_STORED), "{why}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // The client retries with its nonce once Redis is back: one copy, never two.
    let retried = eventually("the retry is answered", WAIT, || {
        let engine = engine.clone();
        async move {
            engine
                .send(req("pz-a", "pz-b", "long pause", Some("p2")))
                .await
                .ok()
        }
    })
    .await;
    assert!(retried.duplicate, "the unanswered attempt had stored it");
    assert_eq!(stored(engine.clone(), "long pause").await, 1);
}

/// A room send during a write pause resolves like a 1:1 send: retried with its nonce
/// (stored once) when the pause ends in time, else `Unavailable` saying it may have
/// been stored — never a false "nothing was stored", never two copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_send_during_a_write_pause_resolves_truthfully() {
    let server = RedisServer::start();
    let (engine, _sink) = engine_with(&server, Retention::default(), 1, 300).await;
    let alice = chat_protocol::User {
        id: "rp-a".into(),
        name: "alice".into(),
    };
    engine.upsert_user(&alice.id, &alice.name).await.unwrap();
    let limits = chat_engine::RoomLimits {
        rooms_per_user: 10,
        members_per_room: 10,
    };
    engine
        .join_room("pz-room", &alice, None, limits)
        .await
        .unwrap();
    let send = |nonce: &'static str, body: &'static str| {
        let engine = engine.clone();
        async move {
            engine
                .room_send(chat_engine::RoomSendRequest {
                    room: "pz-room".into(),
                    from: "rp-a".into(),
                    body: body.into(),
                    nonce: Some(nonce.into()),
                    nonce_ttl_secs: 60,
                    sent_at: "2026-12-04T10:00:00.000Z".into(),
                })
                .await
        }
    };
    let stored = |body: &'static str| {
        let engine = engine.clone();
        async move {
            let (history, _) = engine.room_history("pz-room", None, 50).await.unwrap();
            history.iter().filter(|m| m.body == body).count()
        }
    };
    let pause = |ms: &str| {
        let reply = server.command(&["CLIENT", "PAUSE", ms, "WRITE"]);
        assert!(
            reply.as_deref().is_some_and(|r| r.starts_with("+OK")),
            "{reply:?}"
        );
    };
    send("r0", "warm up").await.unwrap().expect("a member");

    pause("800");
    let outcome = send("r1", "short pause")
        .await
        .expect("answered once the pause ends")
        .expect("a member");
    assert_eq!(stored("short pause").await, 1);

    pause("3000");
    match send("r2", "long pause").await {
        Err(EngineError::Unavailable(why)) => {
            assert!(why.contains(chat_engine::MAYBE_STORED), "{why}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let retried = eventually("the retry is answered", WAIT, || async {
        send("r2", "long pause").await.ok().flatten()
    })
    .await;
    assert!(retried.duplicate, "the unanswered attempt had stored it");
    assert_eq!(stored("long pause").await, 1);
    assert_ne!(outcome.message.id, retried.message.id);
}
