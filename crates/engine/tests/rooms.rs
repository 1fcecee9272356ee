//! Rooms: the same behaviour checks on the memory engine, a single Redis and a Redis
//! Cluster (each check takes `Arc<dyn Engine>` and the sink it delivers to), plus the
//! Redis promise that the work per room message does not grow with the members.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::Duration;

use chat_engine::memory::MemoryEngine;
use chat_engine::prelude::*;
use chat_engine::redis::{RedisConfig, RedisEngine};
use chat_engine::testing::RecordingSink;
use chat_engine::{JoinOutcome, Retention, RoomEvent, RoomLimits, RoomSendRequest};
use chat_protocol::{StreamId, User};
use chat_testkit::{eventually, RedisCluster, RedisServer};

const WAIT: Duration = Duration::from_secs(10);

const LIMITS: RoomLimits = RoomLimits {
    rooms_per_user: 100,
    members_per_room: 1000,
};

fn user(id: &str) -> User {
    User {
        id: id.into(),
        name: format!("{id} name"),
    }
}

fn msg(room: &str, from: &str, body: &str, nonce: Option<&str>) -> RoomSendRequest {
    RoomSendRequest {
        room: room.into(),
        from: from.into(),
        body: body.into(),
        nonce: nonce.map(str::to_string),
        nonce_ttl_secs: 60,
        sent_at: "2026-01-01T00:00:00.000Z".into(),
    }
}

async fn join(engine: &dyn Engine, room: &str, who: &str) -> JoinOutcome {
    engine
        .join_room(room, &user(who), None, LIMITS)
        .await
        .unwrap()
}

fn json(e: &RoomEvent) -> serde_json::Value {
    serde_json::from_slice(&e.json).unwrap()
}

/// Checks that events chain: each `prev` is the id before it.
fn assert_chain(events: &[RoomEvent], from: StreamId) {
    let mut prev = from;
    for e in events {
        assert_eq!(e.prev, prev, "prev chain");
        assert!(e.id > prev);
        prev = e.id;
    }
}

/// Joins, leaves, membership, the roster and the `member` events.
async fn membership(engine: Arc<dyn Engine>, sink: Arc<RecordingSink>, p: &str) {
    let room = format!("{p}-lobby");
    let (a, b, c) = (format!("{p}a"), format!("{p}b"), format!("{p}c"));
    engine.subscribe(&b).await.unwrap();
    engine.subscribe_room(&room).await.unwrap();
    assert_eq!(engine.room(&room).await.unwrap(), None);
    let JoinOutcome::Joined {
        room: state,
        changed,
    } = engine
        .join_room(&room, &user(&a), Some("The lobby"), LIMITS)
        .await
        .unwrap()
    else {
        panic!("joined");
    };
    assert!(changed);
    assert_eq!(state.name, "The lobby");
    assert_eq!(state.member_count, 1);
    // The name counts only for the join that creates the room.
    let JoinOutcome::Joined { room: state, .. } = engine
        .join_room(&room, &user(&b), Some("Other"), LIMITS)
        .await
        .unwrap()
    else {
        panic!("joined");
    };
    assert_eq!((state.name.as_str(), state.member_count), ("The lobby", 2));
    let again = join(engine.as_ref(), &room, &b).await;
    assert!(matches!(again, JoinOutcome::Joined { changed: false, .. }));
    join(engine.as_ref(), &room, &c).await;
    assert!(engine.is_member(&room, &a).await.unwrap());
    assert_eq!(engine.user_rooms(&b).await.unwrap(), vec![room.clone()]);

    let (page, more) = engine.room_members(&room, None, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|u| u.id.clone()).collect::<Vec<_>>(),
        [a.clone(), b.clone()]
    );
    assert_eq!(page[0].name, format!("{a} name"));
    assert!(more);
    let (page, more) = engine.room_members(&room, Some(&b), 2).await.unwrap();
    assert_eq!(
        page.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(),
        [c.as_str()]
    );
    assert!(!more);

    assert!(engine.leave_room(&room, &user(&b)).await.unwrap());
    assert!(!engine.leave_room(&room, &user(&b)).await.unwrap());
    assert!(!engine.is_member(&room, &b).await.unwrap());
    assert!(engine.user_rooms(&b).await.unwrap().is_empty());
    assert_eq!(engine.room(&room).await.unwrap().unwrap().member_count, 2);

    // The stream: joined a, b, c, left b, chained.
    let events = engine.read_room(&room, StreamId::ZERO, 100).await.unwrap();
    assert_chain(&events, StreamId::ZERO);
    let kinds: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            let j = json(e);
            assert_eq!(j["type"], "member");
            assert_eq!(j["id"], e.id.to_string());
            (
                j["event"].as_str().unwrap().into(),
                j["user"]["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("joined".to_string(), a.clone()),
            ("joined".into(), b.clone()),
            ("joined".into(), c.clone()),
            ("left".into(), b.clone())
        ]
    );
    assert_eq!(events[3].change, Some((b.clone(), false)));
    assert_eq!(engine.room_head(&room).await.unwrap(), events[3].id);
    // Live: the room's events once each, and b's own membership changes to b.
    let live = eventually("room events delivered", WAIT, || {
        let got = sink.room(&room);
        async move { (got.len() == 4).then_some(got) }
    })
    .await;
    assert_eq!(
        live.iter().map(|e| e.id).collect::<Vec<_>>(),
        events.iter().map(|e| e.id).collect::<Vec<_>>()
    );
    let notices = eventually("b's member notices", WAIT, || {
        let got = sink.notices(&b);
        async move { (got.len() == 2).then_some(got) }
    })
    .await;
    assert_eq!(notices[0].id, events[1].id);
    assert_eq!(notices[1].id, events[3].id);
    assert_eq!(notices[1].json, events[3].json);
    assert!(sink.notices(&a).is_empty(), "a is not subscribed here");
}

