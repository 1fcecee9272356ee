//! Behaviour checks shared by the engine test files: each check is a function taking
//! `Arc<dyn Engine>` and the sink it delivers to, so the same checks run against the
//! memory engine, a single Redis, a Redis Cluster and Sentinel.

#![allow(dead_code)] // each test file uses a different subset
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

pub mod single;

use std::sync::Arc;
use std::time::Duration;

use chat_engine::prelude::*;
pub use chat_engine::testing::RecordingSink;
use chat_engine::{InboxEvent, SendRequest};
use chat_protocol::{Message, StreamId};
use chat_testkit::eventually;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn req(from: &str, to: &str, body: &str) -> SendRequest {
    SendRequest {
        from: from.into(),
        to: to.into(),
        body: body.into(),
        nonce: None,
        nonce_ttl_secs: 60,
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        trace: None,
    }
}

pub async fn send(engine: &dyn Engine, from: &str, to: &str, body: &str) -> Message {
    engine.send(req(from, to, body)).await.unwrap().message
}

pub fn id(m: &Message) -> StreamId {
    StreamId::parse(&m.id).unwrap()
}

pub async fn unread(engine: &dyn Engine, user: &str, peer: &str) -> u64 {
    engine
        .conversations(user, 100)
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.peer.id == peer)
        .map(|c| c.unread)
        .unwrap_or(0)
}

pub fn assert_chain(events: &[InboxEvent]) {
    let mut prev = StreamId::ZERO;
    for e in events {
        assert_eq!(e.prev, prev, "prev chain");
        assert!(e.id > prev);
        prev = e.id;
    }
}

pub fn json(e: &InboxEvent) -> serde_json::Value {
    serde_json::from_slice(&e.json).unwrap()
}

/// Waits until `check` holds for what the sink recorded.
pub async fn until<F: Fn() -> bool>(what: &str, check: F) {
    eventually(what, WAIT, || {
        let ok = check();
        async move { ok.then_some(()) }
    })
    .await;
}

/// Publishes a marker to `user` and waits for it: everything published to that user
/// before it has been delivered.
pub async fn barrier(engine: &dyn Engine, sink: &RecordingSink, user: &str, tag: &str) {
    let marker = format!("{{\"type\":\"barrier\",\"tag\":\"{tag}\"}}");
    engine.publish_ephemeral(user, &marker).await.unwrap();
    until("barrier", || sink.ephemeral(user).contains(&marker)).await;
}

