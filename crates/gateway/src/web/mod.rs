//! The bundled web client: a few static files embedded at build time and served
//! with their content types and `Cache-Control: no-cache` (a node upgrade must never
//! leave a browser running a stale client against a newer server).
//!
//! Plain ES modules, no build step: `chat-protocol.js` is the reusable protocol
//! client (with `chat-link.js` and `chat-wire.js`, which it imports), `app.js` the UI
//! (with `app-state.js`, `conversations.js`, `rooms.js`, `render.js` and `view.js`). This module
//! only serves bytes; it never looks at sessions, users or messages.

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

/// Routes serving the web client; merge them into the node's router.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move || async move { respond(asset) }))
    })
}

fn respond(asset: &'static Asset) -> Response {
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
            (
                header::CONTENT_SECURITY_POLICY,
                // The client loads nothing from elsewhere and never evaluates strings;
                // `connect-src` stays open because `?nodes=` may list other nodes.
                HeaderValue::from_static(
                    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                     style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; \
                     frame-ancestors 'none'",
                ),
            ),
        ],
        asset.body,
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
        let response = respond(asset);
        let headers = response.headers();
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
    }
}
