//! Settings: defaults, then an optional TOML file, then `CHAT_<SECTION>__<KEY>`
//! environment variables (which win). An invalid value stops the node at start with
//! a message naming the setting.

use serde::Deserialize;

use crate::admission::Proxies;
use crate::limits::Kind;

/// The `[limits]` section (its own module: the limiter and the admission read it).
pub use crate::limits::LimitSettings;

/// Shortest `auth.jwt_secret` a node starts with, in bytes (protocol 1.1).
pub const MIN_JWT_SECRET: usize = 32;
/// Shortest `api.key` a node starts with, in characters (protocol 1.1).
pub const MIN_API_KEY: usize = 16;

/// Every setting of a node. Field names are the TOML keys and, upper-cased, the
/// environment variable names (`server.max_body` ↔ `CHAT_SERVER__MAX_BODY`).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub redis: RedisSettings,
    pub retention: RetentionSettings,
    pub auth: AuthSettings,
    pub api: ApiSettings,
    pub limits: LimitSettings,
    pub log: LogSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// OTLP endpoint for traces; empty = no export.
    pub otlp_endpoint: String,
    pub service_name: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: String::new(),
            service_name: "chat-gateway".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address and port to serve on.
    pub listen: String,
    /// This node's name in `welcome.node`; empty = host name + random suffix.
    pub node_id: String,
    /// Comma-separated origins allowed to open `/ws`; `*` allows any; empty = same origin.
    pub allowed_origins: String,
    /// Largest WebSocket frame accepted, in bytes.
    pub max_frame: usize,
    /// Longest message body, in characters.
    pub max_body: usize,
    /// Frames queued for one connection before it counts as a slow consumer.
    pub outbox: usize,
    pub hello_timeout_secs: u64,
    pub ping_interval_secs: u64,
    pub ping_timeout_secs: u64,
    /// On SIGTERM, how long `/readyz` fails before sockets are closed.
    pub shutdown_grace_secs: u64,
    /// Over how many seconds the sockets are closed on shutdown, so clients do not
    /// all reconnect to the other nodes at once.
    pub drain_spread_secs: u64,
    /// Threads running connections; 0 = one per CPU core. Several nodes sharing a
    /// machine (the local cluster) do better with 1 each: fewer cross-thread wake-ups.
    pub worker_threads: usize,
    /// Comma-separated addresses or networks (`10.0.0.0/8`) of reverse proxies whose
    /// `X-Forwarded-For` / `X-Real-IP` name the client (for the per-address limits);
    /// empty = the peer's address is the client's.
    pub trusted_proxies: String,
    /// Comma-separated WebSocket URLs (`wss://chat-2.example/ws`) the bundled web client
    /// may connect to besides its own origin: its `?nodes=` accepts only these, and the
    /// page's CSP `connect-src` lists exactly them. Empty = the page's own node only.
    pub client_nodes: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: "0.0.0.0:8080".into(),
            node_id: String::new(),
            allowed_origins: String::new(),
            max_frame: 65_536,
            max_body: 4_000,
            outbox: 256,
            hello_timeout_secs: 10,
            ping_interval_secs: 25,
            ping_timeout_secs: 60,
            shutdown_grace_secs: 0,
            drain_spread_secs: 3,
            worker_threads: 0,
            trusted_proxies: String::new(),
            client_nodes: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://host:port[/db]` (one Redis), `redis-cluster://host:port[,host:port…]`
    /// (Redis Cluster), `redis-sentinel://host:port[,host:port…][/db]?sentinelServiceName=<name>`
    /// (Sentinel; the hosts are sentinels); empty = in-memory single node.
    pub url: String,
    /// Pub/sub connections users are spread over.
    pub subscribers: usize,
    pub command_timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: String::new(),
            subscribers: 2,
            command_timeout_ms: 3_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    pub history_max_len: u64,
    pub history_max_age_secs: u64,
    pub inbox_max_len: u64,
    pub inbox_ttl_secs: u64,
    pub convs_max: u64,
    pub presence_fanout_max: u64,
    pub guest_ttl_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        let r = chat_engine::Retention::default();
        RetentionSettings {
            history_max_len: r.history_max_len,
            history_max_age_secs: r.history_max_age_secs,
            inbox_max_len: r.inbox_max_len,
            inbox_ttl_secs: r.inbox_ttl_secs,
            convs_max: r.convs_max,
            presence_fanout_max: r.presence_fanout_max,
            guest_ttl_secs: r.guest_ttl_secs,
        }
    }
}