/// Messages: members only, nonces, history past member events, unread and the
/// rooms list.
async fn messages(engine: Arc<dyn Engine>, sink: Arc<RecordingSink>, p: &str) {
    let (room, other) = (format!("{p}-team"), format!("{p}-other"));
    let (a, b, outsider) = (format!("{p}a"), format!("{p}b"), format!("{p}x"));
    engine.subscribe_room(&room).await.unwrap();
    join(engine.as_ref(), &room, &a).await;
    join(engine.as_ref(), &other, &b).await;
    let head = engine.room_head(&room).await.unwrap();
    // Not a member: nothing stored.
    assert!(engine
        .room_send(msg(&room, &outsider, "no", None))
        .await
        .unwrap()
        .is_none());
    assert_eq!(engine.room_head(&room).await.unwrap(), head);

    let first = engine
        .room_send(msg(&room, &a, "one", Some("n1")))
        .await
        .unwrap()
        .unwrap();
    assert!(!first.duplicate);
    let m = &first.message;
    assert_eq!(m.room.as_deref(), Some(room.as_str()));
    assert_eq!(m.conversation, format!("room:{room}"));
    assert_eq!(m.to, "");
    let retry = engine
        .room_send(msg(&room, &a, "changed", Some("n1")))
        .await
        .unwrap()
        .unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.message, first.message, "a retry returns the original");

    join(engine.as_ref(), &room, &b).await;
    let mut sent = vec![first.message.clone()];
    for i in 0..5 {
        let from = if i % 2 == 0 { &b } else { &a };
        let out = engine
            .room_send(msg(&room, from, &format!("m{i}"), None))
            .await
            .unwrap()
            .unwrap();
        sent.push(out.message);
    }
    // History: messages only, ascending, paged.
    let (page, more) = engine.room_history(&room, None, 4).await.unwrap();
    assert_eq!(page, sent[2..]);
    assert!(more);
    let before = StreamId::parse(&page[0].id).unwrap();
    let (page, more) = engine.room_history(&room, Some(before), 4).await.unwrap();
    assert_eq!(page, sent[..2]);
    assert!(!more);
    let (page, _) = engine
        .room_history(&room, Some(StreamId::ZERO), 4)
        .await
        .unwrap();
    assert!(page.is_empty());

    // The live message frame is the stored one, published once.
    let live = eventually("room messages delivered", WAIT, || {
        let got: Vec<_> = sink
            .room(&room)
            .into_iter()
            .filter(|e| e.change.is_none())
            .collect();
        async move { (got.len() == 6).then_some(got) }
    })
    .await;
    let frame = json(&live[0]);
    assert_eq!(frame["type"], "message");
    assert_eq!(
        serde_json::from_value::<chat_protocol::Message>(frame["message"].clone()).unwrap(),
        sent[0]
    );

    // Unread: b joined after the first message and sent m0, m2, m4 (read up to m4),
    // a sent m1 and m3: b has 0 unread; a's marker is at m3, so m4 is unread.
    let rooms_of = |who: String| {
        let engine = engine.clone();
        async move { engine.room_summaries(&who).await.unwrap() }
    };
    let b_rooms = rooms_of(b.clone()).await;
    assert_eq!(b_rooms.len(), 2);
    assert_eq!(b_rooms[0].room.id, room, "newest activity first");
    assert_eq!(b_rooms[0].unread, 0);
    assert_eq!(b_rooms[0].room.last.as_ref(), sent.last());
    let a_rooms = rooms_of(a.clone()).await;
    assert_eq!(a_rooms[0].unread, 1);
    let up_to = StreamId::parse(&sent[5].id).unwrap();
    assert_eq!(
        engine.room_mark_read(&room, &a, up_to).await.unwrap(),
        Some(sent[5].id.clone())
    );
    assert_eq!(engine.room_mark_read(&room, &a, up_to).await.unwrap(), None);
    assert_eq!(rooms_of(a.clone()).await[0].unread, 0);
    assert_eq!(
        engine
            .room_mark_read(&room, &outsider, up_to)
            .await
            .unwrap(),
        None
    );
}

