//! Requests from a signed-in client: parse, check, call the engine, reply.
//!
//! Every refusal is an `error` frame carrying the request's `ref`; nothing here
//! closes the connection except persistent rate-limit abuse (4008).

use chat_engine::events::now_rfc3339;
use chat_engine::SendRequest;
use chat_protocol::{
    close, dm_conversation, parse_client_frame, ClientFrame, ErrorCode, ServerFrame,
};

use tracing::Instrument;

use super::{Conn, Socket, Stop};
use crate::errors::{on_socket, refuse, Refused};
use crate::history;
use crate::limits::Kind;
use crate::send_policy::{self, Origin};

/// Refusals in a row after which a sender is closed with 4008.
const ABUSE_REFUSALS: u32 = 50;

impl<S: Socket> Conn<S> {
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
        // Every request kind has a budget per user (a send's is taken once the send
        // is checked, so a malformed send costs nothing).
        let (kind, cost) = request_kind(&frame);
        if let Some(kind) = kind.filter(|k| *k != Kind::Send) {
            if let Err(refused) = self.take(kind, cost) {
                return self.refuse_request(reference, refused).await;
            }
        }
        let result = match frame {
            ClientFrame::Hello { .. } => Err(refuse(ErrorCode::BadRequest, "already signed in")),
            ClientFrame::Ping { reference } => Ok(Some(ServerFrame::Pong { reference })),
            ClientFrame::Logout { reference } => return self.logout(reference).await,
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
            room @ (ClientFrame::Join { .. }
            | ClientFrame::Leave { .. }
            | ClientFrame::Members { .. }
            | ClientFrame::Rooms { .. }
            | ClientFrame::RoomSend { .. }
            | ClientFrame::RoomHistory { .. }
            | ClientFrame::RoomRead { .. }) => self.room_request(room).await,
        };
        match result {
            Ok(Some(reply)) => self.write_frame(&reply).await,
            Ok(None) => Ok(()),
            Err(refused) => self.refuse_request(reference, refused).await,
        }
    }

    /// `logout`: revokes this connection's session everywhere (the engine's key, so
    /// every node refuses it from now on), answers `logged_out` and closes with 1000.
    /// A backend failure is an `error` and the connection stays: the client may retry.
    async fn logout(&mut self, reference: Option<String>) -> Result<(), Stop> {
        let engine = self.state.engine.clone();
        if let Err(refused) = engine
            .revoke_session(&self.session)
            .await
            .map_err(on_socket)
        {
            return self.refuse_request(reference, refused).await;
        }
        tracing::info!("logged out");
        self.write_frame(&ServerFrame::LoggedOut { reference })
            .await?;
        Err(Stop::Close(close::NORMAL, "logged out"))
    }

    /// Answers a refused request with its `error`; persistent rate-limit abuse (many
    /// refusals in a row, any kind) closes the connection with 4008.
    async fn refuse_request(
        &mut self,
        reference: Option<String>,
        (code, message): Refused,
    ) -> Result<(), Stop> {
        let abuse = code == ErrorCode::RateLimited
            && crate::sync::lock(&self.budget).refusals() >= ABUSE_REFUSALS;
        let written = self
            .write_frame(&ServerFrame::error(reference, code, message))
            .await;
        if abuse {
            return Err(Stop::Close(close::POLICY, "rate limit abuse"));
        }
        written
    }

    /// Takes `cost` from the user's budget of `kind`, or refuses (`rate_limited`,
    /// counted by kind).
    pub(super) fn take(&self, kind: Kind, cost: u32) -> Result<(), Refused> {
        if crate::sync::lock(&self.budget).try_take(kind, cost) {
            return Ok(());
        }
        metrics::counter!(crate::metric::RATE_LIMITED, "kind" => kind.as_str()).increment(1);
        let message = match kind {
            Kind::Send => "sending too fast; the message was not stored".to_string(),
            other => format!("too many {} requests; nothing was done", other.as_str()),
        };
        Err(refuse(ErrorCode::RateLimited, message))
    }

    /// Checks a peer id named by the client: valid and not the client itself.
    pub(super) fn peer(&self, id: &str, field: &'static str) -> Result<(), Refused> {
        send_policy::check_peer(&self.user.id, id, field).map_err(Refused::from)
    }

    async fn send(
        &mut self,
        reference: Option<String>,
        to: String,
        body: String,
        nonce: Option<String>,
    ) -> Result<Option<ServerFrame>, Refused> {
        send_policy::check_send(
            &self.user.id,
            &to,
            &body,
            nonce.as_deref(),
            self.state.settings.server.max_body,
        )
        .map_err(Refused::from)?;
        self.take(Kind::Send, 1)?;
        if !self.state.user_exists(&to).await.map_err(on_socket)? {
            return Err(refuse(ErrorCode::NotFound, "no such user"));
        }
        let (nonce, nonce_ttl_secs) = send_policy::stored_nonce(Origin::Socket, nonce);
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
        let outcome = self.state.engine.send(request).await.map_err(on_socket)?;
        // The engine handed the sender's own event to the router before `send`
        // returned, so before the ack below is written.
        tracing::Span::current().record("message.id", outcome.message.id.as_str());
        let elapsed = started.elapsed().as_secs_f64();
        metrics::histogram!(crate::metric::REDIS_COMMAND_SECONDS, "op" => "send").record(elapsed);
        metrics::histogram!(crate::metric::SEND_ACK_SECONDS)
            .record(self.received_at.elapsed().as_secs_f64());
        metrics::counter!(crate::metric::MESSAGES_RECEIVED).increment(1);
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
        let (before, limit) = history::page(before.as_deref(), limit)?;
        // The conversation is derived from the signed-in user and the peer: no
        // request can name a conversation the user is not part of.
        let engine = self.state.engine.as_ref();
        let (messages, more) =
            history::conversation_page(engine, &self.user.id, &with, before, limit)
                .await
                .map_err(on_socket)?;
        Ok(Some(ServerFrame::History {
            reference,
            conversation: dm_conversation(&self.user.id, &with),
            messages,
            more,
        }))
    }

    /// Passes `typing` on to an existing user, at most once a second per recipient
    /// (extra ones are dropped silently).
    async fn typing(&mut self, to: String) -> Result<Option<ServerFrame>, Refused> {
        self.peer(&to, "to")?;
        if !crate::sync::lock(&self.budget).typing_due(&to) {
            return Ok(None);
        }
        if !self.state.user_exists(&to).await.map_err(on_socket)? {
            return Err(refuse(ErrorCode::NotFound, "no such user"));
        }
        {
            let mut budget = crate::sync::lock(&self.budget);
            if !budget.typing_due(&to) {
                return Ok(None); // another connection of the user passed one on
            }
            budget.typing_sent(&to);
        }
        let frame = ServerFrame::Typing {
            from: self.user.id.clone(),
        }
        .to_json();
        self.state
            .engine
            .publish_ephemeral(&to, &frame)
            .await
            .map_err(on_socket)?;
        Ok(None)
    }
}

