//! The sign-in phase: the first frame must be a `hello` with exactly one credential,
//! within `server.hello_timeout_secs` of the upgrade.

use std::time::Duration;

use axum::extract::ws::Message as WsMessage;
use chat_engine::EngineError;
use chat_protocol::{
    close, normalize_username, parse_client_frame, valid_user_id, ClientFrame, ErrorCode,
    ServerFrame, User,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};

use super::{read_error_stop, text, Socket, Stop};
use crate::errors::{self, Refused};
use crate::state::Shared;

/// A signed-in user, before `welcome` is sent.
pub(crate) struct SignedIn {
    pub user: User,
    pub session: String,
    /// An existing session, or a token for a user the cluster already knew.
    pub resumed: bool,
    pub last_seen: Option<String>,
    /// Rooms: `hello.rooms` (room → last event id seen) and the JWT `rooms` claim
    /// (protocol 1.1, `rooms.rs`).
    pub rooms: super::rooms::SignedInRooms,
}

/// Why a `hello` was refused.
enum Refusal {
    /// Fixable by the client on the same connection (e.g. an invalid guest name).
    BadRequest(String),
    Unauthorized(String),
    /// The backend failed: told as the error map says, then the socket closes 1011.
    Backend(Refused),
}

impl From<EngineError> for Refusal {
    fn from(e: EngineError) -> Self {
        Refusal::Backend(errors::on_sign_in(e))
    }
}

/// Reads frames until a valid `hello`; refuses everything else per the protocol.
pub(crate) async fn sign_in<S: Socket>(
    state: &Shared,
    sink: &mut SplitSink<S, WsMessage>,
    stream: &mut SplitStream<S>,
) -> Result<SignedIn, Stop> {
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(state.settings.server.hello_timeout_secs);
    loop {
        let next = tokio::select! {
            _ = state.shutdown.cancelled() => return Err(Stop::Close(close::GOING_AWAY, "server shutting down")),
            next = tokio::time::timeout_at(deadline, stream.next()) => next,
        };
        let msg = match next {
            Err(_) => {
                reply(
                    sink,
                    ServerFrame::error(
                        None,
                        ErrorCode::Unauthorized,
                        "no hello within the time limit",
                    ),
                )
                .await;
                return Err(Stop::Close(close::UNAUTHORIZED, "hello timeout"));
            }
            Ok(None) => return Err(Stop::Gone),
            Ok(Some(Err(e))) => return Err(read_error_stop(&e)),
            Ok(Some(Ok(msg))) => msg,
        };
        let raw = match msg {
            WsMessage::Text(t) => t,
            WsMessage::Binary(_) => {
                return Err(Stop::Close(
                    close::UNSUPPORTED,
                    "binary frames are not supported",
                ))
            }
            WsMessage::Close(_) => return Err(Stop::Gone),
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
        };
        let frame = match parse_client_frame(raw.as_str()) {
            Ok(frame) => frame,
            Err(e) => {
                reply(
                    sink,
                    ServerFrame::error(e.reference, ErrorCode::BadRequest, e.message),
                )
                .await;
                continue;
            }
        };
        let reference = frame.reference().map(str::to_string);
        let ClientFrame::Hello {
            token,
            session,
            username,
            last_seen,
            rooms,
            ..
        } = frame
        else {
            reply(
                sink,
                ServerFrame::error(
                    reference,
                    ErrorCode::Unauthorized,
                    "sign in with hello first",
                ),
            )
            .await;
            return Err(Stop::Close(close::UNAUTHORIZED, "unauthorized"));
        };
        metrics::counter!(crate::metric::HELLOS).increment(1);
        match authenticate(state, token, session, username).await {
            Ok((user, session, resumed, claim)) => {
                state.remember_user(&user.id);
                return Ok(SignedIn {
                    user,
                    session,
                    resumed,
                    last_seen,
                    rooms: super::rooms::SignedInRooms {
                        last_seen: rooms.unwrap_or_default(),
                        claim,
                    },
                });
            }
            Err(Refusal::BadRequest(message)) => {
                reply(
                    sink,
                    ServerFrame::error(reference, ErrorCode::BadRequest, message),
                )
                .await;
            }
            Err(Refusal::Unauthorized(message)) => {
                tracing::info!(reason = %message, "sign-in refused");
                reply(
                    sink,
                    ServerFrame::error(reference, ErrorCode::Unauthorized, message),
                )
                .await;
                return Err(Stop::Close(close::UNAUTHORIZED, "unauthorized"));
            }
            Err(Refusal::Backend((code, message))) => {
                reply(sink, ServerFrame::error(reference, code, message)).await;
                return Err(Stop::Close(close::INTERNAL, "backend unavailable"));
            }
        }
    }
}

