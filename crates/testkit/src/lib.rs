//! Test helpers shared by every integration test: a real `redis-server` on a free
//! port in a temp dir (killable and restartable), a 3-primary Redis Cluster
//! ([`RedisCluster`]), a primary + replica + 3 sentinels ([`RedisSentinel`]),
//! `chat-gateway` processes on free ports ([`Gateway`]), the one helper that starts
//! a set of them on either engine ([`Cluster`]), and a poll-until-deadline helper
//! instead of sleeps.
//!
//! The testkit starts nodes as processes only: it does not depend on `chat-gateway`
//! (whose tests depend on it). A node in the test's own process is the gateway
//! library's `chat_gateway::start`.
//!
//! Processes are killed when their handle drops, so a failing test leaves nothing
//! behind. Nothing here ever touches the machine's own Redis on 6379.

mod cluster;
mod gateway;
mod nodes;
mod redis;
mod sentinel;

pub use cluster::RedisCluster;
pub use gateway::Gateway;
pub use nodes::{Cluster, Engine, API_KEY, JWT_SECRET};
pub use redis::RedisServer;
pub use sentinel::{RedisSentinel, SENTINEL_SERVICE};

use std::future::Future;
use std::time::{Duration, Instant};

/// A port that was free a moment ago (bound on 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
