//! The Redis work of a send, pinned: the commands each send costs, and concurrent
//! sends batched into fewer calls. Timings stay out of tests (the load test measures
//! those). One `redis-server` per test, on a free port (`common::single`).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use chat_engine::prelude::*;
use chat_protocol::StreamId;
use chat_testkit::RedisServer;
use common::single::{barrier, engine, req};

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
