//! The Redis engine against a real 3-primary Redis Cluster (`redis-server
//! --cluster-enabled yes` on free ports, joined with `redis-cli --cluster create`):
//! the shared behaviour checks, a send between users whose keys live on three
//! different nodes (two round trips: `chat_conv_append` then both `chat_inbox_append`),
//! nonce retries, paging, recovery reads, and a restarted primary that lost the
//! function library and the subscriptions.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;
use std::time::Duration;

use chat_engine::prelude::*;
use chat_engine::redis::{keys, RedisConfig, RedisEngine, RedisMode};
use chat_engine::SendRequest;
use chat_protocol::StreamId;
use chat_testkit::{eventually, RedisCluster};
use common::*;

async fn engine(cluster: &RedisCluster) -> (Arc<RedisEngine>, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url: cluster.url(),
        subscribers: 2,
        command_timeout_ms: 2000,
        ..RedisConfig::default()
    };
    let engine = RedisEngine::connect(config, sink.clone()).await.unwrap();
    assert_eq!(engine.mode(), RedisMode::Cluster);
    (engine, sink)
}

fn nonce_req(from: &str, to: &str, body: &str, nonce: &str) -> SendRequest {
    SendRequest {
        nonce: Some(nonce.into()),
        ..req(from, to, body)
    }
}

