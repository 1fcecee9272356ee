//! The cross-node chat and recovery guarantees on the other Redis topologies: a real
//! 3-primary Redis Cluster (sharded pub/sub, slot-local functions) and a primary +
//! replica watched by 3 sentinels, including a primary failover under live traffic.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chat_testkit::{RedisCluster, RedisSentinel};
use common::*;

/// Alice on node A and Bob on node B exchange messages both ways; then Bob goes
/// offline, misses 200 messages, resumes on node A with his cursor and gets every one
/// exactly once, in order, before a new live one.
async fn chat_and_recover(cluster: &Cluster) {
    let mut alice = guest(&cluster.url(0), "alice").await;
    let mut bob = guest(&cluster.url(1), "bob").await;
    let (alice_id, bob_id) = (alice.user_id().to_string(), bob.user_id().to_string());

    let m1 = alice.send(&bob_id, "hi bob").await.expect("alice sends");
    assert_eq!(
        expect_message(&mut bob, "alice's message on node B").await,
        m1
    );
    let m2 = bob.send(&alice_id, "hi alice").await.expect("bob sends");
    let got = expect_from(&mut alice, &bob_id, "bob's message on node A").await;
    assert_eq!(got, m2);
    // Bob's own message comes back to him as an event too (other tabs): read it.
    assert_eq!(
        expect_message(&mut bob, "bob's own message echoed").await,
        m2
    );

    let state = bob.resume_state();
    bob.close().await;
    let mut missed = Vec::new();
    for i in 0..200 {
        missed.push(
            alice
                .send(&bob_id, &format!("missed {i}"))
                .await
                .expect("send")
                .id,
        );
    }
    let mut bob = Client::resume(&cluster.url(0), state)
        .await
        .expect("bob resumes on node A");
    assert!(bob.welcome().recovered, "cursor recovered");
    let live = alice.send(&bob_id, "live").await.expect("send").id;
    let mut ids = Vec::new();
    while ids.len() < missed.len() + 1 {
        ids.push(
            expect_message(&mut bob, "replayed or live message")
                .await
                .id,
        );
    }
    let mut want = missed.clone();
    want.push(live);
    assert_eq!(
        ids, want,
        "every message once, in order, replay before live"
    );
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_chat_and_recovery_on_redis_cluster() {
    let redis = RedisCluster::start(3);
    let cluster = Cluster::on_redis_url(&redis.url(), 2, NO_RATE_LIMIT);
    chat_and_recover(&cluster).await;
    // The send path is slot-local: the conversation and both inboxes were written on
    // the shards owning them (functions ran on more than one primary).
    assert!(redis.command_calls("fcall") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_node_chat_and_recovery_on_sentinel() {
    let redis = RedisSentinel::start();
    let cluster = Cluster::on_redis_url(&redis.url(), 2, NO_RATE_LIMIT);
    chat_and_recover(&cluster).await;
}

/// The primary dies under traffic: sends during the failover are refused with
/// `unavailable` (never acked and lost), the gateways follow the new primary without
/// a restart, live delivery across nodes resumes, and nothing acked is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_primary_failover_keeps_chatting() {
    let mut redis = RedisSentinel::start();
    let cluster = Cluster::on_redis_url(&redis.url(), 2, NO_RATE_LIMIT);
    let mut alice = guest(&cluster.url(0), "alice").await;
    let mut bob = guest(&cluster.url(1), "bob").await;
    let bob_id = bob.user_id().to_string();
    let alice_id = alice.user_id().to_string();
    let mut acked = Vec::new();
    for i in 0..20 {
        let m = alice
            .send(&bob_id, &format!("before {i}"))
            .await
            .expect("send");
        assert_eq!(expect_message(&mut bob, "before failover").await, m);
        acked.push(m.id);
    }
    // Replication is asynchronous in Redis: make sure the replica has it all before
    // pulling the plug, so the test measures the gateway, not Redis's own window.
    let reply = redis
        .primary()
        .command(&["WAIT", "1", "2000"])
        .unwrap_or_default();
    assert!(reply.starts_with(":1"), "replica caught up: {reply}");

    let old = redis.kill_primary();
    let started = Instant::now();
    let mut refused = 0;
    let mut bob_state = bob.resume_state();
    // Keep sending until a send is accepted by the new primary.
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no recovery within 60 s"
        );
        match alice
            .send(&bob_id, &format!("during {}", acked.len()))
            .await
        {
            Ok(m) => {
                acked.push(m.id);
                break;
            }
            Err(ClientError::Server { code, .. }) => {
                assert_eq!(
                    code,
                    ErrorCode::Unavailable,
                    "a refused send says unavailable"
                );
                refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("alice's connection failed during the failover: {e}"),
        }
    }
    redis.wait_for_new_primary(old, Duration::from_secs(30));
    for i in 0..20 {
        acked.push(
            alice
                .send(&bob_id, &format!("after {i}"))
                .await
                .expect("send after failover")
                .id,
        );
    }
    // Bob still connected on node B: he gets every acked message, in order, either
    // live or through the catch-up after the gateways' resync; if his node closed
    // his socket during the failover he resumes with his cursor.
    let mut seen: Vec<String> = acked[..20].to_vec();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < acked.len() {
        assert!(
            Instant::now() < deadline,
            "bob missing messages: {} of {}\n{}",
            seen.len(),
            acked.len(),
            cluster.logs()
        );
        match bob.next_event_timeout(Duration::from_secs(2)).await {
            Ok(Some(ServerFrame::Message { message, .. })) => {
                seen.push(message.id.clone());
                bob_state = bob.resume_state();
            }
            Ok(_) => {}
            Err(_) => {
                bob = Client::resume(&cluster.url(1), bob_state.clone())
                    .await
                    .expect("bob resumes");
            }
        }
    }
    assert_eq!(
        seen, acked,
        "every acked message once, in order (refused during failover: {refused})"
    );
    // And the reverse direction works across nodes on the new primary.
    let m = bob.send(&alice_id, "back online").await.expect("bob sends");
    assert_eq!(
        expect_from(&mut alice, &bob_id, "bob's message after failover").await,
        m
    );
    // History on the new primary holds everything acked.
    let (history, _) = bob.history(&alice_id, None, 100).await.expect("history");
    let stored: HashSet<String> = history.into_iter().map(|m| m.id).collect();
    assert!(
        acked.iter().all(|id| stored.contains(id)),
        "nothing acked is missing from history"
    );
}