pub async fn unread_and_read_receipts(engine: Arc<dyn Engine>, sink: Arc<RecordingSink>) {
    let e = engine.as_ref();
    e.upsert_user("ann", "Ann").await.unwrap();
    e.upsert_user("ben", "Ben").await.unwrap();
    e.subscribe("ann").await.unwrap();
    e.subscribe("ben").await.unwrap();
    let mut sent = Vec::new();
    for i in 0..5 {
        sent.push(send(e, "ann", "ben", &format!("m{i}")).await);
    }
    assert_eq!(unread(e, "ben", "ann").await, 5);
    assert_eq!(unread(e, "ann", "ben").await, 0);

    let read = e
        .mark_read("ben", "ann", id(&sent[2]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.conversation, "dm:ann:ben");
    assert_eq!(read.up_to, sent[2].id);
    assert_eq!(unread(e, "ben", "ann").await, 2);
    assert_eq!(unread(e, "ann", "ben").await, 0);

    // The read event is in both inboxes, after the messages, chained.
    for user in ["ann", "ben"] {
        let events = e.read_inbox(user, StreamId::ZERO, 100).await.unwrap();
        assert_eq!(events.len(), 6, "{user}");
        assert_chain(&events);
        let v = json(&events[5]);
        assert_eq!(
            v,
            serde_json::json!({"type":"read","conversation":"dm:ann:ben","by":"ben","up_to":sent[2].id})
        );
        assert_eq!(
            String::from_utf8_lossy(&events[5].json),
            format!(
                r#"{{"type":"read","conversation":"dm:ann:ben","by":"ben","up_to":"{}"}}"#,
                sent[2].id
            )
        );
        // Delivered live too.
        until("read event live", || {
            sink.inbox_json(user)
                .iter()
                .any(|j| j.contains("\"type\":\"read\""))
        })
        .await;
    }

    // Never backwards, never twice, nothing for one's own messages.
    assert_eq!(e.mark_read("ben", "ann", id(&sent[1])).await.unwrap(), None);
    assert_eq!(e.mark_read("ben", "ann", id(&sent[2])).await.unwrap(), None);
    assert_eq!(e.mark_read("ann", "ben", id(&sent[4])).await.unwrap(), None);
    // Before the first message: nothing to read.
    assert_eq!(
        e.mark_read("ben", "ann", StreamId { ms: 1, seq: 0 })
            .await
            .unwrap(),
        None
    );
    // An empty conversation: nothing.
    assert_eq!(e.mark_read("ann", "zed", id(&sent[4])).await.unwrap(), None);

    // Beyond the last message: clamped to it.
    let beyond = StreamId {
        ms: id(&sent[4]).ms + 60_000,
        seq: 0,
    };
    let read = e.mark_read("ben", "ann", beyond).await.unwrap().unwrap();
    assert_eq!(read.up_to, sent[4].id);
    assert_eq!(unread(e, "ben", "ann").await, 0);
    for user in ["ann", "ben"] {
        let events = e.read_inbox(user, StreamId::ZERO, 100).await.unwrap();
        assert_eq!(events.len(), 7, "{user}");
        assert_chain(&events);
        assert_eq!(json(&events[6])["up_to"], sent[4].id.as_str());
    }

    // A reply from ben: ann has one unread, ben none (his own message).
    send(e, "ben", "ann", "reply").await;
    assert_eq!(unread(e, "ann", "ben").await, 1);
    assert_eq!(unread(e, "ben", "ann").await, 0);
}

pub async fn concurrent_sends_and_reads_stay_exact(
    engine: Arc<dyn Engine>,
    _sink: Arc<RecordingSink>,
) {
    let mut tasks = Vec::new();
    for (me, peer) in [("cat", "dan"), ("dan", "cat")] {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            let mut last_seen = None;
            for i in 0..40 {
                let m = send(engine.as_ref(), me, peer, &format!("{me}{i}")).await;
                if i % 3 == 0 {
                    // Read up to whatever the peer sent last (or our own last message).
                    let (history, _) = engine.history(me, peer, None, 1).await.unwrap();
                    last_seen = history.last().map(id).or(Some(id(&m)));
                    let _ = engine
                        .mark_read(me, peer, last_seen.unwrap())
                        .await
                        .unwrap();
                }
            }
            last_seen
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (history, more) = engine.history("cat", "dan", None, 100).await.unwrap();
    assert!(!more);
    assert_eq!(history.len(), 80);
    for (me, peer) in [("cat", "dan"), ("dan", "cat")] {
        let list = engine.conversations(me, 10).await.unwrap();
        assert_eq!(list.len(), 1);
        let c = &list[0];
        // unread = s − r: the messages after my marker (all from the peer).
        let marker = c.read_up_to.clone().unwrap();
        let pos = history.iter().position(|m| m.id == marker).unwrap();
        let after = &history[pos + 1..];
        assert!(after.iter().all(|m| m.from == peer), "{me}");
        assert_eq!(c.unread, after.len() as u64, "{me}");
        // My marker is at or after my last own message.
        let my_last = history.iter().rposition(|m| m.from == me).unwrap();
        assert!(pos >= my_last, "{me}");
    }
}

pub async fn conversation_list(engine: Arc<dyn Engine>, _sink: Arc<RecordingSink>) {
    let e = engine.as_ref();
    for (id, name) in [("eve", "Eve"), ("fay", "Fay"), ("gus", "Gus")] {
        e.upsert_user(id, name).await.unwrap();
    }
    assert!(e.conversations("eve", 10).await.unwrap().is_empty());
    let to_fay = send(e, "eve", "fay", "hi fay").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let to_gus = send(e, "eve", "gus", "hi gus").await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let list = e.conversations("eve", 10).await.unwrap();
    let peers: Vec<&str> = list.iter().map(|c| c.peer.id.as_str()).collect();
    assert_eq!(peers, ["gus", "fay"]);
    assert_eq!(list[0].conversation, "dm:eve:gus");
    assert_eq!(list[0].peer.name, "Gus");
    assert_eq!(list[0].last.as_ref(), Some(&to_gus));
    assert_eq!(list[0].unread, 0);
    assert_eq!(list[0].read_up_to.as_deref(), Some(to_gus.id.as_str()));
    assert_eq!(list[0].peer_read_up_to, None);

    // Fay answers: her conversation comes first, one unread.
    let from_fay = send(e, "fay", "eve", "hello eve").await;
    let list = e.conversations("eve", 10).await.unwrap();
    let peers: Vec<&str> = list.iter().map(|c| c.peer.id.as_str()).collect();
    assert_eq!(peers, ["fay", "gus"]);
    let fay = &list[0];
    assert_eq!(fay.conversation, "dm:eve:fay");
    assert_eq!(fay.last.as_ref(), Some(&from_fay));
    assert_eq!(fay.unread, 1);
    assert_eq!(fay.read_up_to.as_deref(), Some(to_fay.id.as_str()));
    assert_eq!(fay.peer_read_up_to.as_deref(), Some(from_fay.id.as_str()));
    // Seen from Fay's side.
    let list = e.conversations("fay", 10).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].peer.name, "Eve");
    assert_eq!(list[0].unread, 0);
    assert_eq!(list[0].peer_read_up_to.as_deref(), Some(to_fay.id.as_str()));

    // Limit.
    assert_eq!(e.conversations("eve", 1).await.unwrap().len(), 1);
    assert!(e.conversations("eve", 0).await.unwrap().is_empty());

    // A cleared conversation stays listed, empty.
    e.clear_conversation("fay", "eve").await.unwrap();
    let list = e.conversations("eve", 10).await.unwrap();
    assert_eq!(list.len(), 2);
    let fay = list.iter().find(|c| c.peer.id == "fay").unwrap();
    assert_eq!(fay.last, None);
    assert_eq!(fay.unread, 0);
    assert_eq!(fay.read_up_to, None);
    assert_eq!(fay.peer_read_up_to, None);
    // And works again afterwards.
    send(e, "fay", "eve", "again").await;
    assert_eq!(unread(e, "eve", "fay").await, 1);
    assert_eq!(unread(e, "fay", "eve").await, 0);
}