impl Settings {
    /// What the engine keeps and for how long: `retention.*` and the session limits
    /// of `auth.*`.
    pub fn engine_retention(&self) -> chat_engine::Retention {
        chat_engine::Retention {
            session_max_age_secs: self.auth.session_max_age_secs,
            max_sessions_per_user: self.auth.max_sessions_per_user,
            ..self.retention.to_engine()
        }
    }
}

impl RetentionSettings {
    pub fn to_engine(&self) -> chat_engine::Retention {
        chat_engine::Retention {
            history_max_len: self.history_max_len,
            history_max_age_secs: self.history_max_age_secs,
            inbox_max_len: self.inbox_max_len,
            inbox_ttl_secs: self.inbox_ttl_secs,
            convs_max: self.convs_max,
            presence_fanout_max: self.presence_fanout_max,
            guest_ttl_secs: self.guest_ttl_secs,
            ..chat_engine::Retention::default()
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// HS256 secret for `hello.token`; empty = HS256 tokens refused.
    pub jwt_secret: String,
    /// `http(s)://` URL of the identity provider's JSON Web Key Set: RS256 and ES256
    /// tokens are verified with its key of the token's `kid`; empty = none.
    pub jwks_url: String,
    /// How often the key set is fetched again, in seconds (and at once, at most once
    /// a second, for a token naming an unknown `kid`).
    pub jwks_refresh_secs: u64,
    /// When set, a token's `aud` (string or array) must contain it; empty = `aud` not
    /// checked.
    pub jwt_audience: String,
    /// When set, a token's `iss` must equal it; empty = `iss` not checked.
    pub jwt_issuer: String,
    /// Whether `hello.username` may create guests; unset = on without Redis only.
    pub guests: Option<bool>,
    pub session_ttl_secs: u64,
    /// A session cannot be resumed once this old, however recently used (1.2).
    pub session_max_age_secs: u64,
    /// Live sessions per user; a new sign-in past it revokes the oldest (1.2).
    pub max_sessions_per_user: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            jwt_secret: String::new(),
            jwks_url: String::new(),
            jwks_refresh_secs: 300,
            jwt_audience: String::new(),
            jwt_issuer: String::new(),
            guests: None,
            session_ttl_secs: 7 * 24 * 3600,
            session_max_age_secs: 30 * 24 * 3600,
            max_sessions_per_user: 50,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Bearer key of the server HTTP API; empty = API disabled (404).
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// `text` (development) or `json` (production).
    pub format: String,
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

impl Settings {
    /// Loads defaults, then `file` (if any), then the environment.
    pub fn load(file: Option<&str>) -> Result<Settings, String> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::with_name(path).required(true));
        }
        // Only `CHAT_<SECTION>__<KEY>` names are settings: other `CHAT_*` variables
        // (tools, tests) are not ours to refuse.
        let vars: config::Map<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("CHAT_") && k.contains("__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("CHAT")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(vars)),
        );
        let raw = builder.build().map_err(|e| format!("configuration: {e}"))?;
        let settings: Settings = raw
            .try_deserialize()
            .map_err(|e| format!("configuration: {e}"))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), String> {
        let bad = |name: &str, why: &str| Err(format!("configuration: {name}: {why}"));
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad("server.listen", "must be an address like 0.0.0.0:8080");
        }
        if self.server.max_frame < 1024 {
            return bad("server.max_frame", "must be at least 1024");
        }
        if self.server.max_body == 0 || self.server.max_body * 4 + 512 > self.server.max_frame {
            return bad("server.max_body", "must be > 0 and fit in server.max_frame");
        }
        if self.server.outbox < 8 {
            return bad("server.outbox", "must be at least 8");
        }
        if self.server.hello_timeout_secs == 0 || self.server.ping_interval_secs == 0 {
            return bad("server", "timeouts must be > 0");
        }
        if !self.redis.url.is_empty() {
            const FORMS: &str = "must be redis://host:port[/db], \
                redis-cluster://host:port[,host:port...] or \
                redis-sentinel://host:port[,host:port...][/db]?sentinelServiceName=<name>";
            let url = &self.redis.url;
            if !["redis://", "redis-cluster://", "redis-sentinel://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
            {
                return bad("redis.url", FORMS);
            }
            if let Err(e) = chat_engine::redis::redis_url_mode(url) {
                return bad("redis.url", &format!("{FORMS} ({e})"));
            }
        }
        if self.redis.subscribers == 0 {
            return bad("redis.subscribers", "must be at least 1");
        }
        for kind in Kind::ALL {
            let (rate, burst) = kind.budget(&self.limits);
            if rate == 0 || burst == 0 {
                let name = match kind {
                    Kind::Watch => "watch_ids".to_string(),
                    other => other.as_str().to_string(),
                };
                return bad(
                    &format!("limits.{name}_per_second"),
                    "rates and bursts must be > 0",
                );
            }
        }
        if self.limits.watch_ids_burst < 200 {
            return bad(
                "limits.watch_ids_burst",
                "must be at least 200 (one watch of the largest list)",
            );
        }
        if self.limits.max_connections_per_ip == 0 {
            return bad("limits.max_connections_per_ip", "must be at least 1");
        }
        if self.limits.max_sockets_before_hello == 0 {
            return bad("limits.max_sockets_before_hello", "must be at least 1");
        }
        if self.limits.sign_ins_per_ip_per_second == 0 || self.limits.sign_ins_per_ip_burst == 0 {
            return bad(
                "limits.sign_ins_per_ip_per_second",
                "rates and bursts must be > 0",
            );
        }
        if let Err(entry) = Proxies::parse(&self.server.trusted_proxies) {
            return bad(
                "server.trusted_proxies",
                &format!("{entry:?} is not an IP address or network (like 10.0.0.0/8)"),
            );
        }
        if let Some(entry) = self
            .client_nodes()
            .into_iter()
            .find(|url| !valid_ws_url(url))
        {
            return bad(
                "server.client_nodes",
                &format!("{entry:?} is not a ws:// or wss:// URL (like wss://chat.example/ws)"),
            );
        }
        if self.limits.max_connections_per_user == 0 {
            return bad("limits.max_connections_per_user", "must be at least 1");
        }
        if !self.auth.jwt_secret.is_empty() && self.auth.jwt_secret.len() < MIN_JWT_SECRET {
            return bad(
                "auth.jwt_secret",
                &format!(
                    "must be at least {MIN_JWT_SECRET} bytes (for example `openssl rand -hex 32`)"
                ),
            );
        }
        let jwks = &self.auth.jwks_url;
        if !jwks.is_empty() && !valid_http_url(jwks) {
            return bad(
                "auth.jwks_url",
                "must be an http:// or https:// URL of a JSON Web Key Set",
            );
        }
        if self.auth.jwks_refresh_secs == 0 || self.auth.jwks_refresh_secs > 86_400 {
            return bad(
                "auth.jwks_refresh_secs",
                "must be between 1 and 86400 seconds",
            );
        }
        if !self.api.key.is_empty() && self.api.key.chars().count() < MIN_API_KEY {
            return bad(
                "api.key",
                &format!(
                    "must be at least {MIN_API_KEY} characters (for example `openssl rand -hex 32`)"
                ),
            );
        }
        if self.limits.max_rooms_per_user == 0 || self.limits.max_room_members == 0 {
            return bad("limits.max_rooms_per_user", "room caps must be at least 1");
        }
        if self.auth.session_ttl_secs == 0 {
            return bad("auth.session_ttl_secs", "must be > 0");
        }
        if self.auth.session_max_age_secs == 0 {
            return bad("auth.session_max_age_secs", "must be > 0");
        }
        if self.auth.max_sessions_per_user == 0 {
            return bad("auth.max_sessions_per_user", "must be > 0");
        }
        let otlp = &self.telemetry.otlp_endpoint;
        if !(otlp.is_empty() || otlp.starts_with("http://") || otlp.starts_with("https://")) {
            return bad(
                "telemetry.otlp_endpoint",
                "must be an http:// URL of an OTLP/HTTP collector (port 4318)",
            );
        }
        if otlp.starts_with("https://") {
            return bad(
                "telemetry.otlp_endpoint",
                "https is not supported by this build; use http:// to a local collector",
            );
        }
        if self.server.drain_spread_secs > 60 {
            return bad("server.drain_spread_secs", "must be at most 60");
        }
        if self.server.worker_threads > 256 {
            return bad(
                "server.worker_threads",
                "must be at most 256 (0 = one per core)",
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return bad("log.format", "must be text or json");
        }
        Ok(())
    }

    /// Whether guests may sign in: explicit setting, else only without Redis.
    pub fn guests_allowed(&self) -> bool {
        self.auth.guests.unwrap_or(self.redis.url.is_empty())
    }

    /// The node id, generated when not configured.
    pub fn node_id(&self) -> String {
        if !self.server.node_id.is_empty() {
            return self.server.node_id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "gw".into());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}-{}", &suffix[..6])
    }

