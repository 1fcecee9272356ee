//! `chat-gateway`: one node of the chat cluster, as a library. The binary
//! (`main.rs`) only parses its command line and calls [`serve`]; tests start a node
//! in their own process with [`start`].
//!
//! Wiring only: settings → engine (Redis or in-memory) → router → HTTP routes
//! (`app`), and the shutdown order: signal → `/readyz` fails → grace → stop
//! accepting and close every socket with 1001 → wait for connection tasks (bounded)
//! → return.
//!
//! Module map: `config` (settings; `limits` its `[limits]` section and the request
//! kinds), `auth` (JWT; `auth/keyset` the identity provider's keys), `outbound`
//! (the one HTTP client for calls out), `router` (users and rooms → local
//! connections, the engine's event sink), `connection` (one socket's life, generic over the socket), `http`
//! (routes), `api` (the server HTTP API, its calls grouped by what they act on),
//! `send_policy` (the checks, nonce namespaces and TTLs of a send, 1:1 and rooms,
//! socket and API alike), `history` (a history page's parameters and read, socket and
//! API alike), `errors` (engine error → wire code / HTTP status, logged once),
//! `presence` (counting a node's connections in the cluster's presence, repairs,
//! heartbeat, reaping), `metric` (every metric's name and help, registered at start),
//! `limiter` (request budgets per user), `admission` (caps at the upgrade), `state`
//! (what they share), `sync` (the one mutex-lock helper), `telemetry` (logs and
//! traces), `web` (the embedded web client).
//!
//! Imports never go round in a circle: a module does not import from one that
//! imports it, directly or through others. The one way back is a parent's own files:
//! the files of `connection/` implement its `Conn`, those of `router/` its `Router`.
//! Shared rules sit below both users (`send_policy`, `history`), never in one of them.

mod admission;
mod api;
pub mod auth;
pub mod config;
mod connection;
mod errors;
mod history;
mod http;
mod limiter;
mod limits;
mod metric;
mod outbound;
mod presence;
mod router;
mod send_policy;
mod state;
mod sync;
mod telemetry;
mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chat_engine::memory::MemoryEngine;
use chat_engine::redis::{RedisConfig, RedisEngine};
use chat_engine::{Engine, EventSink};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::router::Router;
use crate::state::AppState;

/// Every route of a node on `state`: the WebSocket upgrade, health and readiness,
/// metrics, the server API and the web client. The state's engine must deliver its
/// live events to the state's router (the engine's sink).
fn app(state: Arc<AppState>) -> axum::Router {
    http::routes(state)
}

/// Runs a node until SIGTERM or Ctrl-C, then drains it: what `chat-gateway serve`
/// does. Installs the process's log subscriber and metrics recorder, so it is
/// called once per process.
pub async fn serve(mut settings: Settings) -> anyhow::Result<()> {
    // Fix the node id once: logs, traces and `welcome.node` all use it.
    settings.server.node_id = settings.node_id();
    // Before the OTLP exporter builds its HTTP client.
    outbound::install_tls_provider();
    let _telemetry = telemetry::init(&settings, &settings.server.node_id)?;
    let metrics = PrometheusBuilder::new().install_recorder()?;
    run(settings, metrics, None, shutdown_signal()).await
}

/// A node running inside the caller's process (see [`start`]).
pub struct Node {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts a node on the caller's runtime: binds `server.listen` at once (use
/// `127.0.0.1:0` for a free port), then connects the engine and serves in a task.
/// It takes no process-wide resource (no log subscriber, no metrics recorder, no
/// signal handler): its `/metrics` answers an empty body and its logs go to the
/// caller's subscriber, if any. Several can run in one process.
pub async fn start(mut settings: Settings) -> anyhow::Result<Node> {
    settings.server.node_id = settings.node_id();
    let listener = TcpListener::bind(&settings.server.listen).await?;
    let addr = listener.local_addr()?;
    let metrics = PrometheusBuilder::new().build_recorder().handle();
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(
        settings,
        metrics,
        Some(listener),
        stop.clone().cancelled_owned(),
    ));
    Ok(Node { addr, stop, task })
}

impl Node {
    /// The address the node listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts the node down in the same order as a SIGTERM does and waits until it
    /// has stopped.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        (&mut self.task).await?
    }
}

impl Drop for Node {
    /// A node dropped without [`Node::stop`] still shuts down, in the background.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Connects the engine, serves on `listener` (or binds `server.listen` once the
/// engine is ready), and drains when `shutdown` resolves.
async fn run(
    settings: Settings,
    metrics: PrometheusHandle,
    listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let router = Router::new();
    let engine = connect_engine(&settings, router.clone()).await;
    let state = Arc::new(AppState::new(settings, engine, router, metrics));
    presence::reset_node(&state).await;
    state
        .jwt
        .start(&state.settings.auth, &state.tracker, state.shutdown.clone())
        .await;

    let listener = match listener {
        Some(listener) => listener,
        None => TcpListener::bind(&state.settings.server.listen).await?,
    };
    let addr = listener.local_addr()?;
    // Chat frames are small and latency-bound: never let Nagle hold an event back
    // behind an unacknowledged ack.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tracing::info!(
        node = %state.node_id,
        engine = state.engine.kind(),
        guests = state.settings.guests_allowed(),
        "listening on {addr}"
    );

    presence::spawn_heartbeat(state.clone());
    let app = app(state.clone());
    let stop_accepting = CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop_accepting.clone();
        async move {
            // The peer's address reaches the upgrade (per-address caps).
            let app = app.into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });

    shutdown.await;
    tracing::info!("shutdown requested: draining");
    state.draining.store(true, Ordering::Release);
    let grace = state.settings.server.shutdown_grace_secs;
    if grace > 0 {
        tokio::time::sleep(Duration::from_secs(grace)).await;
    }
    stop_accepting.cancel();
    drain(&state).await;
    state.shutdown.cancel();
    state.tracker.close();
    if tokio::time::timeout(Duration::from_secs(8), state.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
    tracing::info!("stopped");
    Ok(())
}

/// The Redis engine when `redis.url` is set (retrying until Redis answers), else the
/// in-memory engine.
async fn connect_engine(settings: &Settings, router: Arc<Router>) -> Arc<dyn Engine> {
    let sink: Arc<dyn EventSink> = router;
    let retention = settings.engine_retention();
    if settings.redis.url.is_empty() {
        tracing::info!("no redis.url: single node with the in-memory engine");
        return MemoryEngine::new(settings.server.node_id.clone(), retention, sink);
    }
    let mut delay = Duration::from_millis(200);
    loop {
        let config = RedisConfig {
            url: settings.redis.url.clone(),
            retention: retention.clone(),
            subscribers: settings.redis.subscribers,
            command_timeout_ms: settings.redis.command_timeout_ms,
            node_id: settings.server.node_id.clone(),
        };
        match RedisEngine::connect(config, sink.clone()).await {
            Ok(engine) => return engine,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach redis; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Closes every socket with 1001, spread over `server.drain_spread_secs` so that
/// clients reconnect to the other nodes gradually rather than all at once.
async fn drain(state: &AppState) {
    let conns = state.router.all_connections();
    let spread = Duration::from_secs(state.settings.server.drain_spread_secs);
    tracing::info!(
        connections = conns.len(),
        spread_secs = spread.as_secs(),
        "closing connections"
    );
    if conns.is_empty() || spread.is_zero() {
        return;
    }
    let step = spread / conns.len() as u32;
    for conn in conns {
        conn.closer.close(chat_protocol::close::GOING_AWAY);
        if !step.is_zero() {
            tokio::time::sleep(step).await;
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
