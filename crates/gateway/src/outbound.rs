//! Calls this node makes to other services over HTTP: today the identity provider's
//! key set (`auth/keyset.rs`); the host app's hooks and webhooks are to use the same
//! client.
//!
//! One pooled client per node, built once when the node starts: every call shares its
//! connections and has a deadline (a connect timeout and a whole-request timeout), so
//! a provider that stops answering holds no task for long. It must never be built per
//! call, and nothing sent through it may carry a user's token.

use std::time::Duration;

/// How long opening a connection (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a whole request may take, from sending to the last byte of the body.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per host: a node talks to a handful of hosts.
const IDLE_PER_HOST: usize = 4;

/// Installs the process's TLS provider (ring's). reqwest is built without a default
/// one, and every reqwest client in the process needs it, the OTLP exporter's
/// included: call this before any is built. A second call changes nothing.
pub fn install_tls_provider() {
    // rustls deprecates ring's provider for lacking post-quantum key exchange;
    // aws-lc-rs, which has it, needs a large C build. What goes out (a public key
    // set, hook calls, traces to a local collector) is short-lived.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let _ = provider.install_default();
}

/// The node's outbound HTTP client (cheap to clone: clones share the pool).
pub fn client() -> reqwest::Client {
    install_tls_provider();
    match builder().build() {
        Ok(client) => client,
        Err(e) => {
            // The system's CA certificates could not be loaded (a minimal image without
            // ca-certificates): the node still starts; http:// calls work, https://
            // ones fail as unverifiable, each logged where it is made.
            tracing::warn!(
                error = %e,
                "no system CA certificates: outbound https calls (auth.jwks_url) will fail"
            );
            without_roots()
        }
    }
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(IDLE_PER_HOST)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("chat-gateway/", env!("CARGO_PKG_VERSION")))
}

/// A client that trusts no certificate authority (its TLS set-up needs none).
fn without_roots() -> reqwest::Client {
    builder()
        .tls_certs_only(Vec::<reqwest::Certificate>::new())
        .build()
        // Nothing left to fail without roots to load.
        .expect("an outbound HTTP client without CA roots builds")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_builds_with_and_without_system_roots() {
        let _ = super::client();
        let _ = super::without_roots();
    }
}
