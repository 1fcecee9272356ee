//! Read receipts, unread counts, conversation lists, presence, the directory and
//! disconnects: the same checks against both engines (each check is a function taking
//! `Arc<dyn Engine>`), plus the Redis-only parts (reaping a dead node, one FCALL per
//! call).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chat_engine::memory::MemoryEngine;
use chat_engine::prelude::*;
use chat_engine::redis::{RedisConfig, RedisEngine};
use chat_engine::Retention;
use chat_testkit::{eventually, RedisServer};
use common::*;

fn memory() -> (Arc<dyn Engine>, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    (
        MemoryEngine::new("node", Retention::default(), sink.clone()),
        sink,
    )
}

async fn redis(server: &RedisServer) -> (Arc<RedisEngine>, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url: server.url(),
        subscribers: 2,
        ..RedisConfig::default()
    };
    let engine = RedisEngine::connect(config, sink.clone()).await.unwrap();
    (engine, sink)
}

/// Each check once per engine: `memory_engine::<check>` and `redis_engine::<check>`.
macro_rules! both_engines {
    ($($check:ident),* $(,)?) => {
        mod memory_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let (engine, sink) = super::memory();
                    super::$check(engine, sink).await;
                }
            )*
        }
        mod redis_engine {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let server = chat_testkit::RedisServer::start();
                    let (engine, sink) = super::redis(&server).await;
                    super::$check(engine, sink).await;
                }
            )*
        }
    };
}