/// Recovery reads: events after an id, chained from it.
async fn recovery_reads(engine: Arc<dyn Engine>, _sink: Arc<RecordingSink>, p: &str) {
    let room = format!("{p}-rec");
    let a = format!("{p}a");
    join(engine.as_ref(), &room, &a).await;
    for i in 0..10 {
        engine
            .room_send(msg(&room, &a, &format!("r{i}"), None))
            .await
            .unwrap();
    }
    let all = engine.read_room(&room, StreamId::ZERO, 100).await.unwrap();
    assert_eq!(all.len(), 11);
    let after = all[4].id;
    let rest = engine.read_room(&room, after, 3).await.unwrap();
    assert_eq!(rest.len(), 3);
    assert_chain(&rest, after);
    assert_eq!(rest, all[5..8]);
}

/// Whether a client whose last room event is `cursor` is recovered, decided as the
/// gateway does (`recover_rooms`): the first event after it must chain to it (or there
/// is none and it is the head). Returns the events replayed when it is.
async fn recovers(engine: &dyn Engine, room: &str, cursor: StreamId) -> Option<Vec<RoomEvent>> {
    let head = engine.room_head(room).await.unwrap();
    if cursor > head {
        return None;
    }
    let events = engine.read_room(room, cursor, 10_000).await.unwrap();
    let proven = match events.first() {
        Some(first) => first.prev == cursor,
        None => cursor == head,
    };
    proven.then_some(events)
}

/// Old room messages sent before a pause.
const OLD: usize = 250;

