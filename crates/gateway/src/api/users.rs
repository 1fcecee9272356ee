//! The API's user calls: create or rename a user, and disconnect one (their
//! sessions revoked, their sockets closed on every node).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_protocol::api as wire;
use chat_protocol::User;

use super::errors::{bad, ApiError};
use super::params::check_id;
use crate::state::Shared;

pub(super) async fn put_user(
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

pub(super) async fn disconnect(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    check_id(&id, "id")?;
    state.engine.revoke_sessions(&id).await?;
    state.engine.disconnect_user(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
