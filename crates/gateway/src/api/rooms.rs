//! The server API's room calls (protocol 1.1), behind the same bearer key as the
//! rest of `/api/v1`: post a message as a member, add and remove members (without
//! the JWT restriction; members are told exactly as for a client's join or leave),
//! a room's history, and a room's lookup. The engine calls are the socket's, so a
//! message posted here is stored, published and counted the same way, and checked
//! by the same rules (`send_policy`).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_engine::events::now_rfc3339;
use chat_engine::{JoinOutcome, RoomLimits, RoomSendRequest, RoomState};
use chat_protocol::api as wire;
use chat_protocol::{ErrorCode, Message, User};
use serde::{Deserialize, Serialize};

use super::errors::{bad, not_found, ApiError};
use super::params::{check_id, check_room, page_query};
use crate::errors::Refused;
use crate::send_policy::{self, Origin};
use crate::state::Shared;

/// `POST /api/v1/rooms/{room}/messages`.
#[derive(Debug, Deserialize)]
pub(super) struct PostMessage {
    from: String,
    body: String,
    #[serde(default)]
    nonce: Option<String>,
}

/// `GET /api/v1/rooms/{room}` (and the answer to `PUT …/members/{user}`).
#[derive(Debug, Serialize)]
struct RoomBody {
    id: String,
    name: String,
    member_count: u64,
}

impl From<RoomState> for RoomBody {
    fn from(r: RoomState) -> Self {
        RoomBody {
            id: r.id,
            name: r.name,
            member_count: r.member_count,
        }
    }
}

/// A room's history page (room messages carry `room` and no `to`).
#[derive(Debug, Serialize)]
struct HistoryPage {
    messages: Vec<Message>,
    more: bool,
}

pub(super) async fn lookup(
    State(state): State<Shared>,
    Path(room): Path<String>,
) -> Result<Response, ApiError> {
    check_room(&room)?;
    let room = state
        .engine
        .room(&room)
        .await?
        .ok_or_else(|| not_found("no such room"))?;
    Ok(Json(RoomBody::from(room)).into_response())
}

pub(super) async fn post_message(
    State(state): State<Shared>,
    Path(room): Path<String>,
    body: Result<Json<PostMessage>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(|e| bad(e.body_text()))?;
    // Its message says "user", as this call's always has.
    check_id(&req.from, "user")?;
    send_policy::check_room_message(
        &room,
        &req.body,
        req.nonce.as_deref(),
        state.settings.server.max_body,
    )
    .map_err(Refused::from)?;
    let (nonce, ttl) = send_policy::stored_nonce(Origin::Api, req.nonce);
    let outcome = state
        .engine
        .room_send(RoomSendRequest {
            room,
            from: req.from,
            body: req.body,
            nonce: Some(nonce),
            nonce_ttl_secs: ttl,
            sent_at: now_rfc3339(),
        })
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Forbidden, "from is not a member of this room"))?;
    metrics::counter!(crate::metric::MESSAGES_RECEIVED).increment(1);
    Ok((StatusCode::CREATED, Json(outcome.message)).into_response())
}

pub(super) async fn history(
    State(state): State<Shared>,
    Path(room): Path<String>,
    Query(q): Query<wire::HistoryQuery>,
) -> Result<Response, ApiError> {
    check_room(&room)?;
    let (before, limit) = page_query(&q)?;
    if state.engine.room(&room).await?.is_none() {
        return Err(not_found("no such room"));
    }
    let (messages, more) = state.engine.room_history(&room, before, limit).await?;
    Ok(Json(HistoryPage { messages, more }).into_response())
}

/// The checks shared by adding and removing a member: the room id and the user id
/// are well formed and the user exists. Returns that user for the engine call (the
/// room's existence is the engine's to decide: a join creates it, a leave of a
/// missing room does nothing).
async fn member_request(state: &Shared, room: &str, user: &str) -> Result<User, ApiError> {
    check_room(room)?;
    check_id(user, "user")?;
    state
        .engine
        .get_user(user)
        .await?
        .ok_or_else(|| not_found("no such user"))
}

pub(super) async fn add_member(
    State(state): State<Shared>,
    Path((room, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let user = member_request(&state, &room, &user).await?;
    let limits = &state.settings.limits;
    let outcome = state
        .engine
        .join_room(
            &room,
            &user,
            None,
            RoomLimits {
                rooms_per_user: limits.max_rooms_per_user,
                members_per_room: limits.max_room_members,
            },
        )
        .await?;
    match outcome {
        JoinOutcome::Joined { room, .. } => Ok(Json(RoomBody::from(*room)).into_response()),
        JoinOutcome::RoomFull => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("room is full: at most {} members", limits.max_room_members),
        )),
        JoinOutcome::TooManyRooms => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "too many rooms: at most {} per user",
                limits.max_rooms_per_user
            ),
        )),
    }
}

pub(super) async fn remove_member(
    State(state): State<Shared>,
    Path((room, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let user = member_request(&state, &room, &user).await?;
    state.engine.leave_room(&room, &user).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
