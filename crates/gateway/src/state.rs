//! The node's shared state: settings, engine, router, and the shutdown machinery.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chat_engine::Engine;
use chat_protocol::Limits;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::{Admission, Proxies};
use crate::auth::JwtVerifier;
use crate::config::Settings;
use crate::limiter::Budgets;
use crate::presence::local::Presence;
use crate::router::Router;
use crate::sync::lock;

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
    /// Presence bookkeeping: repairs pending and the per-user gates.
    pub presence: Presence,
    /// Every user's request budgets on this node (`limiter.rs`).
    pub budgets: Budgets,
    /// The caps checked at the upgrade (`admission.rs`).
    pub admission: Arc<Admission>,
    /// `server.trusted_proxies`, parsed.
    pub proxies: Proxies,
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
        router.set_engine(&engine);
        let limits = Limits {
            max_body: settings.server.max_body,
            max_frame: settings.server.max_frame,
            send_per_second: settings.limits.send_per_second,
            send_burst: settings.limits.send_burst,
        };
        // Checked when the settings were loaded.
        let proxies = Proxies::parse(&settings.server.trusted_proxies).unwrap_or_default();
        // The node's one pooled outbound HTTP client (`outbound.rs`), built once here
        // and handed (cloned: the clones share the pool) to whatever calls out.
        let outbound = crate::outbound::client();
        AppState {
            node_id: settings.node_id(),
            jwt: JwtVerifier::new(&settings.auth, outbound),
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
            presence: Presence::default(),
            budgets: Budgets::default(),
            admission: Arc::new(Admission::default()),
            proxies,
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

/// Shared handle to the node state.
pub type Shared = Arc<AppState>;