/// With `history_max_age_secs` 1 ([`max_age`]): events older than that leave the
/// room's stream at the next append, from the oldest end, and history and recovery
/// keep the same ones. Redis trims `MINID ~` (whole stream nodes only), so more old
/// messages are sent than a few nodes hold and the checks allow some to stay.
async fn age_retention(engine: Arc<dyn Engine>, _sink: Arc<RecordingSink>, p: &str) {
    let room = format!("{p}-aged");
    let a = format!("{p}a");
    let e = engine.as_ref();
    join(e, &room, &a).await;
    let joined = e.room_head(&room).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..OLD {
        let out = e.room_send(msg(&room, &a, &format!("old{i}"), None)).await;
        sent.push(out.unwrap().unwrap().message);
    }
    let first_old = StreamId::parse(&sent[0].id).unwrap();
    // Past the max age: the next append trims everything sent so far that it can.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..3 {
        let out = e.room_send(msg(&room, &a, &format!("new{i}"), None)).await;
        sent.push(out.unwrap().unwrap().message);
    }

    // History: the newest messages, every recent one, the oldest ones gone.
    let (history, more) = e.room_history(&room, None, 1000).await.unwrap();
    assert!(!more);
    assert_eq!(history, sent[sent.len() - history.len()..], "a suffix");
    assert!(history.len() >= 3, "messages within the age stay");
    assert!(
        history.len() <= OLD + 3 - 100,
        "old messages left the history: kept {}",
        history.len()
    );

    // Recovery: the stream holds the same messages as the history.
    let kept = e.read_room(&room, StreamId::ZERO, 10_000).await.unwrap();
    assert_chain(&kept[1..], kept[0].id);
    let kept_messages: Vec<String> = kept
        .iter()
        .filter(|ev| ev.change.is_none())
        .map(|ev| json(ev)["message"]["id"].as_str().unwrap().to_string())
        .collect();
    let history_ids: Vec<String> = history.iter().map(|m| m.id.clone()).collect();
    assert_eq!(kept_messages, history_ids);
    // A cursor before what is kept (the join, the first old message) is not
    // recovered; the id right before the oldest kept event is (its entry is trimmed,
    // but nothing after it is missing), and so is every kept one.
    assert!(kept[0].prev > first_old, "the oldest events were trimmed");
    assert_eq!(recovers(e, &room, joined).await, None);
    assert_eq!(recovers(e, &room, first_old).await, None);
    let replay = recovers(e, &room, kept[0].prev).await;
    assert_eq!(
        replay.as_deref(),
        Some(&kept[..]),
        "exact after the trimmed cursor"
    );
    // Redis may keep the newest old messages (a partly old stream node): a cursor on
    // the last of them still gets exactly the recent ones.
    let newest_old = StreamId::parse(&sent[OLD - 1].id).unwrap();
    if kept[0].id <= newest_old {
        let replay = recovers(e, &room, newest_old).await.unwrap();
        assert_eq!(replay.len(), 3);
    }
    assert_eq!(
        e.room_head(&room).await.unwrap(),
        StreamId::parse(&sent.last().unwrap().id).unwrap()
    );
}

/// Retention with `history_max_age_secs` 1 and `history_max_len` `max_len` (0: the
/// age alone; otherwise both limits, which Redis applies with two trims).
fn max_age(max_len: u64) -> Retention {
    Retention {
        history_max_len: max_len,
        history_max_age_secs: 1,
        ..Retention::default()
    }
}

/// The caps: members per room and rooms per user.
async fn caps(engine: Arc<dyn Engine>, _sink: Arc<RecordingSink>, p: &str) {
    let limits = RoomLimits {
        rooms_per_user: 2,
        members_per_room: 2,
    };
    let room = format!("{p}-small");
    for who in ["a", "b"] {
        let r = engine
            .join_room(&room, &user(&format!("{p}{who}")), None, limits)
            .await
            .unwrap();
        assert!(matches!(r, JoinOutcome::Joined { .. }));
    }
    let full = engine
        .join_room(&room, &user(&format!("{p}c")), None, limits)
        .await
        .unwrap();
    assert_eq!(full, JoinOutcome::RoomFull);
    assert!(!engine.is_member(&room, &format!("{p}c")).await.unwrap());
    // A member joining again is not refused.
    let again = engine
        .join_room(&room, &user(&format!("{p}a")), None, limits)
        .await
        .unwrap();
    assert!(matches!(again, JoinOutcome::Joined { changed: false, .. }));
    let a = user(&format!("{p}a"));
    let second = engine
        .join_room(&format!("{p}-second"), &a, None, limits)
        .await
        .unwrap();
    assert!(matches!(second, JoinOutcome::Joined { .. }));
    let third = engine
        .join_room(&format!("{p}-third"), &a, None, limits)
        .await
        .unwrap();
    assert_eq!(third, JoinOutcome::TooManyRooms);
    assert_eq!(engine.room(&format!("{p}-third")).await.unwrap(), None);

    // Joins made at the same moment cannot pass the cap together, and a refused
    // join leaves nothing listed.
    let racer = user(&format!("{p}racer"));
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let (engine, racer) = (engine.clone(), racer.clone());
            let room = format!("{p}-race{i}");
            tokio::spawn(async move { engine.join_room(&room, &racer, None, limits).await })
        })
        .collect();
    let mut joined = 0;
    for t in tasks {
        match t.await.unwrap().unwrap() {
            JoinOutcome::Joined { .. } => joined += 1,
            JoinOutcome::TooManyRooms => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(joined, 2, "exactly the cap");
    let mut listed = engine.user_rooms(&racer.id).await.unwrap();
    listed.sort();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for room in &listed {
        assert!(engine.is_member(room, &racer.id).await.unwrap(), "{room}");
    }
    // A join refused because the room is full is not listed either.
    let late = user(&format!("{p}late"));
    assert_eq!(
        engine.join_room(&room, &late, None, limits).await.unwrap(),
        JoinOutcome::RoomFull
    );
    assert!(engine.user_rooms(&late.id).await.unwrap().is_empty());
}

fn memory(retention: Retention) -> (Arc<dyn Engine>, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    (MemoryEngine::new("node", retention, sink.clone()), sink)
}

async fn redis(url: String) -> (Arc<RedisEngine>, Arc<RecordingSink>) {
    redis_with(url, Retention::default()).await
}

async fn redis_with(url: String, retention: Retention) -> (Arc<RedisEngine>, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url,
        retention,
        subscribers: 2,
        ..RedisConfig::default()
    };
    (
        RedisEngine::connect(config, sink.clone()).await.unwrap(),
        sink,
    )
}

