//! Several memory-engine nodes on one shared state (`testing::memory_cluster`), each
//! with its own id and recording sink: cross-node delivery, room subscriptions,
//! presence, recovery and per-node faults, unit-tested in one process. The Redis
//! engine's tests (`redis_*.rs`) and the gateway's process tests prove the real
//! wiring; these prove the routing rules quickly.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::sync::Arc;

use chat_engine::memory::{MemoryEngine, Op};
use chat_engine::prelude::*;
use chat_engine::testing::{memory_cluster, RecordingSink};
use chat_engine::{EngineError, InboxEvent, Retention, RoomLimits, RoomSendRequest};
use chat_protocol::{StreamId, User};
use common::{req, WAIT};

fn user(id: &str) -> User {
    User {
        id: id.into(),
        name: id.into(),
    }
}

fn body(e: &InboxEvent) -> String {
    let v: serde_json::Value = serde_json::from_slice(&e.json).unwrap();
    v["message"]["body"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Two nodes: `(engine, sink)` each.
fn two() -> [(Arc<MemoryEngine>, Arc<RecordingSink>); 2] {
    let mut nodes = memory_cluster(2, Retention::default());
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    [a, b]
}

#[tokio::test]
async fn nodes_have_their_own_ids() {
    let nodes = memory_cluster(3, Retention::default());
    let ids: Vec<&str> = nodes.iter().map(|(e, _)| e.node_id()).collect();
    assert_eq!(ids, ["node-1", "node-2", "node-3"]);
}

/// A message sent through node A reaches the recipient's sink on node B, where they
/// subscribed, and the sender's own event stays on A.
#[tokio::test]
async fn a_message_sent_on_one_node_is_delivered_on_the_recipients_node() {
    let [(a, sink_a), (b, sink_b)] = two();
    a.subscribe("alice").await.unwrap();
    b.subscribe("bob").await.unwrap();

    a.send(req("alice", "bob", "hi bob")).await.unwrap();
    let got = sink_b.wait_for_inbox("bob", 1, WAIT).await;
    assert_eq!(body(&got[0]), "hi bob");
    assert_eq!(got[0].prev, StreamId::ZERO);
    assert_eq!(
        sink_a.inbox("alice").len(),
        1,
        "the sender's own event, on A"
    );
    assert!(sink_a.inbox("bob").is_empty(), "bob is not subscribed on A");
    assert!(
        sink_b.inbox("alice").is_empty(),
        "alice is not subscribed on B"
    );

    // Ephemeral frames and disconnects follow the same subscriptions.
    a.publish_ephemeral("bob", r#"{"type":"typing"}"#)
        .await
        .unwrap();
    a.disconnect_user("bob").await.unwrap();
    assert_eq!(sink_b.ephemeral("bob"), [r#"{"type":"typing"}"#]);
    assert_eq!(sink_b.disconnects("bob"), 1);
    assert!(sink_a.ephemeral("bob").is_empty() && sink_a.disconnects("bob") == 0);

    // A user connected to both nodes gets the event on both; after an unsubscribe,
    // only where they are still subscribed.
    a.subscribe("bob").await.unwrap();
    b.send(req("alice", "bob", "both")).await.unwrap();
    assert_eq!(sink_a.inbox("bob").len(), 1);
    assert_eq!(sink_b.inbox("bob").len(), 2);
    b.unsubscribe("bob").await.unwrap();
    a.send(req("alice", "bob", "only A")).await.unwrap();
    assert_eq!(sink_a.inbox("bob").len(), 2);
    assert_eq!(sink_b.inbox("bob").len(), 2, "unsubscribed on B");
}

/// A room's events go to the nodes subscribed to the room, whichever node the join
/// or the send went through; a `member` event also reaches the nodes subscribed to
/// the user it is about.
#[tokio::test]
async fn room_events_go_to_the_nodes_subscribed_to_the_room() {
    let [(a, sink_a), (b, sink_b)] = two();
    let limits = RoomLimits {
        rooms_per_user: 10,
        members_per_room: 10,
    };
    b.subscribe_room("lobby").await.unwrap();
    b.subscribe("bob").await.unwrap();

    a.join_room("lobby", &user("alice"), None, limits)
        .await
        .unwrap();
    a.join_room("lobby", &user("bob"), None, limits)
        .await
        .unwrap();
    let sent = a
        .room_send(RoomSendRequest {
            room: "lobby".into(),
            from: "alice".into(),
            body: "hello room".into(),
            nonce: None,
            nonce_ttl_secs: 60,
            sent_at: "2026-01-01T00:00:00.000Z".into(),
        })
        .await
        .unwrap()
        .expect("alice is a member");

    let events = sink_b
        .wait_for("three lobby events on B", WAIT, |s| {
            let got = s.room("lobby");
            (got.len() >= 3).then_some(got)
        })
        .await;
    assert_eq!(events[2].id.to_string(), sent.message.id);
    assert_eq!(events[1].prev, events[0].id, "one chain");
    assert!(
        sink_a.room("lobby").is_empty(),
        "A did not subscribe to the room"
    );
    let notices = sink_b.notices("bob");
    assert_eq!(notices.len(), 1, "bob's join, on bob's node");
    assert_eq!(notices[0].change, Some(("bob".to_string(), true)));
    assert!(sink_a.notices("bob").is_empty());

    // Once B unsubscribes, the room's events go nowhere.
    b.unsubscribe_room("lobby").await.unwrap();
    a.leave_room("lobby", &user("alice")).await.unwrap();
    assert_eq!(sink_b.room("lobby").len(), 3);
}

/// Presence transitions go to every node (the global presence channel), and the
/// connection count is the cluster's.
#[tokio::test]
async fn presence_reaches_every_node() {
    let [(a, sink_a), (b, sink_b)] = two();
    assert_eq!(a.connection_opened("cat", "node-1").await.unwrap(), 1);
    assert_eq!(b.connection_opened("cat", "node-2").await.unwrap(), 2);
    for sink in [&sink_a, &sink_b] {
        let frames = sink.presence_of("cat");
        assert_eq!(frames.len(), 1, "one online transition: {frames:?}");
        assert!(frames[0].contains(r#""online":true"#), "{frames:?}");
    }
    assert!(b.presence(&["cat".into()]).await.unwrap()[0].online);
}

/// Bob's node goes away (its subscriber with it): what is sent meanwhile is stored
/// but delivered nowhere; when Bob comes back on another node he reads it from his
/// inbox after his cursor, in a provable `prev` chain, and live events continue it.
#[tokio::test]
async fn recovery_after_a_nodes_subscriber_is_gone() {
    let mut nodes = memory_cluster(3, Retention::default());
    let (c, sink_c) = nodes.pop().unwrap();
    let (b, sink_b) = nodes.pop().unwrap();
    let (a, sink_a) = nodes.pop().unwrap();
    b.subscribe("bob").await.unwrap();
    a.send(req("alice", "bob", "before")).await.unwrap();
    let cursor = sink_b.wait_for_inbox("bob", 1, WAIT).await[0].id;

    drop(b); // node B is gone, and its subscription of bob with it
    for n in 0..3 {
        a.send(req("alice", "bob", &format!("missed {n}")))
            .await
            .unwrap();
    }
    assert_eq!(sink_b.inbox("bob").len(), 1, "nothing after B went away");
    assert!(sink_a.inbox("bob").is_empty() && sink_c.inbox("bob").is_empty());

    // Bob reconnects on C: subscribe first, then read what he missed.
    c.subscribe("bob").await.unwrap();
    let missed = c.read_inbox("bob", cursor, 100).await.unwrap();
    let bodies: Vec<String> = missed.iter().map(body).collect();
    assert_eq!(bodies, ["missed 0", "missed 1", "missed 2"]);
    let mut prev = cursor;
    for e in &missed {
        assert_eq!(e.prev, prev, "prev chain from the cursor");
        prev = e.id;
    }
    a.send(req("alice", "bob", "live again")).await.unwrap();
    let live = sink_c.wait_for_inbox("bob", 1, WAIT).await;
    assert_eq!(body(&live[0]), "live again");
    assert_eq!(
        live[0].prev, prev,
        "the live event follows the last one read"
    );
}

/// Faults are per node: node A's inbox reads fail (as in a Redis outage) while B's
/// succeed, until healed; `fail_next` fails a number of calls only.
#[tokio::test]
async fn faults_fail_named_operations_on_one_node() {
    let [(a, _), (b, _)] = two();
    a.send(req("alice", "bob", "x")).await.unwrap();
    let faults = a.faults();
    faults.fail(Op::ReadInbox);
    for _ in 0..3 {
        assert!(matches!(
            a.read_inbox("bob", StreamId::ZERO, 10).await,
            Err(EngineError::Unavailable(_))
        ));
    }
    assert_eq!(
        b.read_inbox("bob", StreamId::ZERO, 10).await.unwrap().len(),
        1
    );
    assert_eq!(
        a.inbox_head("bob").await.unwrap(),
        b.inbox_head("bob").await.unwrap()
    );
    faults.heal(Op::ReadInbox);
    assert_eq!(
        a.read_inbox("bob", StreamId::ZERO, 10).await.unwrap().len(),
        1
    );

    faults.fail_next(Op::Send, 1);
    assert!(a.send(req("alice", "bob", "refused")).await.is_err());
    a.send(req("alice", "bob", "stored")).await.unwrap();
    let stored = b.read_inbox("bob", StreamId::ZERO, 10).await.unwrap();
    let bodies: Vec<String> = stored.iter().map(body).collect();
    assert_eq!(bodies, ["x", "stored"], "the failed send stored nothing");
}