/// The budget a request draws on and what it costs: a `watch` one token per id, the
/// rest one; `hello` (refused once signed in) none.
fn request_kind(frame: &ClientFrame) -> (Option<Kind>, u32) {
    match frame {
        // A logout ends the connection: at most one per connection, no budget.
        ClientFrame::Hello { .. } | ClientFrame::Logout { .. } => (None, 0),
        ClientFrame::Ping { .. } => (Some(Kind::Ping), 1),
        ClientFrame::Send { .. } => (Some(Kind::Send), 1),
        ClientFrame::History { .. } => (Some(Kind::History), 1),
        ClientFrame::Conversations { .. } => (Some(Kind::Conversations), 1),
        ClientFrame::Read { .. } => (Some(Kind::Read), 1),
        ClientFrame::Typing { .. } => (Some(Kind::Typing), 1),
        ClientFrame::Users { .. } => (Some(Kind::Users), 1),
        ClientFrame::Watch { users, .. } => (
            Some(Kind::Watch),
            u32::try_from(users.len()).unwrap_or(u32::MAX).max(1),
        ),
        ClientFrame::RoomSend { .. } => (Some(Kind::Send), 1),
        ClientFrame::RoomHistory { .. } => (Some(Kind::History), 1),
        ClientFrame::RoomRead { .. } => (Some(Kind::Read), 1),
        ClientFrame::Join { .. }
        | ClientFrame::Leave { .. }
        | ClientFrame::Members { .. }
        | ClientFrame::Rooms { .. } => (Some(Kind::Rooms), 1),
    }
}