pub async fn presence_transitions(engine: Arc<dyn Engine>, sink: Arc<RecordingSink>) {
    let e = engine.as_ref();
    e.upsert_user("hal", "Hal").await.unwrap();
    e.upsert_user("ivy", "Ivy").await.unwrap();
    send(e, "hal", "ivy", "hi").await;
    e.subscribe("ivy").await.unwrap();
    let who = ["hal".to_string(), "nobody".to_string()];
    let before = e.presence(&who).await.unwrap();
    assert!(!before[0].online && !before[1].online);
    assert_eq!(before[1].last_seen_at, None);

    assert_eq!(e.connection_opened("hal", "n1").await.unwrap(), 1);
    assert_eq!(e.connection_opened("hal", "n2").await.unwrap(), 2);
    let online = r#"{"type":"presence","user":"hal","online":true}"#;
    until("online frame to the partner", || {
        sink.ephemeral("ivy").iter().any(|f| f == online)
    })
    .await;
    until("online frame on the presence channel", || {
        sink.presence_of("hal") == [online]
    })
    .await;
    assert!(e.presence(&who).await.unwrap()[0].online);

    // One of two closes: still online, nothing announced.
    e.connection_closed("hal", "n1").await.unwrap();
    barrier(e, &sink, "ivy", "1").await;
    let info = &e.presence(&who).await.unwrap()[0];
    assert!(info.online);
    assert_eq!(info.last_seen_at, None);
    let presence_frames = |s: &RecordingSink| {
        s.ephemeral("ivy")
            .into_iter()
            .filter(|f| f.contains("presence"))
            .count()
    };
    assert_eq!(presence_frames(&sink), 1);
    assert_eq!(sink.presence_of("hal").len(), 1);

    // The last close: offline, with last_seen_at, to the partner and the watchers.
    e.connection_closed("hal", "n2").await.unwrap();
    until("offline frame", || presence_frames(&sink) == 2).await;
    let frames = sink.ephemeral("ivy");
    let offline = frames.iter().rfind(|f| f.contains("presence")).unwrap();
    let v: serde_json::Value = serde_json::from_str(offline).unwrap();
    assert_eq!(v["type"], "presence");
    assert_eq!(v["user"], "hal");
    assert_eq!(v["online"], false);
    let seen = v["last_seen_at"].as_str().unwrap().to_string();
    assert!(seen.ends_with('Z') && seen.len() == 24, "{seen}");
    until("offline on the presence channel", || {
        sink.presence_of("hal").len() == 2
    })
    .await;
    assert_eq!(&sink.presence_of("hal")[1], offline);
    let info = &e.presence(&who).await.unwrap()[0];
    assert!(!info.online);
    assert_eq!(info.last_seen_at.as_deref(), Some(seen.as_str()));

    // A stray close changes nothing; a new open goes online again.
    e.connection_closed("hal", "n1").await.unwrap();
    assert_eq!(e.connection_opened("hal", "n1").await.unwrap(), 1);
    until("online again", || presence_frames(&sink) == 3).await;
    assert_eq!(e.heartbeat("n1", 15).await.unwrap(), ());
    assert_eq!(e.reap_dead_nodes().await.unwrap(), 0);

    // A node that lost count (closes it could not report) drops its whole count:
    // offline once, however many it had counted; dropping again changes nothing.
    assert_eq!(e.connection_opened("hal", "n1").await.unwrap(), 2);
    e.drop_presence("hal", "n1").await.unwrap();
    until("offline after the drop", || presence_frames(&sink) == 4).await;
    assert!(!e.presence(&who).await.unwrap()[0].online);
    e.drop_presence("hal", "n1").await.unwrap();
    assert_eq!(e.connection_opened("hal", "n1").await.unwrap(), 1);
    until("online after the drop", || presence_frames(&sink) == 5).await;
    let frames = sink.ephemeral("ivy");
    let presence: Vec<&String> = frames.iter().filter(|f| f.contains("presence")).collect();
    assert!(presence[3].contains("\"online\":false") && presence[4] == online);
}

