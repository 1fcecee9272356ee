//! The bundled web client: a few static files embedded at build time and served
//! with their content types and `Cache-Control: no-cache` (a node upgrade must never
//! leave a browser running a stale client against a newer server).
//!
//! Plain ES modules, no build step: `chat-protocol.js` is the reusable protocol
//! client (with `chat-link.js`, `chat-store.js` and `chat-wire.js`, which it imports), `app.js` the UI
//! (with `app-state.js`, `conversations.js`, `rooms.js`, `render.js` and `view.js`). This module
//! only serves bytes; it never looks at sessions, users or messages.
//!
//! One setting shapes them: `server.client_nodes`, the other nodes the page may connect
//! to. It is written into `index.html` (a `<meta>` the page reads before it accepts a
//! `?nodes=` URL) and into every response's CSP `connect-src`, which lists exactly
//! `'self'` and those nodes: a link naming any other address gets no socket there, so a
//! stored session cannot be sent to it.

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file: its route, content type and body.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("index.html"),
    },
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("app.js"),
    },
    Asset {
        path: "/app-state.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("app-state.js"),
    },
    Asset {
        path: "/conversations.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("conversations.js"),
    },
    Asset {
        path: "/render.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("render.js"),
    },
    Asset {
        path: "/chat-protocol.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("chat-protocol.js"),
    },
    Asset {
        path: "/chat-link.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("chat-link.js"),
    },
    Asset {
        path: "/chat-store.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("chat-store.js"),
    },
    Asset {
        path: "/chat-wire.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("chat-wire.js"),
    },
    Asset {
        path: "/rooms.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("rooms.js"),
    },
    Asset {
        path: "/view.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("view.js"),
    },
    Asset {
        path: "/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("app.css"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_str!("favicon.svg"),
    },
];

/// The `<meta>` in `index.html` whose `content` the node fills with its client nodes.
const NODES_META: &str = r#"<meta name="chat-client-nodes" content="">"#;

/// Routes serving the web client that may connect to its own origin and to
/// `client_nodes` (validated `ws://`/`wss://` URLs, see `config.rs`); merge them into
/// the node's router.
pub fn routes<S: Clone + Send + Sync + 'static>(client_nodes: &[String]) -> Router<S> {
    let csp = HeaderValue::from_str(&content_security_policy(client_nodes))
        .unwrap_or_else(|_| HeaderValue::from_static(CSP_SELF_ONLY));
    let index = Bytes::from(index_html(client_nodes));
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let body = if asset.content_type.starts_with("text/html") {
            index.clone()
        } else {
            Bytes::from_static(asset.body.as_bytes())
        };
        let csp = csp.clone();
        router.route(
            asset.path,
            get(move || async move { respond(asset, body, csp) }),
        )
    })
}

/// The policy when no other node is configured (and the fallback should a configured
/// one not fit a header, which validation already rules out).
const CSP_SELF_ONLY: &str = "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
     style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

/// The client loads nothing from elsewhere and never evaluates strings; it connects to
/// its own origin (`'self'` covers `ws:`/`wss:` of it) and to the configured nodes only.
fn content_security_policy(client_nodes: &[String]) -> String {
    let connect: String = client_nodes.iter().map(|url| format!(" {url}")).collect();
    CSP_SELF_ONLY.replacen(
        "connect-src 'self';",
        &format!("connect-src 'self'{connect};"),
        1,
    )
}

/// `index.html` with the client nodes in its `<meta>`, space-separated and escaped.
fn index_html(client_nodes: &[String]) -> String {
    let escaped = client_nodes
        .join(" ")
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    include_str!("index.html").replacen(
        NODES_META,
        &format!(r#"<meta name="chat-client-nodes" content="{escaped}">"#),
        1,
    )
}

fn respond(asset: &'static Asset, body: Bytes, csp: HeaderValue) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CONTENT_SECURITY_POLICY, csp),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_unique_route_and_a_body() {
        let mut paths: Vec<_> = ASSETS.iter().map(|a| a.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len());
        assert!(ASSETS.iter().all(|a| !a.body.is_empty()));
    }

    #[test]
    fn index_loads_the_modules_it_names() {
        let index = include_str!("index.html");
        for name in ["/app.js", "/app.css"] {
            assert!(index.contains(name), "index.html does not load {name}");
        }
        assert!(include_str!("app.js").contains("./chat-protocol.js"));
    }

    #[test]
    fn every_imported_module_is_served() {
        for asset in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for import in asset.body.split("from './").skip(1) {
                let name = import.split('\'').next().unwrap_or_default();
                assert!(
                    ASSETS
                        .iter()
                        .any(|a| a.path.strip_prefix('/') == Some(name)),
                    "{} imports ./{name}, which is not served",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn responses_are_not_cached_and_typed() {
        let asset = ASSETS
            .iter()
            .find(|a| a.path == "/app.js")
            .expect("app.js is embedded");
        let response = respond(
            asset,
            Bytes::from_static(asset.body.as_bytes()),
            HeaderValue::from_static(CSP_SELF_ONLY),
        );
        let headers = response.headers();
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
    }

    #[test]
    fn the_page_may_connect_to_its_own_origin_and_the_configured_nodes_only() {
        let nodes = [
            "wss://b.example/ws".to_string(),
            "ws://127.0.0.1:9/ws".into(),
        ];
        let csp = content_security_policy(&nodes);
        assert!(
            csp.contains("connect-src 'self' wss://b.example/ws ws://127.0.0.1:9/ws;"),
            "{csp}"
        );
        assert!(!csp.contains(" ws: ") && !csp.contains(" wss: "), "{csp}");
        assert!(content_security_policy(&[]).contains("connect-src 'self';"));

        let index = index_html(&nodes);
        assert!(index.contains(
            r#"<meta name="chat-client-nodes" content="wss://b.example/ws ws://127.0.0.1:9/ws">"#
        ));
        assert!(index_html(&[]).contains(NODES_META));
        let odd = index_html(&[r#"wss://x/"><script>"#.to_string()]);
        assert!(
            !odd.contains("<script>"),
            "escaped even if validation let it by"
        );
    }
}
