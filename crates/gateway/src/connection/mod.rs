//! One WebSocket connection's life: upgrade, sign-in, recovery, then a single task
//! that `select!`s over the client's frames, the outbox fed by the router, the ping
//! timer and the close/shutdown signals.
//!
//! One task per connection keeps an idle socket cheap. Every write is cancellable by
//! the connection's [`Closer`], so a client that stops reading can never wedge its
//! task: the router's `try_send` fails, the closer fires, the socket is closed 4010.
//! Every write also has a deadline (the ping timeout): a peer that stops reading
//! while nothing else happens is closed 4010 too.
//!
//! The connection is generic over its [`Socket`]: axum's `WebSocket` in a node, an
//! in-memory socket in unit tests (`test_socket`), so its logic is tested without a
//! network or a process.

mod delivery;
#[cfg(test)]
mod fuzz_tests;
mod hello;
mod requests;
mod rooms;
mod social;
#[cfg(test)]
mod test_socket;
mod welcome;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes};
use bytes::Bytes;
use chat_protocol::{close, ErrorCode, ServerFrame, StreamId, User};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::limiter::SharedBudget;
use crate::presence;
use crate::router::{Closer, ConnHandle, Out};
use crate::state::Shared;

/// Why a connection stops.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The socket is gone: nothing more can be written.
    Gone,
    /// Close with this code and reason.
    Close(u16, &'static str),
}

/// What a connection reads client frames from and writes server frames to: axum's
/// `WebSocket`, or an in-memory socket in tests. Errors are axum's, so a read error
/// maps to a close code the same way whatever the socket.
pub(crate) trait Socket:
    Stream<Item = Result<WsMessage, axum::Error>>
    + Sink<WsMessage, Error = axum::Error>
    + Send
    + Unpin
    + 'static
{
}

impl<T> Socket for T where
    T: Stream<Item = Result<WsMessage, axum::Error>>
        + Sink<WsMessage, Error = axum::Error>
        + Send
        + Unpin
        + 'static
{
}

/// A signed-in connection.
pub(crate) struct Conn<S: Socket> {
    state: Shared,
    user: User,
    /// The session this connection signed in with (or was issued): `logout` revokes it.
    session: String,
    sink: SplitSink<S, WsMessage>,
    stream: SplitStream<S>,
    /// Live events and frames routed to this connection; bounded (`server.outbox`).
    rx: mpsc::Receiver<Out>,
    /// The router's handle on this connection (its outbox sender and closer).
    handle: ConnHandle,
    /// Users this connection watches for presence.
    watching: Vec<String>,
    /// Cursor of the last inbox event written to the socket: events at or before it
    /// are duplicates, an event whose `prev` is not it means a gap to fill.
    last_sent: StreamId,
    /// The user's request budgets, shared with their other connections on this node.
    budget: SharedBudget,
    /// When the frame being handled arrived (for the send→ack latency).
    received_at: Instant,
    /// When the client last sent anything (frames or pongs): the ping timeout.
    last_heard: Instant,
    /// Frames were written to the socket's buffer since the last flush.
    unflushed: bool,
    /// Live events that arrived ahead of their predecessor (see `delivery.rs`);
    /// boxed, as an idle connection has none.
    held: Option<Box<delivery::Held>>,
    /// Room state: the last event written per room, the JWT `rooms` claim.
    rooms: rooms::ConnRooms,
}

/// Outbox items written into one socket write at most (then the socket is flushed and
/// the client's frames get their turn).
const MAX_BATCH: usize = 64;

/// Serves one upgraded socket until it closes.
///
/// `admitted` holds the socket's admission places; the one among the sockets before
/// `hello` is released as soon as the sign-in phase ends.
pub(crate) async fn serve<S: Socket>(
    state: Shared,
    socket: S,
    admitted: crate::admission::Admitted,
) {
    let conn_id = state.router.next_conn_id();
    let span = tracing::info_span!("conn", conn.id = conn_id, node = %state.node_id, user.id = tracing::field::Empty);
    async move {
        metrics::gauge!(crate::metric::CONNECTIONS_OPEN).increment(1.0);
        run(state, socket, conn_id, admitted).await;
        metrics::gauge!(crate::metric::CONNECTIONS_OPEN).decrement(1.0);
    }
    .instrument(span)
    .await;
}