pub async fn directory_search(engine: Arc<dyn Engine>, _sink: Arc<RecordingSink>) {
    let e = engine.as_ref();
    for (id, name) in [
        ("d-a", "Alice Smith"),
        ("d-b", "alice jones"),
        ("d-c", "Albert"),
        ("d-d", "Bob"),
        ("d-e", "ÉLODIE"),
    ] {
        e.upsert_user(id, name).await.unwrap();
    }
    let ids = |users: Vec<chat_protocol::User>| -> Vec<String> {
        users.into_iter().map(|u| u.id).collect()
    };
    let found = e.search_users("AL", 10).await.unwrap();
    assert_eq!(ids(found.clone()), ["d-c", "d-b", "d-a"]);
    assert_eq!(found[2].name, "Alice Smith");
    assert_eq!(ids(e.search_users("al", 2).await.unwrap()), ["d-c", "d-b"]);
    assert_eq!(ids(e.search_users("alice S", 10).await.unwrap()), ["d-a"]);
    assert_eq!(ids(e.search_users("élo", 10).await.unwrap()), ["d-e"]);
    assert!(e.search_users("x", 10).await.unwrap().is_empty());
    assert_eq!(e.search_users("", 3).await.unwrap().len(), 3);

    // Renaming moves the user in the index.
    assert!(e.upsert_user("d-a", "Zed").await.unwrap());
    assert_eq!(ids(e.search_users("alice", 10).await.unwrap()), ["d-b"]);
    let zed = e.search_users("z", 10).await.unwrap();
    assert_eq!(ids(zed.clone()), ["d-a"]);
    assert_eq!(zed[0].name, "Zed");
    // Guests are indexed too.
    let guest = e.create_guest("Alvin").await.unwrap();
    assert_eq!(ids(e.search_users("ALV", 10).await.unwrap()), [guest.id]);
}

