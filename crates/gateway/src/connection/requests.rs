//! Requests from a signed-in client: parse, check, call the engine, reply.
//!
//! Every refusal is an `error` frame carrying the request's `ref`; nothing here
//! closes the connection except persistent rate-limit abuse (4008).

use chat_engine::{EngineError, SendRequest};
use chat_protocol::{
    close, dm_conversation, parse_client_frame, valid_user_id, ClientFrame, ErrorCode, ServerFrame,
    StreamId, MAX_NONCE,
};

use tracing::Instrument;

use super::{Conn, Stop};

/// How long a client nonce is remembered (protocol: 24 h).
const CLIENT_NONCE_TTL: u64 = 24 * 3600;
/// How long a gateway-generated nonce is remembered: long enough to cover the
/// engine's own retries, short enough to cost little memory.
const AUTO_NONCE_TTL: u64 = 60;
/// Refusals in a row after which a sender is closed with 4008.
const ABUSE_REFUSALS: u32 = 50;

/// A refused request: code and human-readable message.
pub(super) type Refused = (ErrorCode, String);

pub(super) fn refuse(code: ErrorCode, message: impl Into<String>) -> Refused {
    (code, message.into())
}

pub(super) fn engine_error(e: EngineError) -> Refused {
    metrics::counter!("chat_redis_errors_total").increment(1);
    match e {
        EngineError::Unavailable(_) => refuse(
            ErrorCode::Unavailable,
            "backend unavailable, retry later; nothing was stored",
        ),
        EngineError::NotFound(what) => refuse(ErrorCode::NotFound, what),
        EngineError::Internal(what) => {
            tracing::error!(error = %what, "engine error");
            refuse(ErrorCode::Internal, "internal error")
        }
    }
}

impl Conn {
    pub(super) async fn on_text(&mut self, raw: &str) -> Result<(), Stop> {
        let frame = match parse_client_frame(raw) {
            Ok(frame) => frame,
            Err(e) => {
                return self
                    .write_frame(&ServerFrame::error(
                        e.reference,
                        ErrorCode::BadRequest,
                        e.message,
                    ))
                    .await
            }
        };
        let reference = frame.reference().map(str::to_string);
        let result = match frame {
            ClientFrame::Hello { .. } => Err(refuse(ErrorCode::BadRequest, "already signed in")),
            ClientFrame::Ping { reference } => Ok(Some(ServerFrame::Pong { reference })),
            ClientFrame::Send {
                reference,
                to,
                body,
                nonce,
            } => {
                // One trace per send, not one per connection: a root span that the
                // recipients' nodes continue (its context travels with the event).
                // Without an exporter nobody reads it: not built (per-send cost).
                let span = if !self.state.traces_exported() {
                    tracing::Span::none()
                } else {
                    tracing::info_span!(
                        parent: None,
                        "chat.send",
                        user.id = %self.user.id,
                        peer.id = %to,
                        node = %self.state.node_id,
                        message.id = tracing::field::Empty,
                    )
                };
                self.send(reference, to, body, nonce).instrument(span).await
            }
            ClientFrame::History {
                reference,
                with,
                before,
                limit,
            } => self.history(reference, with, before, limit).await,
            ClientFrame::Typing { to, .. } => self.typing(to).await,
            ClientFrame::Conversations { reference } => self.conversations(reference).await,
            ClientFrame::Read { with, up_to, .. } => self.read(with, up_to).await,
            ClientFrame::Users {
                reference,
                query,
                limit,
            } => self.users(reference, query, limit).await,
            ClientFrame::Watch { users, .. } => self.watch(users).await,
        };
        match result {
            Ok(Some(reply)) => self.write_frame(&reply).await,
            Ok(None) => Ok(()),
            Err((code, message)) => {
                if code == ErrorCode::RateLimited && self.sends.refusals() >= ABUSE_REFUSALS {
                    let _ = self
                        .write_frame(&ServerFrame::error(reference, code, message))
                        .await;
                    return Err(Stop::Close(close::POLICY, "rate limit abuse"));
                }
                self.write_frame(&ServerFrame::error(reference, code, message))
                    .await
            }
        }
    }

