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
use chat_protocol::{valid_user_id, StreamId, User, MAX_NONCE};
use serde::Deserialize;
use serde_json::json;

use crate::connection::now_rfc3339;
use crate::state::Shared;

/// The API routes, with the key check in front of them.
pub fn routes(state: Shared) -> Router<Shared> {
    Router::new()
        .route("/api/v1/messages", post(send_message))
        .route("/api/v1/conversations/{a}/{b}/messages", get(history))
        .route("/api/v1/conversations/{a}/{b}", delete(clear))
        .route("/api/v1/users/{id}", put(put_user))
        .route("/api/v1/users/{id}/disconnect", post(disconnect))
        .route_layer(middleware::from_fn_with_state(state, require_key))
}

/// An API error: status, wire code and message, as `{"error":{"code","message"}}`.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(json!({"error": {"code": self.1, "message": self.2}})),
        )
            .into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Unavailable(_) => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "backend unavailable, retry later".into(),
            ),
            EngineError::NotFound(what) => ApiError(StatusCode::NOT_FOUND, "not_found", what),
            EngineError::Internal(what) => {
                tracing::error!(error = %what, "engine error in API call");
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error".into(),
                )
            }
        }
    }
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_request", message.into())
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
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API key".into(),
        )
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

#[derive(Deserialize)]
struct SendBody {
    from: String,
    to: String,
    body: String,
    nonce: Option<String>,
}

async fn send_message(
    State(state): State<Shared>,
    body: Result<Json<SendBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| bad(e.body_text()))?;
    check_id(&req.from, "from")?;
    check_id(&req.to, "to")?;
    if req.from == req.to {
        return Err(bad("from and to must differ"));
    }
    if req.body.trim().is_empty() {
        return Err(bad("body is empty"));
    }
    let max = state.settings.server.max_body;
    if req.body.chars().count() > max {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("body is longer than {max} characters"),
        ));
    }
    if let Some(n) = &req.nonce {
        if n.is_empty() || n.chars().count() > MAX_NONCE {
            return Err(bad(format!("nonce must be 1-{MAX_NONCE} characters")));
        }
    }
    for (id, field) in [(&req.from, "from"), (&req.to, "to")] {
        if !state.user_exists(id).await? {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("{field}: no such user"),
            ));
        }
    }
    let (nonce, ttl) = match req.nonce {
        Some(n) => (format!("p:{n}"), 24 * 3600),
        None => (format!("a:{}", uuid::Uuid::new_v4().simple()), 60),
    };
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
    metrics::counter!("chat_messages_received_total").increment(1);
    Ok((StatusCode::CREATED, Json(outcome.message)).into_response())
}

#[derive(Deserialize)]
struct HistoryQuery {
    before: Option<String>,
    limit: Option<u32>,
}

async fn history(
    State(state): State<Shared>,
    Path((a, b)): Path<(String, String)>,
    Query(q): Query<HistoryQuery>,
) -> Result<Response, ApiError> {
    check_id(&a, "user_a")?;
    check_id(&b, "user_b")?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(bad("limit must be 1-100"));
    }
    let before = match q.before.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(StreamId::parse(s).ok_or_else(|| bad("before is not a message id"))?),
        None => None,
    };
    let (messages, more) = state.engine.history(&a, &b, before, limit as usize).await?;
    Ok(Json(json!({"messages": messages, "more": more})).into_response())
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

#[derive(Deserialize)]
struct UserBody {
    name: String,
}

async fn put_user(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Result<Json<UserBody>, axum::extract::rejection::JsonRejection>,
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