pub async fn disconnect_reaches_the_sink(engine: Arc<dyn Engine>, sink: Arc<RecordingSink>) {
    let e = engine.as_ref();
    e.subscribe("jay").await.unwrap();
    e.disconnect_user("jay").await.unwrap();
    e.disconnect_user("kim").await.unwrap();
    until("disconnect", || sink.disconnects("jay") == 1).await;
    barrier(e, &sink, "jay", "d").await;
    assert_eq!(sink.disconnects("kim"), 0);
    assert_eq!(sink.disconnects("jay"), 1);
}

/// A clear tells both participants (a stored `cleared` event, live and in the inbox),
/// and no read of the inbox returns the cleared messages again, from any cursor,
/// while the `prev` chain still proves every read contiguous.
pub async fn clear_hides_messages_from_recovery(engine: Arc<dyn Engine>, sink: Arc<RecordingSink>) {
    let e = engine.as_ref();
    let (kim, lou, max) = ("clr-kim", "clr-lou", "clr-max");
    e.subscribe(kim).await.unwrap();
    e.subscribe(lou).await.unwrap();
    let before = send(e, kim, max, "to max, kept").await;
    let m1 = send(e, kim, lou, "one").await;
    let m2 = send(e, lou, kim, "two").await;
    let other = send(e, max, kim, "from max, kept").await;
    let start = e.read_inbox(kim, StreamId::ZERO, 100).await.unwrap();
    assert_eq!(start.len(), 4);
    assert_eq!(json(&start[1])["message"]["id"], m1.id.as_str());
    let cursor_m1 = start[1].id; // kim saw m1, not m2

    let up_to = e.clear_conversation(lou, kim).await.unwrap();
    assert_eq!(up_to, Some(id(&m2)));
    assert!(e.history(kim, lou, None, 10).await.unwrap().0.is_empty());
    let cleared = serde_json::json!({
        "type": "cleared", "conversation": "dm:clr-kim:clr-lou", "up_to": m2.id,
    });
    for user in [kim, lou] {
        until("cleared delivered live", || {
            sink.inbox_json(user)
                .iter()
                .any(|j| serde_json::from_str::<serde_json::Value>(j).unwrap() == cleared)
        })
        .await;
    }

    // From the start: the cleared messages are gone, the rest chains.
    let all = e.read_inbox(kim, StreamId::ZERO, 100).await.unwrap();
    let shown: Vec<serde_json::Value> = all.iter().map(json).collect();
    assert_eq!(shown.len(), 3, "{shown:?}");
    assert_eq!(shown[0]["message"]["id"], before.id.as_str());
    assert_eq!(shown[1]["message"]["id"], other.id.as_str());
    assert_eq!(shown[2], cleared);
    assert_chain(&all);
    // From a cursor before the cleared messages: proven (first prev = the cursor).
    let page = e.read_inbox(kim, start[0].id, 100).await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].prev, start[0].id);
    assert_eq!(page[1].prev, page[0].id);
    assert_eq!(json(&page[1]), cleared);
    // From a cursor that is itself a cleared message the client saw live: proven too.
    let page = e.read_inbox(kim, cursor_m1, 100).await.unwrap();
    assert_eq!(
        page.len(),
        2,
        "{:?}",
        page.iter().map(json).collect::<Vec<_>>()
    );
    assert_eq!(page[0].prev, cursor_m1);
    assert_eq!(json(&page[0])["message"]["id"], other.id.as_str());
    // Paging with small counts skips the same messages.
    let mut after = StreamId::ZERO;
    let mut paged = Vec::new();
    loop {
        let page = e.read_inbox(kim, after, 1).await.unwrap();
        let Some(event) = page.into_iter().next() else {
            break;
        };
        after = event.id;
        paged.push(event);
    }
    assert_eq!(paged, all);
    // The other participant too.
    let lou_all = e.read_inbox(lou, StreamId::ZERO, 100).await.unwrap();
    assert_eq!(lou_all.len(), 1);
    assert_eq!(json(&lou_all[0]), cleared);
    assert_eq!(lou_all[0].prev, StreamId::ZERO);

    // Later messages of the conversation are shown; a clear of nothing tells no one.
    let m3 = send(e, lou, kim, "after the clear").await;
    let tail = e.read_inbox(kim, all[2].id, 100).await.unwrap();
    assert_eq!(tail.len(), 1);
    assert_eq!(json(&tail[0])["message"]["id"], m3.id.as_str());
    assert_eq!(tail[0].prev, all[2].id);
    assert_eq!(e.clear_conversation("clr-x", "clr-y").await.unwrap(), None);
    assert!(e
        .read_inbox("clr-x", StreamId::ZERO, 10)
        .await
        .unwrap()
        .is_empty());
}

