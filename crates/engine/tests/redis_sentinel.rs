//! The Redis engine behind Sentinel (a primary, one replica, three sentinels on free
//! ports): sends and live delivery work, the function library is replicated, and
//! after the primary is killed the engine fails fast (`Unavailable`, never a hang)
//! until the sentinels promote the replica, then sends and live events work again.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_engine::prelude::*;
use chat_engine::redis::{RedisConfig, RedisEngine, RedisMode};
use chat_protocol::StreamId;
use chat_testkit::{eventually, RedisSentinel};
use common::*;

const TIMEOUT_MS: u64 = 1000;

async fn engine(setup: &RedisSentinel) -> (Arc<RedisEngine>, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url: setup.url(),
        subscribers: 2,
        command_timeout_ms: TIMEOUT_MS,
        ..RedisConfig::default()
    };
    let engine = RedisEngine::connect(config, sink.clone()).await.unwrap();
    assert_eq!(engine.mode(), RedisMode::Sentinel);
    (engine, sink)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_and_live_events_survive_a_primary_failover() {
    let mut setup = RedisSentinel::start();
    let (engine, sink) = engine(&setup).await;
    engine.subscribe("sam").await.unwrap();
    let first = send(engine.as_ref(), "tom", "sam", "before").await;
    until("live before", || sink.inbox_json("sam").len() == 1).await;
    // One round trip per send, as on a single Redis.
    let primary = setup.primary();
    let calls = |s: &chat_testkit::RedisServer| s.command_calls("fcall");
    let before = calls(primary);
    send(engine.as_ref(), "tom", "sam", "one call").await;
    assert_eq!(calls(primary) - before, 1);
    until("live second", || sink.inbox_json("sam").len() == 2).await;

    // The library reached the replica with the data; make sure the replica has it all.
    assert!(primary
        .command(&["WAIT", "1", "2000"])
        .unwrap()
        .starts_with(":1"));
    let replica = setup
        .servers
        .iter()
        .find(|s| s.port != primary.port)
        .unwrap();
    assert!(replica
        .command(&["FUNCTION", "LIST"])
        .unwrap()
        .contains("chat_send"));

    let resyncs = sink.resyncs();
    let old = setup.kill_primary();
    let started = Instant::now();
    let unavailable = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let after = eventually("a send after the failover", Duration::from_secs(30), || {
        let engine = engine.clone();
        let unavailable = unavailable.clone();
        async move {
            let t = Instant::now();
            let result = engine.send(req("tom", "sam", "after")).await;
            // Fails fast, never hangs: within the command timeout and some slack.
            assert!(
                t.elapsed() < Duration::from_millis(3 * TIMEOUT_MS + 500),
                "a send took {:?}",
                t.elapsed()
            );
            match result {
                Ok(out) => Some(out.message),
                Err(e) if e.is_unavailable() => {
                    unavailable.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    None
                }
                Err(e) => panic!("unexpected error during the failover: {e}"),
            }
        }
    })
    .await;
    let unavailable = unavailable.load(Ordering::SeqCst);
    assert!(unavailable > 0, "sends failed while there was no primary");
    let new = setup.wait_for_new_primary(old, Duration::from_secs(10));
    assert_ne!(new, old);
    eprintln!(
        "failover: sends back after {:?}, {unavailable} refused",
        started.elapsed()
    );

    // Nothing acknowledged before the failover was lost; the new message follows.
    let (history, _) = engine.history("sam", "tom", None, 10).await.unwrap();
    let ids: Vec<&str> = history.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(ids[0], first.id);
    assert_eq!(ids[2], after.id);
    let events = engine.read_inbox("sam", StreamId::ZERO, 10).await.unwrap();
    assert_eq!(events.len(), 3);
    assert_chain(&events);

    // The subscriber followed the primary, re-subscribed and asked for a resync (a
    // message published before its re-subscription is the resync's to catch up);
    // once the new primary holds sam's channel, new messages arrive live.
    until("resync after the failover", || sink.resyncs() > resyncs).await;
    let new_primary = setup.servers.iter().find(|s| s.port == new).unwrap();
    eventually("sam re-subscribed on the new primary", WAIT, || {
        let subs = new_primary.command(&["PUBSUB", "SHARDNUMSUB", "chat:{u:sam}:ch"]);
        async move { subs.is_some_and(|s| s.ends_with(":1\r\n")).then_some(()) }
    })
    .await;
    let later = send(engine.as_ref(), "tom", "sam", "later").await;
    until("live after the failover", || {
        sink.inbox_json("sam")
            .iter()
            .any(|j| j.contains(&format!(r#""id":"{}""#, later.id)))
    })
    .await;
    // And keeps working: a read receipt is one FCALL on the new primary.
    let read = engine
        .mark_read("sam", "tom", id(&later))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.up_to, later.id);
    until("live read receipt", || {
        sink.inbox_json("sam")
            .iter()
            .any(|j| j.contains("\"type\":\"read\""))
    })
    .await;
}
