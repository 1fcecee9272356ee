//! The Redis engine: everything stored in Redis, so any number of nodes share it.
//!
//! [`RedisEngine`] implements every engine trait with a small fred command pool and a
//! few subscriber connections ([`subscriber`]), each trait in the file of its concern:
//! [`accounts`] (users, sessions), [`messages`] (sends, history, inboxes), [`live`]
//! (subscriptions, ephemeral frames, disconnects), [`receipts`] (read markers,
//! conversation lists), [`presence`] (connection counts, heartbeats, reaping),
//! [`directory`] (name search) and [`rooms`] (group conversations). This file connects and holds what they share
//! ([`Core`]: the pool, the call options, retention, the subscribers, the sink and
//! the node id) and the `FCALL` helper.
//!
//! The URL picks the mode ([`RedisMode`], see [`redis_url_mode`]): `redis://` one
//! Redis, `redis-sentinel://` the primary Sentinel names (fred follows failovers; the
//! function library is replicated to the replica, and reloaded if a primary lacks
//! it), `redis-cluster://` a Redis Cluster. The writes whose shape differs between
//! one Redis and a cluster (a send, a read receipt, the presence writes) go through
//! one internal interface, [`shape::Shape`], chosen once in [`RedisEngine::connect`]:
//! [`single::Single`] (one Redis and Sentinel: one atomic `FCALL` combining slots,
//! sends batched by [`batch`]) or [`cluster::Cluster`] (slot-local `FCALL`s, the rest
//! from here). The Lua library is [`functions`] (`scripts/*.lua`); key names live in
//! [`keys`]; the stored inbox and conversation entries in [`inbox`]; connection
//! settings and error mapping in [`conn`]. While Redis is down every call fails fast
//! with [`EngineError::Unavailable`]; fred reconnects on its own, the library is
//! reloaded if the restarted Redis lost it, and subscriptions are re-established.

mod accounts;
mod batch;
mod cluster;
mod conn;
pub use conn::RedisMode;
mod directory;
mod functions;
mod inbox;
pub mod keys;
mod live;
#[cfg(test)]
mod lua_shapes;
mod messages;
mod payload;
mod presence;
mod receipts;
mod rooms;
mod shape;
mod single;
mod subscriber;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::Pool;
use fred::prelude::*;
use fred::types::config::Options;

use self::conn::map_err;
use self::shape::Shape;
use self::subscriber::Subscribers;
use crate::{EngineError, EventSink, Node, Retention};

/// The mode a Redis URL selects, or why it is not a usable Redis URL: for config
/// validation. Forms: `redis://host:port[/db]`; `redis-cluster://host:port[,host:port…]`
/// (or fred's `redis-cluster://host:port?node=host:port&node=…`);
/// `redis-sentinel://host:port[,host:port…][/db]?sentinelServiceName=<name>` (the
/// hosts are sentinels; or fred's `…?sentinelServiceName=<name>&node=host:port…`).
pub fn redis_url_mode(url: &str) -> Result<RedisMode, String> {
    conn::parse_url(url)
        .map(|(_, mode)| mode)
        .map_err(|e| match e {
            EngineError::Internal(why) => why,
            other => other.to_string(),
        })
}

/// Connections in the command pool.
const POOL_SIZE: usize = 4;

/// How to reach Redis and what to keep.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`, `redis-cluster://host:port[,host:port…]` or
    /// `redis-sentinel://host:port[,host:port…][/db]?sentinelServiceName=<name>`
    /// (see [`redis_url_mode`]).
    pub url: String,
    pub retention: Retention,
    /// Subscriber connections users are spread over (default 2).
    pub subscribers: usize,
    /// Connection and command timeout in milliseconds (default 3000).
    pub command_timeout_ms: u64,
    /// The id of the node this engine runs on (default `"node"`).
    pub node_id: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            retention: Retention::default(),
            subscribers: 2,
            command_timeout_ms: 3000,
            node_id: "node".into(),
        }
    }
}

/// The engine backed by Redis.
pub struct RedisEngine {
    core: Arc<Core>,
    /// Single Redis (and Sentinel) or Cluster: chosen once, at connect.
    shape: Box<dyn Shape>,
    mode: RedisMode,
}