async fn run<S: Socket>(
    state: Shared,
    socket: S,
    conn_id: u64,
    mut admitted: crate::admission::Admitted,
) {
    let (mut sink, mut stream) = socket.split();
    // Boxed: the sign-in state is large and short-lived; an idle connection's future
    // should not carry room for it (likewise below for each handled frame).
    let signed = Box::pin(hello::sign_in(&state, &mut sink, &mut stream)).await;
    admitted.hello_done();
    let signed = match signed {
        Ok(signed) => signed,
        Err(stop) => {
            finish(&mut sink, &mut stream, stop).await;
            return;
        }
    };
    tracing::Span::current().record("user.id", signed.user.id.as_str());

    let (tx, rx) = mpsc::channel(state.settings.server.outbox);
    let handle = ConnHandle {
        id: conn_id,
        tx,
        closer: Arc::new(Closer::default()),
    };
    let user_id = signed.user.id.clone();
    let opened = match presence::open(&state, &user_id, handle.clone()).await {
        Ok(count) => count,
        Err(_) => {
            refuse_unavailable(&mut sink, &mut stream).await;
            return;
        }
    };
    let limits = &state.settings.limits;
    let (mut sink, mut stream, stop) = if opened > limits.max_connections_per_user as u64 {
        let frame = ServerFrame::error(
            None,
            ErrorCode::Forbidden,
            format!(
                "too many connections: at most {} per user",
                limits.max_connections_per_user
            ),
        );
        let _ = sink.send(text(frame.to_json())).await;
        (
            sink,
            stream,
            Stop::Close(close::POLICY, "too many connections"),
        )
    } else {
        let mut conn = Conn {
            budget: state.budgets.of(&signed.user.id, limits),
            state: state.clone(),
            user: signed.user.clone(),
            session: signed.session.clone(),
            sink,
            stream,
            rx,
            handle,
            watching: Vec::new(),
            last_sent: StreamId::ZERO,
            last_heard: Instant::now(),
            received_at: Instant::now(),
            unflushed: false,
            held: None,
            rooms: Default::default(),
        };
        let stop = match Box::pin(conn.welcome(&signed)).await {
            Ok(()) => {
                tracing::debug!(resumed = signed.resumed, "signed in");
                conn.run().await
            }
            Err(stop) => stop,
        };
        state.router.set_watch(&conn.handle, &conn.watching, &[]);
        (conn.sink, conn.stream, stop)
    };
    presence::close(&state, &user_id, conn_id).await;
    finish(&mut sink, &mut stream, stop).await;
}