    /// The allowed origins; empty = same origin only; contains `*` = any.
    pub fn allowed_origins(&self) -> Vec<String> {
        self.server
            .allowed_origins
            .split(',')
            .map(|s| s.trim().trim_end_matches('/').to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The WebSocket URLs the web client may use besides its own origin.
    pub fn client_nodes(&self) -> Vec<String> {
        self.server
            .client_nodes
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// Whether `url` is `ws://` or `wss://` followed by a host, with nothing that could end
/// a CSP source expression or an HTML attribute (the URL is written into both).
fn valid_ws_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("ws://"));
    rest.is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty()
            && !host.contains('@')
            && !url
                .contains(|c: char| c.is_whitespace() || c.is_control() || "'\";,<>&`".contains(c))
    })
}

/// Whether `url` is `http://` or `https://` followed by a host.
fn valid_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty()
            && !host.contains(char::is_whitespace)
            && !url.contains(char::is_whitespace)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_auth(f: impl FnOnce(&mut AuthSettings)) -> Result<(), String> {
        let mut settings = Settings::default();
        f(&mut settings.auth);
        settings.validate()
    }

    #[test]
    fn key_set_settings_are_checked() {
        assert!(with_auth(|_| {}).is_ok());
        assert!(
            with_auth(|a| a.jwks_url = "https://idp.example/.well-known/jwks.json".into()).is_ok()
        );
        assert!(with_auth(|a| a.jwks_url = "http://127.0.0.1:8081/jwks".into()).is_ok());
        for bad in [
            "idp.example/jwks",
            "ftp://idp/jwks",
            "https://",
            "https:// x/",
        ] {
            let err = with_auth(|a| a.jwks_url = bad.into()).unwrap_err();
            assert!(err.contains("auth.jwks_url"), "{bad}: {err}");
        }
        let err = with_auth(|a| a.jwks_refresh_secs = 0).unwrap_err();
        assert!(err.contains("auth.jwks_refresh_secs"), "{err}");
        // An HS256 secret and a key set together.
        assert!(with_auth(|a| {
            a.jwt_secret = "x".repeat(MIN_JWT_SECRET);
            a.jwks_url = "https://idp.example/jwks".into();
            a.jwt_audience = "chat".into();
            a.jwt_issuer = "https://idp.example/".into();
        })
        .is_ok());
    }

    #[test]
    fn client_nodes_must_be_websocket_urls() {
        let with_nodes = |nodes: &str| {
            let mut settings = Settings::default();
            settings.server.client_nodes = nodes.into();
            settings.validate()
        };
        assert!(with_nodes("").is_ok());
        assert!(with_nodes("wss://chat-2.example/ws, ws://127.0.0.1:8081/ws").is_ok());
        for bad in [
            "https://chat.example/ws",
            "chat.example/ws",
            "wss://",
            "wss://a.example/ws; script-src *",
            "wss://a.example/'unsafe-inline'",
            "wss://a.example/\"><script>",
            "wss://user@a.example/ws",
        ] {
            let err = with_nodes(bad).unwrap_err();
            assert!(err.contains("server.client_nodes"), "{bad}: {err}");
        }
        let mut settings = Settings::default();
        settings.server.client_nodes = " wss://a.example/ws ,,wss://b.example/ws".into();
        assert_eq!(
            settings.client_nodes(),
            ["wss://a.example/ws", "wss://b.example/ws"]
        );
    }
}