async fn reply<S: Socket>(sink: &mut SplitSink<S, WsMessage>, frame: ServerFrame) {
    let _ = tokio::time::timeout(Duration::from_secs(5), sink.send(text(frame.to_json()))).await;
}

/// Checks the one credential and returns the user, a session, `resumed` and the
/// `rooms` claim: the token's, or for a resumed session the one it was created with
/// (stored by the engine, so a session never outgrows the token that issued it).
async fn authenticate(
    state: &Shared,
    token: Option<String>,
    session: Option<String>,
    username: Option<String>,
) -> Result<(User, String, bool, Option<Vec<String>>), Refusal> {
    let engine = &state.engine;
    let ttl = state.settings.auth.session_ttl_secs;
    let given = [token.is_some(), session.is_some(), username.is_some()]
        .iter()
        .filter(|g| **g)
        .count();
    if given != 1 {
        return Err(Refusal::Unauthorized(
            "hello needs exactly one of token, session, username".into(),
        ));
    }
    if let Some(token) = token {
        let verified = state.jwt.verify(&token).await;
        let claims = verified.map_err(|e| Refusal::Unauthorized(e.to_string()))?;
        if !valid_user_id(&claims.sub) {
            return Err(Refusal::Unauthorized(format!(
                "token sub must be {}",
                chat_protocol::USER_ID_RULE
            )));
        }
        let name = claims
            .name
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty() && n.chars().count() <= 64)
            .unwrap_or_else(|| claims.sub.clone());
        let existed = engine.upsert_user(&claims.sub, &name).await?;
        let session = engine
            .create_session(&claims.sub, claims.rooms.as_deref(), ttl)
            .await?;
        metrics::counter!(crate::metric::SIGN_INS, "kind" => "token").increment(1);
        return Ok((
            User {
                id: claims.sub,
                name,
            },
            session,
            existed,
            claims.rooms,
        ));
    }
    if let Some(session) = session {
        if session.is_empty() || session.len() > 128 {
            return Err(Refusal::Unauthorized("session unknown or expired".into()));
        }
        let resumed = engine
            .resume_session(&session, ttl)
            .await?
            .ok_or_else(|| Refusal::Unauthorized("session unknown or expired".into()))?;
        metrics::counter!(crate::metric::SIGN_INS, "kind" => "session").increment(1);
        return Ok((resumed.user, session, true, resumed.rooms));
    }
    let raw = username.unwrap_or_default();
    if !state.settings.guests_allowed() {
        return Err(Refusal::Unauthorized(
            "guest sign-in is disabled on this cluster".into(),
        ));
    }
    let name = normalize_username(&raw).ok_or_else(|| {
        Refusal::BadRequest(
            "username must be 1-32 characters: letters, digits, space, . _ -".into(),
        )
    })?;
    let user = engine.create_guest(&name).await?;
    let session = engine.create_session(&user.id, None, ttl).await?;
    metrics::counter!(crate::metric::SIGN_INS, "kind" => "guest").increment(1);
    Ok((user, session, false, None))
}
