//! `chat-gateway`: one node of the chat cluster.
//!
//! Wiring only: settings → engine (Redis or in-memory) → router → HTTP routes, and
//! the shutdown order: SIGTERM → `/readyz` fails → grace → stop accepting and close
//! every socket with 1001 → wait for connection tasks (bounded) → exit 0.
//!
//! Module map: `config` (settings), `auth` (JWT), `router` (user → local
//! connections, the engine's event sink), `connection` (one socket's life),
//! `http` (routes), `limiter` (send rate), `state` (what they share).

mod api;
mod auth;
mod config;
mod connection;
mod http;
mod limiter;
mod router;
mod state;
mod telemetry;
mod web;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chat_engine::memory::MemoryEngine;
use chat_engine::prelude::*;
use chat_engine::redis::{RedisConfig, RedisEngine};
use chat_engine::EventSink;
use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::router::Router;
use crate::state::AppState;

/// jemalloc: per message, glibc's malloc/free was ~12 % of a node's CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "chat-gateway",
    version,
    about = "A node of the real-time chat cluster"
)]
struct Cli {
    /// TOML settings file; `CHAT_<SECTION>__<KEY>` environment variables win over it.
    #[arg(long, global = true)]
    config: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve (the default).
    Serve,
    /// Print a JWT signed with auth.jwt_secret, for trying token sign-in.
    Token {
        #[arg(long)]
        user: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chat-gateway: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Token {
            user,
            name,
            ttl_secs,
        } => match auth::issue_token(&settings.auth.jwt_secret, &user, &name, ttl_secs) {
            Ok(token) => {
                println!("{token}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("chat-gateway token: {e}");
                std::process::ExitCode::from(2)
            }
        },
        Command::Serve => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if settings.server.worker_threads > 0 {
                builder.worker_threads(settings.server.worker_threads);
            }
            let runtime = match builder.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("chat-gateway: cannot start the runtime: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(settings)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "node stopped");
                    eprintln!("chat-gateway: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(mut settings: Settings) -> anyhow::Result<()> {
    // Fix the node id once: logs, traces and `welcome.node` all use it.
    settings.server.node_id = settings.node_id();
    let _telemetry = telemetry::init(&settings, &settings.server.node_id)?;
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let router = Router::new();
    let engine = connect_engine(&settings, router.clone()).await;
    let state = Arc::new(AppState::new(settings, engine, router, metrics));
    // A node restarted with the same id must not leave its old users online.
    if let Err(e) = state.engine.reset_node(&state.node_id).await {
        tracing::warn!(error = %e, "could not clear presence left by an earlier run of this node");
    }

    let listener = tokio::net::TcpListener::bind(&state.settings.server.listen).await?;
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

    spawn_heartbeat(state.clone());
    let app = http::routes(state.clone());
    let stop_accepting = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop_accepting.clone();
        async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        }
    });

    shutdown_signal().await;
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
    let retention = settings.retention.to_engine();
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

/// How often a node proves it is alive, and how long the proof lasts: a node that
/// died is noticed by the others within `HEARTBEAT_TTL + HEARTBEAT_EVERY` (< 30 s).
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
const HEARTBEAT_TTL: u64 = 15;

/// Heartbeats this node and reaps nodes that stopped heartbeating, so a crashed
/// node's users do not stay online.
fn spawn_heartbeat(state: Arc<AppState>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = state.engine.heartbeat(&state.node_id, HEARTBEAT_TTL).await {
                tracing::warn!(error = %e, "heartbeat failed");
                continue;
            }
            state.repair_presence().await;
            match state.engine.reap_dead_nodes().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(nodes = n, "reaped dead nodes: their users are offline"),
                Err(e) => tracing::warn!(error = %e, "reaping dead nodes failed"),
            }
        }
    });
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