/// Two users whose inboxes and conversation live on three different nodes.
fn spread_pair(cluster: &RedisCluster) -> (String, String) {
    let names: Vec<String> = (0..40).map(|i| format!("u{i}")).collect();
    for a in &names {
        for b in &names {
            let (na, nb, nc) = (
                cluster.node_of(&keys::inbox(a)),
                cluster.node_of(&keys::inbox(b)),
                cluster.node_of(&keys::conv_msgs(a, b)),
            );
            if na != nb && nb != nc && na != nc {
                return (a.clone(), b.clone());
            }
        }
    }
    panic!("no pair of users spread over three nodes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_behaviour_checks_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let (engine, sink) = engine(&cluster).await;
    let e: Arc<dyn Engine> = engine.clone();
    // Distinct users per check, so one cluster and one sink serve them all.
    unread_and_read_receipts(e.clone(), sink.clone()).await;
    concurrent_sends_and_reads_stay_exact(e.clone(), sink.clone()).await;
    conversation_list(e.clone(), sink.clone()).await;
    presence_transitions(e.clone(), sink.clone()).await;
    directory_search(e.clone(), sink.clone()).await;
    disconnect_reaches_the_sink(e.clone(), sink.clone()).await;
    clear_hides_messages_from_recovery(e.clone(), sink.clone()).await;
    // Sessions: the session keys and the user's set live in different slots.
    sessions_keep_the_rooms_claim(e.clone(), sink.clone()).await;
    revoking_one_session_keeps_the_others(e.clone(), sink.clone()).await;
    let token = e.create_session("ann", None, 60).await.unwrap();
    assert_eq!(
        e.resume_session(&token, 60).await.unwrap().unwrap().user.id,
        "ann"
    );
    e.revoke_sessions("ann").await.unwrap();
    assert!(e.resume_session(&token, 60).await.unwrap().is_none());
    // Heartbeat and reaping: node keys and chat:nodes are in different slots.
    e.heartbeat("n-x", 1).await.unwrap();
    e.connection_opened("hal", "n-x").await.unwrap();
    eventually("n-x heartbeat expired", WAIT, || {
        let e = e.clone();
        async move { (e.reap_dead_nodes().await.unwrap() == 1).then_some(()) }
    })
    .await;
    // hal is still connected on n1 (from presence_transitions), so stays online.
    assert!(e.presence(&["hal".to_string()]).await.unwrap()[0].online);
    e.connection_closed("hal", "n1").await.unwrap();
    assert!(!e.presence(&["hal".to_string()]).await.unwrap()[0].online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_across_three_nodes_nonce_paging_and_recovery() {
    let cluster = RedisCluster::start(3);
    let (engine, sink) = engine(&cluster).await;
    let (a, b) = spread_pair(&cluster);
    let (a, b) = (a.as_str(), b.as_str());
    engine.subscribe(a).await.unwrap();
    engine.subscribe(b).await.unwrap();

    // One send: conv_append, then the two inbox appends: three FCALLs in two round trips.
    let before = cluster.command_calls("fcall");
    let first = engine.send(nonce_req(a, b, "hello", "n1")).await.unwrap();
    assert_eq!(
        cluster.command_calls("fcall") - before,
        3,
        "FCALLs per send"
    );
    assert!(!first.duplicate);
    let m1 = first.message.clone();
    assert_eq!(m1.from, a);
    assert_eq!(m1.body, "hello");
    let (history, more) = engine.history(b, a, None, 10).await.unwrap();
    assert_eq!((history, more), (vec![m1.clone()], false));
    for user in [a, b] {
        let events = engine.read_inbox(user, StreamId::ZERO, 10).await.unwrap();
        assert_eq!(events.len(), 1, "{user}");
        assert_chain(&events);
        assert_eq!(json(&events[0])["type"], "message");
        assert_eq!(json(&events[0])["message"]["id"], m1.id.as_str());
        // Live, with the same id and prev as stored.
        let want = String::from_utf8_lossy(&events[0].json).into_owned();
        until("live message", || sink.inbox_json(user).contains(&want)).await;
    }

    // A nonce retry returns the original and stores nothing new (the inbox appends
    // run again but find the message already there).
    let again = engine.send(nonce_req(a, b, "hello", "n1")).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, m1);
    for user in [a, b] {
        assert_eq!(
            engine
                .read_inbox(user, StreamId::ZERO, 10)
                .await
                .unwrap()
                .len(),
            1
        );
    }

    // A send whose node died between the two steps: the conversation has it, the
    // inboxes do not. The client's retry with the same nonce completes it.
    let (ck, ca) = {
        let conversation = chat_protocol::dm_conversation(a, b);
        let keys = [keys::conv_msgs(a, b), keys::conv_meta(a, b)];
        let sent_at = "2026-01-01T00:00:00.000Z".to_string();
        // The message JSON after its id, as the engine passes it.
        let tail = serde_json::to_string(&chat_protocol::Message {
            id: String::new(),
            conversation: conversation.clone(),
            from: a.to_string(),
            to: b.to_string(),
            body: "half".to_string(),
            sent_at: sent_at.clone(),
            room: None,
        })
        .unwrap()
        .replacen(r#"{"id":"""#, "", 1);
        let args = [
            "0".to_string(),
            "0".to_string(),
            "0".to_string(),
            conversation,
            a.to_string(),
            b.to_string(),
            "half".to_string(),
            sent_at,
            "n2".to_string(),
            "60".to_string(),
            tail,
        ];
        (keys, args)
    };
    let node = &cluster.nodes[cluster.node_of(&ck[0])];
    let mut cmd = vec!["FCALL", "chat_conv_append", "2"];
    cmd.extend(ck.iter().map(String::as_str));
    cmd.extend(ca.iter().map(String::as_str));
    let reply = node.command(&cmd).unwrap();
    // {0 (a new message), its id, ''}
    assert!(reply.starts_with("*3\r\n:0\r\n"), "{reply:?}");
    assert_eq!(
        engine
            .read_inbox(b, StreamId::ZERO, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    let retried = engine.send(nonce_req(a, b, "half", "n2")).await.unwrap();
    assert!(retried.duplicate);
    for user in [a, b] {
        let events = engine.read_inbox(user, StreamId::ZERO, 10).await.unwrap();
        assert_eq!(events.len(), 2, "{user}");
        assert_chain(&events);
        assert_eq!(
            json(&events[1])["message"]["id"],
            retried.message.id.as_str()
        );
    }

    // mark_read: the marker in the conversation's slot, then both inboxes.
    let before = cluster.command_calls("fcall");
    let read = engine
        .mark_read(b, a, id(&retried.message))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cluster.command_calls("fcall") - before,
        3,
        "FCALLs per read"
    );
    assert_eq!(read.up_to, retried.message.id);
    assert_eq!(unread(engine.as_ref(), b, a).await, 0);
    for user in [a, b] {
        let events = engine.read_inbox(user, StreamId::ZERO, 10).await.unwrap();
        assert_eq!(events.len(), 3, "{user}");
        assert_chain(&events);
        assert_eq!(json(&events[2])["type"], "read");
        assert_eq!(json(&events[2])["by"], b);
    }
    // Nothing moved: one FCALL, no inbox event.
    let before = cluster.command_calls("fcall");
    assert!(engine
        .mark_read(b, a, id(&retried.message))
        .await
        .unwrap()
        .is_none());
    assert_eq!(cluster.command_calls("fcall") - before, 1);

    // Presence: one FCALL in the user's slot, the rest plain commands.
    let before = cluster.command_calls("fcall");
    assert_eq!(engine.connection_opened(a, "n1").await.unwrap(), 1);
    engine.connection_closed(a, "n1").await.unwrap();
    assert_eq!(cluster.command_calls("fcall") - before, 2);
    let online = format!(r#"{{"type":"presence","user":"{a}","online":true}}"#);
    until("online frame to the partner", || {
        sink.ephemeral(b).contains(&online)
    })
    .await;

    // Paging over 150 messages.
    let mut sent = vec![m1, retried.message];
    for i in 0..148 {
        let (from, to) = if i % 2 == 0 { (a, b) } else { (b, a) };
        sent.push(send(engine.as_ref(), from, to, &format!("m{i}")).await);
    }
    let mut all = Vec::new();
    let mut before = None;
    let mut pages = Vec::new();
    loop {
        let (page, more) = engine.history(a, b, before, 60).await.unwrap();
        pages.push((page.len(), more));
        before = page.first().map(id);
        let mut page = page;
        page.extend(all);
        all = page;
        if !more {
            break;
        }
    }
    assert_eq!(pages, vec![(60, true), (60, true), (30, false)]);
    assert_eq!(all, sent);

    // Recovery: read the inbox after a cursor; the chain proves nothing is missing.
    let events = engine.read_inbox(b, StreamId::ZERO, 1000).await.unwrap();
    assert_eq!(events.len(), 151);
    assert_chain(&events);
    let cursor = events[100].id;
    let after = engine.read_inbox(b, cursor, 20).await.unwrap();
    assert_eq!(after, events[101..121].to_vec());
    assert_eq!(after[0].prev, cursor);
    assert_eq!(engine.inbox_head(b).await.unwrap(), events[150].id);
    // Every inbox event reached the subscribed users live, once. Those b sent are
    // handed to the sink by the engine itself when `send` returns, so they may come
    // ahead of a published one still in flight (the gateway orders by `prev`).
    until("all live", || sink.inbox_json(b).len() >= 151).await;
    let mut live = sink.inbox_json(b);
    let mut stored: Vec<String> = events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.json).into_owned())
        .collect();
    live.sort();
    stored.sort();
    assert_eq!(live, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_primary_gets_the_library_and_subscriptions_back() {
    let mut cluster = RedisCluster::start(3);
    let (engine, sink) = engine(&cluster).await;
    let (a, b) = spread_pair(&cluster);
    let (a, b) = (a.as_str(), b.as_str());
    engine.subscribe(b).await.unwrap();
    send(engine.as_ref(), a, b, "before").await;
    until("live before", || sink.inbox_json(b).len() == 1).await;

    // b's node restarts empty: no data, no functions, no subscriptions.
    let k = cluster.node_of(&keys::inbox(b));
    let resyncs = sink.resyncs();
    cluster.nodes[k].restart();
    assert!(!cluster.nodes[k]
        .command(&["FUNCTION", "LIST"])
        .unwrap()
        .contains("chat"));
    cluster.wait_ok(Duration::from_secs(20));

    // Sends fail fast (Unavailable) until the client is back, then work; the inbox
    // append on the restarted node reloads the library.
    let m = eventually("a send after the restart", Duration::from_secs(20), || {
        let engine = engine.clone();
        async move {
            match engine.send(req(a, b, "after")).await {
                Ok(out) => Some(out.message),
                Err(e) if e.is_unavailable() => None,
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
    })
    .await;
    assert!(cluster.nodes[k]
        .command(&["FUNCTION", "LIST"])
        .unwrap()
        .contains("chat_inbox_append"));
    // The subscriber re-subscribed on the restarted node and asked for a resync (a
    // message published before the re-subscription is the resync's to catch up).
    until("resync after the reconnect", || sink.resyncs() > resyncs).await;
    // Every subscriber connection resyncs after its own re-subscription: wait until
    // the restarted node holds b's channel again, then a new message arrives live.
    let channel = keys::channel(b);
    eventually("b re-subscribed on the restarted node", WAIT, || {
        let subs = cluster.nodes[k].command(&["PUBSUB", "SHARDNUMSUB", &channel]);
        async move { subs.is_some_and(|s| s.ends_with(":1\r\n")).then_some(()) }
    })
    .await;
    let later = send(engine.as_ref(), a, b, "later").await;
    until("live after the restart", || {
        sink.inbox_json(b)
            .iter()
            .any(|j| j.contains(&format!(r#""id":"{}""#, later.id)))
    })
    .await;
    let events = engine.read_inbox(b, StreamId::ZERO, 10).await.unwrap();
    let ids: Vec<String> = events
        .iter()
        .map(|e| json(e)["message"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [m.id, later.id],
        "the restarted node lost the older inbox"
    );
}

/// A partial send: the conversation append succeeds while the recipient's inbox node
/// stops answering writes (`CLIENT PAUSE … WRITE`, longer than the command timeout).
/// The engine retries with the nonce and completes the send: answered with the
/// message, stored once in the history and once in each inbox, never left half-written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_send_is_completed_not_left_half_written() {
    let cluster = RedisCluster::start(3);
    let sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url: cluster.url(),
        subscribers: 1,
        command_timeout_ms: 300,
        ..RedisConfig::default()
    };
    let engine = RedisEngine::connect(config, sink).await.unwrap();
    let (a, b) = spread_pair(&cluster);
    let (a, b) = (a.as_str(), b.as_str());
    engine.send(nonce_req(a, b, "warm up", "w")).await.unwrap();

    let inbox_node = &cluster.nodes[cluster.node_of(&keys::inbox(b))];
    let reply = inbox_node.command(&["CLIENT", "PAUSE", "800", "WRITE"]);
    assert!(
        reply.as_deref().is_some_and(|r| r.starts_with("+OK")),
        "{reply:?}"
    );
    let sent = engine
        .send(nonce_req(a, b, "half then whole", "p1"))
        .await
        .expect("completed once the inbox node answers");
    let (history, _) = engine.history(a, b, None, 10).await.unwrap();
    let copies = history
        .iter()
        .filter(|m| m.body == "half then whole")
        .count();
    assert_eq!(copies, 1);
    for user in [a, b] {
        let events = engine.read_inbox(user, StreamId::ZERO, 10).await.unwrap();
        assert_chain(&events);
        let ids: Vec<String> = events
            .iter()
            .map(|e| json(e)["message"]["id"].as_str().unwrap_or("").to_string())
            .filter(|id| *id == sent.message.id)
            .collect();
        assert_eq!(ids.len(), 1, "{user}'s inbox holds the message once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growth_is_bounded_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url: cluster.url(),
        retention: bounded_retention(),
        ..RedisConfig::default()
    };
    let engine = RedisEngine::connect(config, sink.clone()).await.unwrap();
    growth_is_bounded(engine, sink).await;
}

/// Guests expire on a cluster too: the user hash, the directory (`chat:names`) and
/// the guests' expiry set (`chat:guests`) live in different slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_expire_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url: cluster.url(),
        retention: chat_engine::Retention {
            guest_ttl_secs: 1,
            ..chat_engine::Retention::default()
        },
        ..RedisConfig::default()
    };
    let engine = RedisEngine::connect(config, sink.clone()).await.unwrap();
    guests_expire_after_inactivity(engine, sink).await;
}
