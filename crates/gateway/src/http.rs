//! HTTP routes: the WebSocket upgrade, health and readiness, metrics, the web client.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use crate::admission::Refusal;
use crate::connection;
use crate::state::Shared;

/// Every route of a node.
pub fn routes(state: Shared) -> Router {
    Router::new()
        .route("/ws", get(ws_upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::web::routes(&state.settings.client_nodes()))
        .merge(crate::api::routes(state.clone()))
        .with_state(state)
}

async fn ws_upgrade(
    State(state): State<Shared>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    if !origin_allowed(&state.origins, &headers) {
        metrics::counter!(crate::metric::ORIGIN_REFUSALS).increment(1);
        return (StatusCode::FORBIDDEN, "origin not allowed").into_response();
    }
    // Served without connect info (a test's own server): one unknown address.
    let peer = peer.map_or(IpAddr::from([0, 0, 0, 0]), |Extension(ConnectInfo(a))| {
        a.ip()
    });
    let ip = state.proxies.client_ip(peer, &headers);
    let admitted = match state.admission.admit(&state.settings.limits, ip) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            metrics::counter!(crate::metric::ADMISSION_REFUSALS, "reason" => refusal.as_str())
                .increment(1);
            let (status, why) = match refusal {
                Refusal::PerIp => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connections from this address",
                ),
                Refusal::SignIn => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many sign-ins from this address",
                ),
                Refusal::BeforeHello => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many connections waiting for hello",
                ),
            };
            return (status, why).into_response();
        }
    };
    let max = state.settings.server.max_frame;
    let tracker_token = state.tracker.token();
    ws.max_message_size(max)
        .max_frame_size(max)
        // Chat frames are small: a 512-byte read chunk per socket instead of 4 KiB
        // (larger frames still arrive whole; tungstenite grows the buffer for them).
        .read_buffer_size(512)
        // Frames are buffered and written together: the connection flushes once its
        // outbox is drained (an ack and its echo leave in one TCP segment).
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(usize::MAX)
        .on_upgrade(move |socket| async move {
            // The token keeps the task counted until the connection ends, so a
            // shutdown waits for it.
            let _tracked = tracker_token;
            connection::serve(state, socket, admitted).await;
        })
}

/// Same-origin by default; a configured list; or `*` for any.
fn origin_allowed(allowed: &[String], headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true; // non-browser clients send no Origin
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    if !allowed.is_empty() {
        return false;
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    !host.is_empty() && authority.eq_ignore_ascii_case(host)
}

async fn readyz(State(state): State<Shared>) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    if state.engine.ready().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "backend unavailable").into_response()
    }
}

async fn metrics(State(state): State<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: &str, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        h
    }

    #[test]
    fn origins() {
        let same = headers("http://localhost:8080", "localhost:8080");
        let other = headers("http://evil.example", "localhost:8080");
        assert!(origin_allowed(&[], &same));
        assert!(!origin_allowed(&[], &other));
        assert!(origin_allowed(&["*".into()], &other));
        assert!(origin_allowed(&["http://evil.example".into()], &other));
        assert!(!origin_allowed(&["http://app.example".into()], &other));
        assert!(origin_allowed(&[], &HeaderMap::new()));
    }
}
