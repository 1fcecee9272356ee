//! What the single Redis keeps and for how long: retention of inboxes and history
//! (by length and age), inbox expiry, sessions, users and guests. One `redis-server`
//! per test, on a free port (`common::single`).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use chat_engine::prelude::*;
use chat_engine::Retention;
use chat_protocol::StreamId;
use chat_testkit::RedisServer;
use common::single::{engine, engine_with, req};

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

/// The key a session is stored under: `chat:sess:` and the SHA-256 of its secret.
fn hashed_key(session: &str) -> String {
    use sha2::{Digest, Sha256};
    let hex: String = Sha256::digest(session.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("chat:sess:{hex}")
}

/// A session key holding a bare user id under the raw secret (written before
/// sessions kept the `rooms` claim, their creation time, and before secrets were
/// hashed) still resumes, with no claim; it moves under its hash, marked as created
/// at that resume (so the max age counts from there), and the raw key is gone. A
/// value whose claim part is unreadable is an unknown session, never one without a
/// restriction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_written_before_the_rooms_claim_still_resume() {
    let server = RedisServer::start();
    let (engine, _sink) = engine(&server).await;
    engine.upsert_user("old-timer", "Old").await.unwrap();
    let old = "0123456789abcdef".repeat(4);
    let raw_key = format!("chat:sess:{old}");
    assert_eq!(
        server
            .command(&["SET", &raw_key, "old-timer", "EX", "60"])
            .as_deref(),
        Some("+OK\r\n")
    );
    server.command(&["SADD", "chat:usess:old-timer", &old]);
    let session = engine.resume_session(&old, 60).await.unwrap().unwrap();
    assert_eq!(session.user.id, "old-timer");
    assert_eq!(session.user.name, "Old");
    assert_eq!(session.rooms, None, "an old session has no claim");
    assert_eq!(
        server.command(&["EXISTS", &raw_key]).as_deref(),
        Some(":0\r\n")
    );
    let key = hashed_key(&old);
    let ttl = server.command(&["TTL", &key]).unwrap();
    assert!(ttl.starts_with(":6") || ttl.starts_with(":5"), "ttl {ttl}");
    let marked = server.command(&["GET", &key]).unwrap();
    assert!(marked.contains("\r\n#1"), "{marked}");
    assert!(marked.ends_with(" old-timer\r\n"), "{marked}");
    let members = server
        .command(&["SMEMBERS", "chat:usess:old-timer"])
        .unwrap();
    assert!(!members.contains(&old), "{members}");
    // Listed by its hash among the user's sessions by creation time.
    let listed = server
        .command(&["ZRANGE", "chat:usesst:old-timer", "0", "-1"])
        .unwrap();
    assert!(listed.contains(&key["chat:sess:".len()..]), "{listed}");
    assert!(engine.resume_session(&old, 60).await.unwrap().is_some());
    // What a new session with a claim stores, byte for byte after its creation time.
    let claimed = engine
        .create_session("old-timer", Some(&["lobby".to_string()]), 60)
        .await
        .unwrap();
    let value = server.command(&["GET", &hashed_key(&claimed)]).unwrap();
    assert!(value.ends_with(" old-timer [\"lobby\"]\r\n"), "{value}");
    // A corrupt claim part fails closed.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    server.command(&[
        "SET",
        &key,
        &format!("#{now_ms} old-timer [lobby"),
        "EX",
        "60",
    ]);
    assert!(engine.resume_session(&old, 60).await.unwrap().is_none());
}

/// Redis holds no session secret: after sign-ins, resumes and a revoke, no key name
/// and no value (strings, sets, hashes) contains a token a client holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_holds_no_session_secret() {
    let server = RedisServer::start();
    let (engine, _sink) = engine(&server).await;
    engine.upsert_user("keeper", "K").await.unwrap();
    let lobby = ["lobby".to_string()];
    let mut tokens = Vec::new();
    for rooms in [None, Some(&lobby[..]), None] {
        tokens.push(engine.create_session("keeper", rooms, 60).await.unwrap());
    }
    for token in &tokens {
        assert!(engine.resume_session(token, 60).await.unwrap().is_some());
    }
    engine.revoke_session(&tokens[2]).await.unwrap();
    let names = server.command(&["KEYS", "*"]).unwrap();
    let mut dump = names.clone();
    for key in names.split("\r\n").filter(|l| l.starts_with("chat:")) {
        let kind = server.command(&["TYPE", key]).unwrap();
        let value = match kind.trim() {
            "+string" => server.command(&["GET", key]),
            "+set" => server.command(&["SMEMBERS", key]),
            "+hash" => server.command(&["HGETALL", key]),
            "+zset" => server.command(&["ZRANGE", key, "0", "-1", "WITHSCORES"]),
            other => panic!("unexpected type {other} of {key}"),
        };
        dump.push_str(&value.unwrap_or_default());
    }
    assert!(
        dump.contains("chat:sess:"),
        "the sessions are there: {dump}"
    );
    for token in &tokens {
        assert!(
            !dump.contains(token.as_str()),
            "{token} stored in Redis: {dump}"
        );
    }
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
