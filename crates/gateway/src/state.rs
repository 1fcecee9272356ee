//! The node's shared state: settings, engine, router, and the shutdown machinery.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chat_engine::Engine;
use chat_protocol::Limits;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::JwtVerifier;
use crate::config::Settings;
use crate::router::Router;

/// Largest number of user ids remembered as known before the cache is cleared.
const KNOWN_USERS_CAP: usize = 100_000;

/// Everything a request handler or a connection needs, shared by all of them.
pub struct AppState {
    pub settings: Settings,
    pub engine: Arc<dyn Engine>,
    pub router: Arc<Router>,
    /// This node's name, shown in `welcome.node`.
    pub node_id: String,
    pub jwt: JwtVerifier,
    /// The limits announced in `welcome.limits`, built once.
    pub limits: Limits,
    /// Allowed `Origin`s for `/ws` (empty = same origin, `*` = any).
    pub origins: Vec<String>,
    /// Set on SIGTERM: `/readyz` fails and new sockets are refused.
    pub draining: AtomicBool,
    /// Cancelled when connections must close (after the drain grace).
    pub shutdown: CancellationToken,
    /// Every WebSocket task, so shutdown can wait for them (axum's graceful shutdown
    /// does not wait for upgraded connections).
    pub tracker: TaskTracker,
    pub metrics: PrometheusHandle,
    /// User ids known to exist, so a send to a known peer costs no extra lookup.
    /// Users are never deleted, so a positive entry never goes stale.
    known_users: Mutex<HashSet<String>>,
    /// Users whose presence count this node failed to decrement (the backend was
    /// unreachable when a connection closed): dropped once they have no connection
    /// here any more (see [`AppState::repair_presence`]).
    presence_repairs: Mutex<HashSet<String>>,
    /// Held shared by a sign-in while it registers and counts its connection, and
    /// exclusively by a presence repair, so a repair never drops the count of a
    /// connection that is being opened.
    pub presence_gate: tokio::sync::RwLock<()>,
}

impl AppState {
    pub fn new(
        settings: Settings,
        engine: Arc<dyn Engine>,
        router: Arc<Router>,
        metrics: PrometheusHandle,
    ) -> AppState {
        // The recorder behind `metrics` is installed: list every metric from now on.
        crate::metric::register();
        let limits = Limits {
            max_body: settings.server.max_body,
            max_frame: settings.server.max_frame,
            send_per_second: settings.limits.send_per_second,
            send_burst: settings.limits.send_burst,
        };
        AppState {
            node_id: settings.node_id(),
            jwt: JwtVerifier::new(&settings.auth.jwt_secret),
            origins: settings.allowed_origins(),
            limits,
            settings,
            engine,
            router,
            draining: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            metrics,
            known_users: Mutex::new(HashSet::new()),
            presence_repairs: Mutex::new(HashSet::new()),
            presence_gate: tokio::sync::RwLock::new(()),
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Whether the user exists: from the cache, else from the engine.
    pub async fn user_exists(&self, id: &str) -> Result<bool, chat_engine::EngineError> {
        if self.lock_known().contains(id) {
            return Ok(true);
        }
        let exists = self.engine.get_user(id).await?.is_some();
        if exists {
            self.remember_user(id);
        }
        Ok(exists)
    }

    /// Whether spans are exported (an OTLP endpoint is set): per-send spans and
    /// trace contexts are built only then.
    pub fn traces_exported(&self) -> bool {
        !self.settings.telemetry.otlp_endpoint.is_empty()
    }

    /// A connection of `user` closed but its presence count could not be decremented.
    pub fn presence_repair_needed(&self, user: &str) {
        lock(&self.presence_repairs).insert(user.to_string());
    }

    /// For each user whose count could not be decremented and who has no connection
    /// on this node any more: drops this node's count (idempotent, unlike retrying a
    /// decrement that may have run after all). Stops at the first backend error; the
    /// rest waits for the next call (every heartbeat).
    pub async fn repair_presence(&self) {
        let pending: Vec<String> = lock(&self.presence_repairs).iter().cloned().collect();
        for user in pending {
            if self.router.has_connections(&user) {
                continue;
            }
            let _gate = self.presence_gate.write().await;
            if self.router.has_connections(&user) {
                continue;
            }
            match self.engine.drop_presence(&user, &self.node_id).await {
                Ok(()) => {
                    lock(&self.presence_repairs).remove(&user);
                    metrics::counter!(crate::metric::PRESENCE_REPAIRS).increment(1);
                    tracing::info!(user.id = %user, "presence count repaired after a failed close");
                }
                Err(e) => {
                    tracing::warn!(user.id = %user, error = %e, "presence repair failed; will retry");
                    return;
                }
            }
        }
    }

    pub fn remember_user(&self, id: &str) {
        let mut known = self.lock_known();
        if known.len() >= KNOWN_USERS_CAP {
            known.clear();
        }
        known.insert(id.to_string());
    }

    fn lock_known(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        lock(&self.known_users)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shared handle to the node state.
pub type Shared = Arc<AppState>;