both_engines!(
    unread_and_read_receipts,
    concurrent_sends_and_reads_stay_exact,
    conversation_list,
    presence_transitions,
    directory_search,
    disconnect_reaches_the_sink,
    clear_hides_messages_from_recovery,
    sessions_keep_the_rooms_claim,
    revoking_one_session_keeps_the_others,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growth_is_bounded_in_memory() {
    let sink = Arc::new(RecordingSink::default());
    let engine = MemoryEngine::new("node", bounded_retention(), sink.clone());
    growth_is_bounded(engine, sink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn growth_is_bounded_on_redis() {
    let server = RedisServer::start();
    let sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url: server.url(),
        retention: bounded_retention(),
        ..RedisConfig::default()
    };
    let engine = RedisEngine::connect(config, sink.clone()).await.unwrap();
    growth_is_bounded(engine, sink).await;
}

/// `history_max_age_secs` drops a conversation's old messages and keeps the recent
/// ones (memory trims exactly; Redis's `MINID ~` trims whole stream nodes, checked
/// with rooms in `rooms.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_messages_age_out_in_memory() {
    let sink = Arc::new(RecordingSink::default());
    let retention = Retention {
        history_max_age_secs: 1,
        ..Retention::default()
    };
    let engine = MemoryEngine::new("node", retention, sink.clone());
    for i in 0..3 {
        send(engine.as_ref(), "age-a", "age-b", &format!("old {i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let recent = send(engine.as_ref(), "age-a", "age-b", "recent").await;
    let (history, more) = engine.history("age-a", "age-b", None, 10).await.unwrap();
    assert_eq!(
        history,
        vec![recent],
        "only the message within the age is kept"
    );
    assert!(!more);
}

fn short_guests() -> Retention {
    Retention {
        guest_ttl_secs: 1,
        ..Retention::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_expire_in_memory() {
    let sink = Arc::new(RecordingSink::default());
    let engine = MemoryEngine::new("node", short_guests(), sink.clone());
    guests_expire_after_inactivity(engine, sink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_expire_on_redis_and_leave_no_directory_entry() {
    let server = RedisServer::start();
    let sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url: server.url(),
        retention: short_guests(),
        ..RedisConfig::default()
    };
    let engine = RedisEngine::connect(config, sink.clone()).await.unwrap();
    guests_expire_after_inactivity(engine.clone(), sink).await;
    // Only the live guests (Kept, Other) and the token user remain indexed.
    assert_eq!(
        server.command(&["ZCARD", "chat:names"]).as_deref(),
        Some(":3\r\n")
    );
    assert_eq!(
        server.command(&["ZCARD", "chat:guests"]).as_deref(),
        Some(":2\r\n")
    );
}

fn three_sessions() -> Retention {
    Retention {
        max_sessions_per_user: 3,
        ..Retention::default()
    }
}

/// `max_sessions_per_user`: a new session past it revokes the oldest first; the
/// newest ones resume.
async fn sessions_are_capped_oldest_first(engine: Arc<dyn Engine>) {
    engine.upsert_user("cap-user", "C").await.unwrap();
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(engine.create_session("cap-user", None, 60).await.unwrap());
        // Creation times a millisecond apart at least, so "oldest" is well defined.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (i, session) in sessions.iter().enumerate() {
        let resumed = engine.resume_session(session, 60).await.unwrap();
        assert_eq!(
            resumed.is_some(),
            i >= 2,
            "session {i} of 5 with a cap of 3"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_capped_in_memory() {
    let sink = Arc::new(RecordingSink::default());
    sessions_are_capped_oldest_first(MemoryEngine::new("node", three_sessions(), sink)).await;
}

/// On Redis the user's sessions by creation time hold at most the cap, and those
/// past the max age are dropped at the next sign-in: the work of a sign-in is
/// bounded, whatever the user did before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_capped_on_redis() {
    let server = RedisServer::start();
    let sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url: server.url(),
        retention: three_sessions(),
        ..RedisConfig::default()
    };
    let engine = RedisEngine::connect(config, sink.clone()).await.unwrap();
    sessions_are_capped_oldest_first(engine.clone()).await;
    assert_eq!(
        server
            .command(&["ZCARD", "chat:usesst:cap-user"])
            .as_deref(),
        Some(":3\r\n")
    );
    // Past the max age: dropped from the list at the next sign-in.
    let config = RedisConfig {
        url: server.url(),
        retention: Retention {
            session_max_age_secs: 1,
            ..three_sessions()
        },
        ..RedisConfig::default()
    };
    let aging = RedisEngine::connect(config, sink).await.unwrap();
    aging.upsert_user("age-user", "A").await.unwrap();
    for _ in 0..2 {
        aging.create_session("age-user", None, 60).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let live = aging.create_session("age-user", None, 60).await.unwrap();
    assert_eq!(
        server
            .command(&["ZCARD", "chat:usesst:age-user"])
            .as_deref(),
        Some(":1\r\n"),
        "the two sessions past the max age left the list"
    );
    assert!(aging.resume_session(&live, 60).await.unwrap().is_some());
}

// ----- Redis only -----

async fn counted<T>(server: &RedisServer, f: impl Future<Output = T>) -> (T, u64) {
    let before = server.command_calls("fcall");
    let out = f.await;
    (out, server.command_calls("fcall") - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_one_fcall_per_send_read_and_transition() {
    let server = RedisServer::start();
    let (engine, _sink) = redis(&server).await;
    let (m, calls) = counted(&server, engine.send(req("a", "b", "x"))).await;
    assert_eq!(calls, 1, "send");
    let m = m.unwrap().message;
    let (_, calls) = counted(&server, engine.mark_read("b", "a", id(&m))).await;
    assert_eq!(calls, 1, "mark_read");
    let (_, calls) = counted(&server, engine.connection_opened("a", "n")).await;
    assert_eq!(calls, 1, "connection_opened");
    let (_, calls) = counted(&server, engine.connection_closed("a", "n")).await;
    assert_eq!(calls, 1, "connection_closed");
    // The documented layout.
    let meta = server.command(&["HGETALL", "chat:{c:a:b}:meta"]).unwrap();
    for field in [
        "\r\ns\r\n",
        "\r\nlast\r\n",
        "\r\nlm\r\n",
        "\r\nr:a\r\n",
        "\r\nru:b\r\n",
    ] {
        assert!(meta.contains(field), "{field} in {meta}");
    }
    assert!(server
        .command(&["HGET", "chat:user:a", "seen"])
        .unwrap()
        .contains('Z'));
    assert_eq!(
        server.command(&["EXISTS", "chat:{u:a}:pres"]).as_deref(),
        Some(":0\r\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dead_node_is_reaped_by_another() {
    let server = RedisServer::start();
    let (dead, _dead_sink) = redis(&server).await;
    let (live, sink) = redis(&server).await;
    live.upsert_user("lou", "Lou").await.unwrap();
    live.upsert_user("max", "Max").await.unwrap();
    live.send(req("lou", "max", "hi")).await.unwrap();
    live.subscribe("max").await.unwrap();

    // "n-dead" heartbeats once, briefly, with lou connected twice; "n-live" stays.
    dead.heartbeat("n-dead", 1).await.unwrap();
    dead.connection_opened("lou", "n-dead").await.unwrap();
    dead.connection_opened("lou", "n-dead").await.unwrap();
    dead.connection_opened("max", "n-dead").await.unwrap();
    live.heartbeat("n-live", 15).await.unwrap();
    live.connection_opened("max", "n-live").await.unwrap();
    assert_eq!(live.reap_dead_nodes().await.unwrap(), 0, "nobody dead yet");

    eventually("heartbeat expired", WAIT, || {
        let gone = server
            .command(&["EXISTS", "chat:node:n-dead:alive"])
            .as_deref()
            == Some(":0\r\n");
        async move { gone.then_some(()) }
    })
    .await;
    // Another node holds the claim: nothing happens here.
    server
        .command(&["SET", "chat:node:n-dead:reaping", "x", "EX", "30"])
        .unwrap();
    assert_eq!(live.reap_dead_nodes().await.unwrap(), 0);
    server
        .command(&["DEL", "chat:node:n-dead:reaping"])
        .unwrap();

    assert_eq!(live.reap_dead_nodes().await.unwrap(), 1);
    let info = live
        .presence(&["lou".to_string(), "max".to_string()])
        .await
        .unwrap();
    assert!(!info[0].online);
    assert!(info[0].last_seen_at.is_some());
    assert!(info[1].online, "max is still connected to the live node");
    until("offline frame to the partner", || {
        sink.ephemeral("max")
            .iter()
            .any(|f| f.contains(r#""user":"lou","online":false"#))
    })
    .await;
    until("offline on the presence channel", || {
        sink.presence_of("lou")
            .iter()
            .any(|f| f.contains("\"online\":false"))
    })
    .await;
    assert!(!sink.presence_of("max").iter().any(|f| f.contains("false")));
    // Gone from the node list; a second pass finds nothing.
    let nodes = server
        .command(&["ZRANGE", "chat:nodes", "0", "-1"])
        .unwrap();
    assert!(
        !nodes.contains("n-dead") && nodes.contains("n-live"),
        "{nodes}"
    );
    assert_eq!(live.reap_dead_nodes().await.unwrap(), 0);
    // A late close from the dead node changes nothing.
    dead.connection_closed("lou", "n-dead").await.unwrap();
    assert!(!live.presence(&["lou".to_string()]).await.unwrap()[0].online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_node_clears_its_old_presence() {
    let server = RedisServer::start();
    let (before, _s1) = redis(&server).await;
    before.upsert_user("ria", "Ria").await.unwrap();
    before.heartbeat("n-fixed", 15).await.unwrap();
    before.connection_opened("ria", "n-fixed").await.unwrap();
    // The node is killed with its heartbeat still valid; it restarts with the same id.
    drop(before);
    let (after, _s2) = redis(&server).await;
    assert!(after.presence(&["ria".to_string()]).await.unwrap()[0].online);
    after.reset_node("n-fixed").await.unwrap();
    let p = &after.presence(&["ria".to_string()]).await.unwrap()[0];
    assert!(!p.online, "old connection counts of this node are gone");
    assert!(p.last_seen_at.is_some());
    // New connections after the reset count normally.
    assert_eq!(after.connection_opened("ria", "n-fixed").await.unwrap(), 1);
}