impl<S: Socket> Conn<S> {
    /// The main loop: client frames, outbox, pings, close requests.
    async fn run(&mut self) -> Stop {
        let interval = Duration::from_secs(self.state.settings.server.ping_interval_secs);
        let timeout = Duration::from_secs(self.state.settings.server.ping_timeout_secs);
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        let closer = self.handle.closer.clone();
        let state = self.state.clone();
        let mut batched = 0;
        loop {
            if self.unflushed {
                // What is already queued for this connection goes out in the same
                // socket write (an ack and the echo of its message, a burst of events).
                if batched < MAX_BATCH {
                    if let Ok(out) = self.rx.try_recv() {
                        batched += 1;
                        if let Err(stop) = Box::pin(self.deliver(out)).await {
                            return stop;
                        }
                        continue;
                    }
                }
                batched = 0;
                if let Err(stop) = self.flush().await {
                    return stop;
                }
            }
            let result = tokio::select! {
                biased;
                _ = closer.token().cancelled() => {
                    return Stop::Close(closer.code().unwrap_or(close::GOING_AWAY), close_reason(closer.code()));
                }
                _ = state.shutdown.cancelled() => return Stop::Close(close::GOING_AWAY, "server shutting down"),
                out = self.rx.recv() => match out {
                    Some(out) => Box::pin(self.deliver(out)).await,
                    None => return Stop::Gone,
                },
                incoming = self.stream.next() => match incoming {
                    Some(Ok(msg)) => {
                        self.last_heard = Instant::now();
                        self.received_at = self.last_heard;
                        Box::pin(self.on_ws_message(msg)).await
                    }
                    Some(Err(e)) => Err(read_error_stop(&e)),
                    None => return Stop::Gone,
                },
                _ = delivery::held_deadline(&self.held) => Box::pin(self.release_held()).await,
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > timeout {
                        Err(Stop::Close(close::GOING_AWAY, "ping timeout"))
                    } else {
                        self.write(WsMessage::Ping(Bytes::new())).await
                    }
                }
            };
            if let Err(stop) = result {
                return stop;
            }
        }
    }

    async fn on_ws_message(&mut self, msg: WsMessage) -> Result<(), Stop> {
        match msg {
            WsMessage::Text(text) => self.on_text(text.as_str()).await,
            WsMessage::Binary(_) => Err(Stop::Close(
                close::UNSUPPORTED,
                "binary frames are not supported",
            )),
            WsMessage::Close(_) => Err(Stop::Gone),
            WsMessage::Ping(_) | WsMessage::Pong(_) => Ok(()),
        }
    }

    /// Writes one message into the socket's buffer, giving up as soon as the
    /// connection is asked to close. The main loop flushes before it waits again.
    ///
    /// Bounded in time: a socket that accepts nothing within the ping timeout is
    /// closed 4010, even when no other event would wake the connection.
    async fn write(&mut self, msg: WsMessage) -> Result<(), Stop> {
        self.unflushed = true;
        let deadline = self.write_deadline();
        tokio::select! {
            biased;
            _ = self.handle.closer.token().cancelled() => Err(self.closed_stop()),
            r = self.sink.feed(msg) => r.map_err(|_| Stop::Gone),
            _ = tokio::time::sleep_until(deadline) => Err(write_timeout()),
        }
    }

    /// Writes out everything buffered, giving up as soon as the connection is asked
    /// to close, or when the socket accepts nothing within the ping timeout (4010).
    async fn flush(&mut self) -> Result<(), Stop> {
        self.unflushed = false;
        let deadline = self.write_deadline();
        tokio::select! {
            biased;
            _ = self.handle.closer.token().cancelled() => Err(self.closed_stop()),
            r = self.sink.flush() => r.map_err(|_| Stop::Gone),
            _ = tokio::time::sleep_until(deadline) => Err(write_timeout()),
        }
    }

    /// When a write that starts now must have finished: the ping timeout from now.
    fn write_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
            + Duration::from_secs(self.state.settings.server.ping_timeout_secs.max(1))
    }

    fn closed_stop(&self) -> Stop {
        let code = self.handle.closer.code();
        Stop::Close(code.unwrap_or(close::GOING_AWAY), close_reason(code))
    }

    async fn write_frame(&mut self, frame: &ServerFrame) -> Result<(), Stop> {
        self.write(text(frame.to_json())).await
    }

    async fn write_bytes(&mut self, frame: Bytes) -> Result<(), Stop> {
        match Utf8Bytes::try_from(frame) {
            Ok(t) => self.write(WsMessage::Text(t)).await,
            Err(_) => {
                tracing::error!("dropping a routed frame that is not UTF-8");
                Ok(())
            }
        }
    }
}

/// A write that did not complete within the ping timeout: the peer stopped reading.
fn write_timeout() -> Stop {
    metrics::counter!(crate::metric::WRITE_TIMEOUTS).increment(1);
    Stop::Close(
        close::SLOW_CONSUMER,
        "write timeout: the client is not reading",
    )
}