/// Each check on the memory engine (module `$memory`) and a single Redis (`$redis`),
/// both with `$retention`.
macro_rules! all_engines {
    ($memory:ident, $redis:ident, $retention:expr; $($check:ident),* $(,)?) => {
        mod $memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (engine, sink) = super::memory($retention);
                    super::$check(engine, sink, "m").await;
                }
            )*
        }
        mod $redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let server = chat_testkit::RedisServer::start();
                    let (engine, sink) = super::redis_with(server.url(), $retention).await;
                    super::$check(engine, sink, "r").await;
                }
            )*
        }
    };
}

all_engines!(memory_engine, redis_engine, chat_engine::Retention::default();
    membership, messages, recovery_reads, caps);
all_engines!(memory_engine_max_age, redis_engine_max_age, super::max_age(0); age_retention);
all_engines!(
    memory_engine_max_age_and_len, redis_engine_max_age_and_len, super::max_age(10_000);
    age_retention);

/// Every check on one Redis Cluster (distinct names per check), rooms spread over
/// the nodes by their hash tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_check_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let (engine, sink) = redis(cluster.url()).await;
    let engine: Arc<dyn Engine> = engine;
    membership(engine.clone(), sink.clone(), "c1").await;
    messages(engine.clone(), sink.clone(), "c2").await;
    recovery_reads(engine.clone(), sink.clone(), "c3").await;
    caps(engine.clone(), sink.clone(), "c4").await;
    let (aged, aged_sink) = redis_with(cluster.url(), max_age(10_000)).await;
    age_retention(aged, aged_sink, "c5").await;
    let nodes: std::collections::BTreeSet<usize> = ["c1-lobby", "c2-team", "c3-rec", "c4-small"]
        .iter()
        .map(|r| cluster.node_of(&chat_engine::redis::keys::room_events(r)))
        .collect();
    assert!(nodes.len() > 1, "the rooms live on more than one node");
}

/// Redis commands of one room message, summed over every command.
fn total_calls(server: &RedisServer) -> u64 {
    server
        .command_stats()
        .into_iter()
        .filter(|(name, _)| name != "info")
        .map(|(_, calls)| calls)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_commands_do_not_grow_with_members() {
    let server = RedisServer::start();
    let (engine, _sink) = redis(server.url()).await;
    let mut per_message = Vec::new();
    for members in [10, 200] {
        let room = format!("size-{members}");
        engine.subscribe_room(&room).await.unwrap();
        for i in 0..members {
            join(engine.as_ref(), &room, &format!("u{i}")).await;
        }
        // Warm up (the first send may load nothing, but keep the count fair).
        engine
            .room_send(msg(&room, "u0", "warm", None))
            .await
            .unwrap();
        let before = total_calls(&server);
        for i in 0..10 {
            engine
                .room_send(msg(&room, "u1", &format!("m{i}"), Some(&format!("n{i}"))))
                .await
                .unwrap()
                .unwrap();
        }
        let calls = total_calls(&server) - before;
        per_message.push(calls);
    }
    assert_eq!(
        per_message[0], per_message[1],
        "commands for 10 messages at 10 and at 200 members: {per_message:?}"
    );
    // One FCALL, and inside it a handful of commands: no per-member work.
    assert!(per_message[0] <= 10 * 12, "{per_message:?}");
}
