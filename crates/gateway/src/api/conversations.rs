//! The API's 1:1 calls: send a message as `from` to `to`, read and clear the
//! conversation of two users. A message sent here goes through the same rules
//! (`send_policy`) and engine call as a client's `send`, so it is stored, delivered
//! and counted exactly the same way.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_engine::events::now_rfc3339;
use chat_engine::SendRequest;
use chat_protocol::api as wire;

use super::errors::{bad, not_found, ApiError};
use super::params::{check_id, page_query};
use crate::errors::Refused;
use crate::send_policy::{self, Origin, Violation};
use crate::state::Shared;

pub(super) async fn send_message(
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
            return Err(not_found(format!("{field}: no such user")));
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

pub(super) async fn history(
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

pub(super) async fn clear(
    State(state): State<Shared>,
    Path((a, b)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_id(&a, "user_a")?;
    check_id(&b, "user_b")?;
    state.engine.clear_conversation(&a, &b).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