fn close_reason(code: Option<u16>) -> &'static str {
    match code {
        Some(close::SLOW_CONSUMER) => "slow consumer: outgoing queue full",
        Some(close::POLICY) => "rate limit abuse",
        Some(close::UNAUTHORIZED) => "signed out",
        _ => "going away",
    }
}

/// Close code for a text frame that is not valid UTF-8 (RFC 6455: invalid payload).
pub(crate) const INVALID_DATA: u16 = 1007;

/// Close code when a gap cannot be filled (1013, try again later): the client
/// reconnects with its cursor and the recovery replay delivers what it missed.
pub(crate) const TRY_AGAIN: u16 = 1013;

/// A read the connection cannot go on without failed (recovery, room registration):
/// close 1011 and let the client sign in again, here or on another node.
fn unavailable(e: chat_engine::EngineError) -> Stop {
    tracing::warn!(error = %e, "recovery read failed");
    Stop::Close(close::INTERNAL, "backend unavailable")
}

/// Maps a read error to a close: a frame or message over `server.max_frame` (and a
/// control frame over 125 bytes) gets 1009, a text frame that is not valid UTF-8 1007
/// (tungstenite refuses both while reading); any other error means the socket is gone.
///
/// The cause is read by type: axum wraps the `tungstenite::Error` of its WebSocket
/// as is. Should axum ever wrap another tungstenite than ours, nothing would match
/// here, and `tests/invalid_utf8.rs` and `tests/limits.rs` would say so.
fn read_error_stop(e: &axum::Error) -> Stop {
    use tokio_tungstenite::tungstenite::error::{Error, ProtocolError};
    let cause = std::error::Error::source(e).and_then(|c| c.downcast_ref::<Error>());
    match cause {
        Some(Error::Utf8(_)) => Stop::Close(INVALID_DATA, "text frame is not valid UTF-8"),
        Some(Error::Capacity(_) | Error::Protocol(ProtocolError::ControlFrameTooBig)) => {
            Stop::Close(close::TOO_BIG, "frame too big")
        }
        _ => Stop::Gone,
    }
}

pub(crate) fn text(s: String) -> WsMessage {
    WsMessage::Text(Utf8Bytes::from(s))
}

/// The backend failed while signing in: say `unavailable` (retry later) and close 1011.
async fn refuse_unavailable<S: Socket>(
    sink: &mut SplitSink<S, WsMessage>,
    stream: &mut SplitStream<S>,
) {
    let frame = ServerFrame::error(
        None,
        ErrorCode::Unavailable,
        "backend unavailable, retry later",
    );
    let _ = sink.send(text(frame.to_json())).await;
    finish(
        sink,
        stream,
        Stop::Close(close::INTERNAL, "backend unavailable"),
    )
    .await;
}

