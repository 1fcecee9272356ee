//! The server HTTP API for the host application (`/api/v1/…`), behind
//! `Authorization: Bearer <api.key>`. With no key configured the API does not exist
//! (404). A message sent here goes through the same engine call as a client's send,
//! so it is stored, delivered and counted exactly the same way.
//!
//! This module is the map: every route and the key check in front of them. The
//! calls are in `conversations.rs` (1:1 messages), `users.rs` and `rooms.rs`
//! (protocol 1.1); `errors.rs` is the error body, `params.rs` the ids and paging
//! every call checks alike.

mod conversations;
mod errors;
mod params;
mod rooms;
mod users;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use chat_protocol::ErrorCode;

use crate::state::Shared;
use errors::ApiError;

/// The API routes, with the key check in front of them.
pub fn routes(state: Shared) -> Router<Shared> {
    Router::new()
        .route("/api/v1/messages", post(conversations::send_message))
        .route(
            "/api/v1/conversations/{a}/{b}/messages",
            get(conversations::history),
        )
        .route(
            "/api/v1/conversations/{a}/{b}",
            delete(conversations::clear),
        )
        .route("/api/v1/users/{id}", put(users::put_user))
        .route("/api/v1/users/{id}/disconnect", post(users::disconnect))
        .route("/api/v1/rooms/{room}", get(rooms::lookup))
        .route(
            "/api/v1/rooms/{room}/messages",
            post(rooms::post_message).get(rooms::history),
        )
        .route(
            "/api/v1/rooms/{room}/members/{user}",
            put(rooms::add_member).delete(rooms::remove_member),
        )
        .route_layer(middleware::from_fn_with_state(state, require_key))
}

async fn require_key(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let key = &state.settings.api.key;
    if key.is_empty() {
        return StatusCode::NOT_FOUND.into_response();
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(given.as_bytes(), key.as_bytes()) {
        return ApiError::new(ErrorCode::Unauthorized, "missing or wrong API key").into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
