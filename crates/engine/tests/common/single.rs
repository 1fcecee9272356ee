//! A Redis engine on one `redis-server` (`chat_testkit::RedisServer`, a free port per
//! test), for the single-Redis test files (`redis_messages.rs`, `redis_storage.rs`,
//! `redis_outages.rs`, `redis_work.rs`).

use std::sync::Arc;

use chat_engine::redis::{RedisConfig, RedisEngine};
use chat_engine::testing::RecordingSink;
use chat_engine::{Retention, SendRequest};
use chat_testkit::RedisServer;

/// A Redis engine on `server` with these settings, and the sink it delivers to.
pub async fn engine_with(
    server: &RedisServer,
    retention: Retention,
    subscribers: usize,
    timeout_ms: u64,
) -> (Arc<RedisEngine>, Arc<RecordingSink>) {
    let sink = Arc::new(RecordingSink::default());
    let config = RedisConfig {
        url: server.url(),
        retention,
        subscribers,
        command_timeout_ms: timeout_ms,
        node_id: "node-1".into(),
    };
    let engine = RedisEngine::connect(config, sink.clone())
        .await
        .expect("connect");
    (engine, sink)
}

/// A Redis engine on `server` with the default retention, one subscriber and a
/// 3 s command timeout.
pub async fn engine(server: &RedisServer) -> (Arc<RedisEngine>, Arc<RecordingSink>) {
    engine_with(server, Retention::default(), 1, 3000).await
}

/// A send request; `nonce` remembered for a day.
pub fn req(from: &str, to: &str, body: &str, nonce: Option<&str>) -> SendRequest {
    SendRequest {
        from: from.into(),
        to: to.into(),
        body: body.into(),
        nonce: nonce.map(str::to_string),
        nonce_ttl_secs: 86_400,
        sent_at: "2026-01-01T00:00:00.000Z".into(),
        trace: None,
    }
}

/// [`super::barrier`] for a `&Arc<RedisEngine>` (which does not coerce to `&dyn
/// Engine`): everything published to `user` before the marker has been delivered.
pub async fn barrier(engine: &RedisEngine, sink: &RecordingSink, user: &str, tag: &str) {
    super::barrier(engine, sink, user, tag).await;
}