/// The retention [`growth_is_bounded`] expects: 3 conversations per user, presence
/// told to the 2 most recent partners.
pub fn bounded_retention() -> chat_engine::Retention {
    chat_engine::Retention {
        convs_max: 3,
        presence_fanout_max: 2,
        ..chat_engine::Retention::default()
    }
}

/// With [`bounded_retention`]: a user's conversation list keeps the 3 most recent
/// conversations, and a presence transition reaches only the 2 most recent partners,
/// however many partners there were.
pub async fn growth_is_bounded(engine: Arc<dyn Engine>, sink: Arc<RecordingSink>) {
    let e = engine.as_ref();
    let user = "gb-user";
    let peers: Vec<String> = (1..=5).map(|i| format!("gb-p{i}")).collect();
    for peer in &peers {
        e.subscribe(peer).await.unwrap();
        send(e, user, peer, "hi").await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let list: Vec<String> = e
        .conversations(user, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.peer.id)
        .collect();
    assert_eq!(list, ["gb-p5", "gb-p4", "gb-p3"]);
    // An old conversation that gets a new message comes back (the oldest left goes).
    send(e, &peers[0], user, "back").await;
    let list: Vec<String> = e
        .conversations(user, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.peer.id)
        .collect();
    assert_eq!(list, ["gb-p1", "gb-p5", "gb-p4"]);
    // The peers' own lists are theirs.
    assert_eq!(e.conversations("gb-p3", 10).await.unwrap().len(), 1);

    e.connection_opened(user, "n1").await.unwrap();
    let told = |peer: &str| {
        sink.ephemeral(peer)
            .iter()
            .any(|f| f.contains("\"presence\"") && f.contains(user))
    };
    until("the 2 most recent partners are told", || {
        told("gb-p1") && told("gb-p5")
    })
    .await;
    for peer in ["gb-p4", "gb-p3", "gb-p2"] {
        barrier(e, &sink, peer, "gb").await;
        assert!(!told(peer), "{peer} is beyond the fan-out bound");
    }
    e.connection_closed(user, "n1").await.unwrap();
}

/// With `retention.guest_ttl_secs` = 1: a guest who does not sign in for a second is
/// gone (record, directory entry, sessions); each sign-in pushes that back.
pub async fn guests_expire_after_inactivity(engine: Arc<dyn Engine>, _sink: Arc<RecordingSink>) {
    let e = engine.as_ref();
    let kept = e.create_guest("Keptguest").await.unwrap();
    let gone = e.create_guest("Goneguest").await.unwrap();
    let session = e.create_session(&kept.id, None, 60).await.unwrap();
    let gone_session = e.create_session(&gone.id, None, 60).await.unwrap();
    // Kept signs in every 400 ms; Gone never again.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(e.resume_session(&session, 60).await.unwrap().is_some());
    }
    assert_eq!(e.get_user(&kept.id).await.unwrap(), Some(kept.clone()));
    assert_eq!(e.get_user(&gone.id).await.unwrap(), None, "expired");
    assert!(e.resume_session(&gone_session, 60).await.unwrap().is_none());
    // A later guest (or a reaping round) sweeps the directory.
    e.create_guest("Otherguest").await.unwrap();
    e.reap_dead_nodes().await.unwrap();
    let found: Vec<String> = e
        .search_users("", 100)
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert!(found.contains(&kept.id), "{found:?}");
    assert!(!found.contains(&gone.id), "{found:?}");
    // Token users never expire.
    e.upsert_user("gx-token", "Token").await.unwrap();
    let s = e.create_session("gx-token", None, 60).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(e.get_user("gx-token").await.unwrap().is_some());
    assert!(e.resume_session(&s, 60).await.unwrap().is_some());
}

