//! The server HTTP API for the host application (`/api/v1/…`), behind
//! `Authorization: Bearer <api.key>`. With no key configured the API does not exist
//! (404). A message sent here goes through the same engine call as a client's send,
//! so it is stored, delivered and counted exactly the same way.

use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use chat_engine::{EngineError, SendRequest};
use chat_protocol::api as wire;
use chat_protocol::{valid_user_id, ErrorCode, StreamId, User};

use crate::errors::{self, Refused};
use crate::send_policy::{self, Origin, Violation};
use crate::state::Shared;
use chat_engine::events::now_rfc3339;

/// The API routes, with the key check in front of them.
pub fn routes(state: Shared) -> Router<Shared> {
    Router::new()
        .route("/api/v1/messages", post(send_message))
        .route("/api/v1/conversations/{a}/{b}/messages", get(history))
        .route("/api/v1/conversations/{a}/{b}", delete(clear))
        .route("/api/v1/users/{id}", put(put_user))
        .route("/api/v1/users/{id}/disconnect", post(disconnect))
        .merge(crate::api_rooms::add(Router::new()))
        .route_layer(middleware::from_fn_with_state(state, require_key))
}

/// An API error: wire code (its HTTP status from the error map) and message, as
/// `{"error":{"code","message"}}`.
pub(crate) struct ApiError(ErrorCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            errors::http_status(self.0),
            Json(wire::ApiError::new(self.0, self.1)),
        )
            .into_response()
    }
}

impl From<Refused> for ApiError {
    fn from((code, message): Refused) -> Self {
        ApiError(code, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        errors::on_api(e).into()
    }
}

pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError(ErrorCode::BadRequest, message.into())
}

/// A history request's `before` (empty: the newest page) and `limit` (1–100, default
/// 50), for conversations and rooms alike.
pub(crate) fn page_query(q: &wire::HistoryQuery) -> Result<(Option<StreamId>, usize), ApiError> {
    let before = q.before.as_deref().filter(|s| !s.is_empty());
    Ok(crate::history::page(before, q.limit)?)
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
        return ApiError(ErrorCode::Unauthorized, "missing or wrong API key".into())
            .into_response();
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_id(id: &str, field: &str) -> Result<(), ApiError> {
    if valid_user_id(id) {
        Ok(())
    } else {
        Err(bad(format!("{field} is not a valid user id")))
    }
}

async fn send_message(
    State(state): State<Shared>,
    body: Result<Json<wire::SendMessage>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| bad(e.body_text()))?;
    check_id(&req.from, "from")?;
    // The socket's rules, `from` standing for the signed-in user.
    let max = state.settings.server.max_body;
    match send_policy::check_send(&req.from, &req.to, &req.body, req.nonce.as_deref(), max) {
        Ok(()) => {}
        Err(Violation::SelfPeer { .. }) => return Err(bad("from and to must differ")),
        Err(v) => return Err(Refused::from(v).into()),
    }
    for (id, field) in [(&req.from, "from"), (&req.to, "to")] {
        if !state.user_exists(id).await? {
            return Err(ApiError(
                ErrorCode::NotFound,
                format!("{field}: no such user"),
            ));
        }
    }
    let (nonce, ttl) = send_policy::stored_nonce(Origin::Api, req.nonce);
    let outcome = state
        .engine
        .send(SendRequest {
            from: req.from,
            to: req.to,
            body: req.body,
            nonce: Some(nonce),
            nonce_ttl_secs: ttl,
            sent_at: now_rfc3339(),
            trace: None,
        })
        .await?;
    metrics::counter!(crate::metric::MESSAGES_RECEIVED).increment(1);
    Ok((StatusCode::CREATED, Json(outcome.message)).into_response())
}

async fn history(
    State(state): State<Shared>,
    Path((a, b)): Path<(String, String)>,
    Query(q): Query<wire::HistoryQuery>,
) -> Result<Response, ApiError> {
    check_id(&a, "user_a")?;
    check_id(&b, "user_b")?;
    let (before, limit) = page_query(&q)?;
    let (messages, more) =
        crate::history::conversation_page(state.engine.as_ref(), &a, &b, before, limit).await?;
    Ok(Json(wire::HistoryPage { messages, more }).into_response())
}

async fn clear(
    State(state): State<Shared>,
    Path((a, b)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_id(&a, "user_a")?;
    check_id(&b, "user_b")?;
    state.engine.clear_conversation(&a, &b).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn put_user(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<wire::PutUser>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check_id(&id, "id")?;
    let Json(body) = body.map_err(|e| bad(e.body_text()))?;
    let name = body.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 64 {
        return Err(bad("name must be 1-64 characters"));
    }
    state.engine.upsert_user(&id, &name).await?;
    state.remember_user(&id);
    Ok(Json(User { id, name }).into_response())
}

async fn disconnect(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id, "id")?;
    state.engine.revoke_sessions(&id).await?;
    state.engine.disconnect_user(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