/// Sends the close frame (bounded in time: the peer may not be reading) and ends.
///
/// After our Close frame, the client's frames are read and dropped until its Close
/// (or a short timeout): closing the TCP socket with unread data in it would make the
/// kernel send a reset, which can destroy our Close frame (and the last frames before
/// it) before the client reads them.
async fn finish<S: Socket>(
    sink: &mut SplitSink<S, WsMessage>,
    stream: &mut SplitStream<S>,
    stop: Stop,
) {
    if let Stop::Close(code, reason) = stop {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        let wait = if code == close::SLOW_CONSUMER { 10 } else { 3 };
        let sent = tokio::time::timeout(
            Duration::from_secs(wait),
            sink.send(WsMessage::Close(Some(frame))),
        )
        .await;
        if matches!(sent, Ok(Ok(()))) {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(msg)) = stream.next().await {
                    if matches!(msg, WsMessage::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

#[cfg(test)]
mod tests {
    use axum::extract::ws::Message as WsMessage;
    use bytes::Bytes;
    use chat_protocol::close;

    use super::test_socket;
    use crate::config::Settings;

    /// Read errors are told apart by their type, never by their text: oversized
    /// frames close 1009, invalid UTF-8 1007, anything else ends the connection.
    #[test]
    fn read_errors_are_classified_by_type() {
        use tokio_tungstenite::tungstenite::error::{CapacityError, Error, ProtocolError};

        let stop = |e: Error| super::read_error_stop(&axum::Error::new(e));
        let too_long = CapacityError::MessageTooLong {
            size: 70_000,
            max_size: 65_536,
        };
        assert!(matches!(
            stop(Error::Utf8("invalid utf-8 sequence".into())),
            super::Stop::Close(super::INVALID_DATA, _)
        ));
        for e in [
            Error::Capacity(too_long),
            Error::Protocol(ProtocolError::ControlFrameTooBig),
        ] {
            assert!(
                matches!(stop(e), super::Stop::Close(close::TOO_BIG, _)),
                "1009 expected"
            );
        }
        for e in [
            Error::ConnectionClosed,
            Error::Protocol(ProtocolError::ResetWithoutClosingHandshake),
            Error::Io(std::io::Error::other("Capacity: UTF-8 frame too long")),
        ] {
            assert!(matches!(stop(e), super::Stop::Gone));
        }
        // Not tungstenite's (the in-memory socket's errors): gone, whatever the text.
        let other = axum::Error::new("text frame is not valid UTF-8: too long");
        assert!(matches!(super::read_error_stop(&other), super::Stop::Gone));
    }

    /// A whole connection on the in-memory socket: sign-in, `welcome`, then a binary
    /// frame closes it with 1003 and its registration is released.
    /// The peer stops reading while nothing else happens: the pending write gives up
    /// after the ping timeout and the connection closes 4010 (it used to wait forever).
    #[tokio::test(start_paused = true)]
    async fn a_socket_that_accepts_nothing_is_closed_4010_after_the_ping_timeout() {
        let settings = Settings::default();
        let timeout = std::time::Duration::from_secs(settings.server.ping_timeout_secs);
        let state = test_socket::state(settings);
        let user = chat_protocol::User {
            id: "bob".into(),
            name: "bob".into(),
        };
        let (mut conn, tx, peer) = test_socket::conn(state, user);
        peer.stop_reading();
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(async move { conn.run().await });
        let frame = std::sync::Arc::new(Bytes::from_static(br#"{"type":"pong"}"#));
        tx.send(crate::router::Out::Frame(frame)).await.unwrap();
        let stop = tokio::time::timeout(timeout * 10, task)
            .await
            .expect("the connection gives up on the write")
            .expect("task");
        assert!(
            matches!(stop, super::Stop::Close(close::SLOW_CONSUMER, _)),
            "close 4010 expected, got {stop:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= timeout && waited <= timeout + std::time::Duration::from_secs(1),
            "gave up after {waited:?}, not after the ping timeout"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_signs_in_and_closes_on_the_in_memory_socket() {
        let mut settings = Settings::default();
        settings.auth.guests = Some(true);
        let state = test_socket::state(settings);
        let (socket, mut peer) = test_socket::pair();
        let admitted = crate::admission::Admitted::untracked();
        let task = tokio::spawn(super::serve(state.clone(), socket, admitted));

        peer.send(super::text(r#"{"type":"hello","username":"alice"}"#.into()));
        let Some(WsMessage::Text(welcome)) = peer.next().await else {
            panic!("welcome expected");
        };
        let welcome: serde_json::Value = serde_json::from_str(welcome.as_str()).unwrap();
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["user"]["name"], "alice", "{welcome}");
        let user = welcome["user"]["id"].as_str().expect("user id").to_string();
        assert!(state.router.has_connections(&user));

        peer.send(WsMessage::Binary(Bytes::from_static(b"\x00")));
        match peer.next().await {
            Some(WsMessage::Close(Some(frame))) => assert_eq!(frame.code, close::UNSUPPORTED),
            other => panic!("close 1003 expected, got {other:?}"),
        }
        task.await.expect("the connection task ends");
        assert!(!state.router.has_connections(&user));
    }
}