/// A session keeps the JWT `rooms` claim it was created with, on every resume: absent
/// (any room), empty (no room) and a list stay distinct; revoking drops them all.
pub async fn sessions_keep_the_rooms_claim(engine: Arc<dyn Engine>, _sink: Arc<RecordingSink>) {
    let e = engine.as_ref();
    let user = "claim-user.1@x";
    e.upsert_user(user, "Claimed").await.unwrap();
    let list = vec!["lobby".to_string(), "team_2-a".to_string()];
    let any = vec!["*".to_string()];
    let odd = vec!["Not A Room, \"quoted\"".to_string()];
    let claims: [Option<&[String]>; 5] = [None, Some(&[]), Some(&list), Some(&any), Some(&odd)];
    let mut sessions = Vec::new();
    for claim in claims {
        sessions.push(e.create_session(user, claim, 60).await.unwrap());
    }
    // Twice: a resume (which slides the expiry) keeps the claim for the next one.
    for _ in 0..2 {
        for (session, claim) in sessions.iter().zip(claims) {
            let resumed = e.resume_session(session, 60).await.unwrap().unwrap();
            assert_eq!(resumed.user.id, user);
            assert_eq!(resumed.user.name, "Claimed");
            assert_eq!(resumed.rooms.as_deref(), claim, "claim {claim:?}");
        }
    }
    e.revoke_sessions(user).await.unwrap();
    for session in &sessions {
        assert!(e.resume_session(session, 60).await.unwrap().is_none());
    }
}

/// `revoke_session` (a `logout`) ends that one session; the user's others live on,
/// and revoking it again, or an unknown session, is no error.
pub async fn revoking_one_session_keeps_the_others(
    engine: Arc<dyn Engine>,
    _sink: Arc<RecordingSink>,
) {
    let e = engine.as_ref();
    let user = "logout-user";
    e.upsert_user(user, "Leaving").await.unwrap();
    let ended = e.create_session(user, None, 60).await.unwrap();
    let kept = e.create_session(user, None, 60).await.unwrap();
    e.revoke_session(&ended).await.unwrap();
    assert!(e.resume_session(&ended, 60).await.unwrap().is_none());
    assert!(e.resume_session(&kept, 60).await.unwrap().is_some());
    e.revoke_session(&ended).await.unwrap();
    e.revoke_session("unknown-session").await.unwrap();
    // The revoked one left the user's set: revoking them all still ends the other.
    e.revoke_sessions(user).await.unwrap();
    assert!(e.resume_session(&kept, 60).await.unwrap().is_none());
}