    /// Checks a peer id named by the client: valid and not the client itself.
    pub(super) fn peer(&self, id: &str, field: &str) -> Result<(), Refused> {
        if !valid_user_id(id) {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("{field} is not a valid user id"),
            ));
        }
        if id == self.user.id {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("{field} cannot be yourself"),
            ));
        }
        Ok(())
    }

    async fn send(
        &mut self,
        reference: Option<String>,
        to: String,
        body: String,
        nonce: Option<String>,
    ) -> Result<Option<ServerFrame>, Refused> {
        self.peer(&to, "to")?;
        if body.trim().is_empty() {
            return Err(refuse(ErrorCode::BadRequest, "body is empty"));
        }
        let max = self.state.settings.server.max_body;
        if body.chars().count() > max {
            return Err(refuse(
                ErrorCode::TooLarge,
                format!("body is longer than {max} characters"),
            ));
        }
        if let Some(n) = &nonce {
            if n.is_empty() || n.chars().count() > MAX_NONCE || n.contains(char::is_whitespace) {
                return Err(refuse(
                    ErrorCode::BadRequest,
                    format!("nonce must be 1-{MAX_NONCE} characters without spaces"),
                ));
            }
        }
        if !self.sends.try_take() {
            metrics::counter!("chat_rate_limited_total").increment(1);
            return Err(refuse(
                ErrorCode::RateLimited,
                "sending too fast; the message was not stored",
            ));
        }
        if !self.state.user_exists(&to).await.map_err(engine_error)? {
            return Err(refuse(ErrorCode::NotFound, "no such user"));
        }
        let (nonce, nonce_ttl_secs) = match nonce {
            Some(n) => (format!("c:{n}"), CLIENT_NONCE_TTL),
            None => (
                format!("a:{}", uuid::Uuid::new_v4().simple()),
                AUTO_NONCE_TTL,
            ),
        };
        let request = SendRequest {
            from: self.user.id.clone(),
            to,
            body,
            nonce: Some(nonce),
            nonce_ttl_secs,
            sent_at: now_rfc3339(),
            trace: self
                .state
                .traces_exported()
                .then(|| crate::telemetry::traceparent(&tracing::Span::current()))
                .flatten(),
        };
        let started = std::time::Instant::now();
        let outcome = self
            .state
            .engine
            .send(request)
            .await
            .map_err(engine_error)?;
        // The engine handed the sender's own event to the router before `send`
        // returned, so before the ack below is written.
        tracing::Span::current().record("message.id", outcome.message.id.as_str());
        let elapsed = started.elapsed().as_secs_f64();
        metrics::histogram!("chat_redis_command_seconds", "op" => "send").record(elapsed);
        metrics::histogram!("chat_send_ack_seconds")
            .record(self.received_at.elapsed().as_secs_f64());
        metrics::counter!("chat_messages_received_total").increment(1);
        Ok(Some(ServerFrame::Ack {
            reference,
            message: outcome.message,
        }))
    }

    async fn history(
        &mut self,
        reference: Option<String>,
        with: String,
        before: Option<String>,
        limit: Option<u32>,
    ) -> Result<Option<ServerFrame>, Refused> {
        self.peer(&with, "with")?;
        let limit = limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(refuse(ErrorCode::BadRequest, "limit must be 1-100"));
        }
        let before = match before {
            Some(b) => Some(
                StreamId::parse(&b)
                    .ok_or_else(|| refuse(ErrorCode::BadRequest, "before is not a message id"))?,
            ),
            None => None,
        };
        // The conversation is derived from the signed-in user and the peer: no
        // request can name a conversation the user is not part of.
        let (messages, more) = self
            .state
            .engine
            .history(&self.user.id, &with, before, limit as usize)
            .await
            .map_err(engine_error)?;
        Ok(Some(ServerFrame::History {
            reference,
            conversation: dm_conversation(&self.user.id, &with),
            messages,
            more,
        }))
    }

    async fn typing(&mut self, to: String) -> Result<Option<ServerFrame>, Refused> {
        self.peer(&to, "to")?;
        let frame = ServerFrame::Typing {
            from: self.user.id.clone(),
        }
        .to_json();
        self.state
            .engine
            .publish_ephemeral(&to, &frame)
            .await
            .map_err(engine_error)?;
        Ok(None)
    }
}

/// The current time as RFC 3339 UTC with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&fmt)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}
