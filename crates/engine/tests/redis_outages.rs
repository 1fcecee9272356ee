//! The single Redis failing: a restart, out of memory, writes paused past the command
//! timeout. Calls answer `Unavailable` (never `Internal`), sends are retried with
//! their nonce and resolve truthfully, and everything works again afterwards. One
//! `redis-server` per test, on a free port (`common::single`).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_engine::prelude::*;
use chat_engine::redis::RedisEngine;
use chat_engine::{EngineError, Retention, WriteRefusal};
use chat_testkit::{eventually, RedisServer};
use common::single::{engine, engine_with, req};
use common::WAIT;

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
    assert!(matches!(err, EngineError::MaybeStored(_)), "{err:?}");
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
        Err(EngineError::Refused {
            refusal: WriteRefusal::OutOfMemory,
            ..
        }) => {}
        other => panic!("{what}: expected an out-of-memory refusal, got {other:?}"),
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
        Err(EngineError::MaybeStored(_)) => {}
        other => panic!("expected MaybeStored, got {other:?}"),
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
        Err(EngineError::MaybeStored(_)) => {}
        other => panic!("expected MaybeStored, got {other:?}"),
    }
    let retried = eventually("the retry is answered", WAIT, || async {
        send("r2", "long pause").await.ok().flatten()
    })
    .await;
    assert!(retried.duplicate, "the unanswered attempt had stored it");
    assert_eq!(stored("long pause").await, 1);
    assert_ne!(outcome.message.id, retried.message.id);
}