/// What every part of the Redis engine shares.
pub(crate) struct Core {
    pool: Pool,
    /// Ordinary commands: timeout, fail fast, one retry after a reconnect.
    opts: Options,
    /// Writes that must never run twice (sends without a nonce): no retry.
    once: Options,
    timeout: Duration,
    retention: Retention,
    subscribers: Subscribers,
    sink: Arc<dyn EventSink>,
    node_id: String,
}

impl RedisEngine {
    /// Connects the pool and the subscribers and loads the function library. Fails
    /// with `Unavailable` when Redis does not answer within the timeout.
    pub async fn connect(
        config: RedisConfig,
        sink: Arc<dyn EventSink>,
    ) -> Result<Arc<RedisEngine>, EngineError> {
        let timeout = Duration::from_millis(config.command_timeout_ms.max(1));
        let (_, mode) = conn::parse_url(&config.url)?;
        let builder = conn::builder(&config.url, timeout)?;
        let pool = builder.build_pool(POOL_SIZE).map_err(map_err)?;
        pool.init().await.map_err(map_err)?;
        let opts = conn::options(timeout, 2);
        functions::load(&pool.with_options(&opts)).await?;
        let subscribers =
            Subscribers::start(&builder, config.subscribers, timeout, sink.clone()).await?;
        let core = Arc::new(Core {
            pool,
            once: conn::options(timeout, 1),
            opts,
            timeout,
            retention: config.retention,
            subscribers,
            sink,
            node_id: config.node_id,
        });
        let shape: Box<dyn Shape> = match mode {
            RedisMode::Cluster => Box::new(cluster::Cluster::new(core.clone())),
            RedisMode::Single | RedisMode::Sentinel => Box::new(single::Single::new(&core)),
        };
        Ok(Arc::new(RedisEngine { core, shape, mode }))
    }

    /// The mode the URL selected.
    pub fn mode(&self) -> RedisMode {
        self.mode
    }

    /// Closes every connection. The engine is unusable afterwards.
    pub async fn close(&self) {
        self.core.subscribers.close().await;
        let _ = self.core.pool.quit().await;
    }
}

impl Core {
    fn cmd(&self) -> fred::clients::WithOptions<Pool> {
        self.pool.with_options(&self.opts)
    }

    /// `FCALL function`, reloading the libraries once if Redis lost them.
    async fn fcall(
        &self,
        function: &'static str,
        keys: &[String],
        args: &[String],
        opts: &Options,
    ) -> Result<Value, EngineError> {
        let client = self.pool.with_options(opts);
        match client.fcall(function, keys.to_vec(), args.to_vec()).await {
            Err(e) if conn::is_function_missing(&e) => {
                tracing::warn!("redis lost the chat function library; reloading it");
                functions::load(&self.cmd()).await?;
                client
                    .fcall(function, keys.to_vec(), args.to_vec())
                    .await
                    .map_err(map_err)
            }
            other => other.map_err(map_err),
        }
    }
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let pool = self.core.pool.clone();
            handle.spawn(async move {
                let _ = pool.quit().await;
            });
        }
    }
}

/// A key's TTL as Redis takes it: at least one second.
fn ttl(secs: u64) -> i64 {
    secs.clamp(1, i64::MAX as u64) as i64
}

#[async_trait]
impl Node for RedisEngine {
    fn kind(&self) -> &'static str {
        "redis"
    }

    /// A probe write (`SET chat:node:<id>:ready`, expiring), not just a `PING`: a
    /// Redis that answers but refuses writes (out of memory, `MISCONF`, a replica…)
    /// is not ready, and is again as soon as a write succeeds.
    async fn ready(&self) -> bool {
        let opts = conn::options(self.core.timeout.min(Duration::from_secs(1)), 1);
        let probe: Result<(), _> = self
            .core
            .pool
            .with_options(&opts)
            .set(
                keys::node_ready(&self.core.node_id),
                crate::events::now_ms(),
                Some(Expiration::EX(60)),
                None,
                false,
            )
            .await;
        if let Err(e) = &probe {
            tracing::warn!(error = %e, "readiness probe write failed");
        }
        probe.is_ok() && self.core.subscribers.connected()
    }

    fn node_id(&self) -> &str {
        &self.core.node_id
    }
}
