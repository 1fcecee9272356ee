//! One WebSocket connection without any protocol state: send text or binary frames,
//! read frames raw or parsed as [`ServerFrame`]s. [`crate::Client`] is built on it;
//! tests use it directly to misbehave (requests before `hello`, garbage, binary
//! frames) and to watch exactly how the server closes.
//!
//! It never retries and never answers anything itself except what tungstenite does
//! (pongs to pings, the close handshake).

use std::time::Duration;

use chat_protocol::{ClientFrame, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::ClientError;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A frame as it came off the socket (pings and pongs are skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawFrame {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame; `code` is `None` for a close frame without a code.
    Close {
        code: Option<u16>,
        reason: String,
    },
    /// The socket ended without (or after) a close frame: EOF, reset or error.
    Ended(String),
}

/// A WebSocket connection to a gateway, with no `hello` sent.
pub struct Connection {
    socket: Socket,
    /// Set once the connection ended, so every later read reports the same close.
    closed: Option<(Option<u16>, String)>,
}

impl Connection {
    /// Opens the WebSocket (no `hello`), failing after `timeout`. Nagle's algorithm is
    /// off: chat frames are small and latency matters more than packet count.
    pub async fn open(url: &str, timeout: Duration) -> Result<Connection, ClientError> {
        let (socket, _response) = tokio::time::timeout(
            timeout,
            tokio_tungstenite::connect_async_with_config(url, None, true),
        )
        .await
        .map_err(|_| ClientError::Timeout(format!("connecting to {url}")))??;
        Ok(Connection {
            socket,
            closed: None,
        })
    }

    /// Sends a frame as JSON text.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let text = serde_json::to_string(frame)
            .map_err(|e| ClientError::Protocol(format!("cannot serialize frame: {e}")))?;
        self.send_text(&text).await
    }

    /// Sends a text frame exactly as given.
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.send(WsMessage::Text(text.into())).await
    }

    /// Sends a binary frame (the protocol forbids them: the server closes with 1003).
    pub async fn send_binary(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.send(WsMessage::Binary(data.to_vec().into())).await
    }

    async fn send(&mut self, message: WsMessage) -> Result<(), ClientError> {
        if let Some((code, reason)) = &self.closed {
            return Err(ClientError::Closed {
                code: *code,
                reason: reason.clone(),
            });
        }
        match self.socket.send(message).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.mark_closed(None, format!("send failed: {e}"))),
        }
    }

    /// The next frame off the socket, raw. After the end, returns `Ended` again.
    pub async fn next_raw(&mut self) -> RawFrame {
        if let Some((_, reason)) = &self.closed {
            return RawFrame::Ended(reason.clone());
        }
        loop {
            match self.socket.next().await {
                Some(Ok(WsMessage::Text(t))) => return RawFrame::Text(t.to_string()),
                Some(Ok(WsMessage::Binary(b))) => return RawFrame::Binary(b.to_vec()),
                Some(Ok(WsMessage::Close(frame))) => {
                    let (code, reason) = match frame {
                        Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                        None => (None, String::new()),
                    };
                    // Remember the code: the socket's end that follows must not hide it.
                    self.closed = Some((code, reason.clone()));
                    return RawFrame::Close { code, reason };
                }
                Some(Ok(_)) => continue, // ping, pong, raw frame
                Some(Err(e)) => {
                    let reason = e.to_string();
                    self.mark_closed(None, reason.clone());
                    return RawFrame::Ended(reason);
                }
                None => {
                    self.mark_closed(None, "connection ended".into());
                    return RawFrame::Ended("connection ended".into());
                }
            }
        }
    }

    /// The next frame, parsed. A close or the socket's end is `ClientError::Closed`.
    pub async fn next_frame(&mut self) -> Result<ServerFrame, ClientError> {
        if let Some((code, reason)) = &self.closed {
            return Err(ClientError::Closed {
                code: *code,
                reason: reason.clone(),
            });
        }
        match self.next_raw().await {
            RawFrame::Text(text) => serde_json::from_str(&text)
                .map_err(|e| ClientError::Protocol(format!("bad server frame ({e}): {text}"))),
            RawFrame::Binary(_) => Err(ClientError::Protocol("server sent a binary frame".into())),
            RawFrame::Close { code, reason } => Err(ClientError::Closed { code, reason }),
            RawFrame::Ended(reason) => Err(ClientError::Closed { code: None, reason }),
        }
    }

    /// `next_frame` with a deadline: `Ok(None)` on timeout (nothing is lost).
    pub async fn next_frame_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<ServerFrame>, ClientError> {
        match tokio::time::timeout(timeout, self.next_frame()).await {
            Ok(frame) => frame.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Reads until the connection ends and returns its close code (`None` when it
    /// ended without a close frame), or `Err` with the frames seen if it did not end
    /// within `timeout`.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Result<Option<u16>, Vec<RawFrame>> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.next_raw()).await {
                Ok(RawFrame::Close { code, .. }) => return Ok(code),
                Ok(RawFrame::Ended(_)) => return Ok(self.closed.as_ref().and_then(|c| c.0)),
                Ok(other) => seen.push(other),
                Err(_) => return Err(seen),
            }
        }
    }

    /// Whether the connection has ended, and with which close code.
    pub fn closed(&self) -> Option<&(Option<u16>, String)> {
        self.closed.as_ref()
    }

    /// Starts the close handshake and waits (briefly) for the server's side of it.
    pub async fn close(mut self) {
        if self.closed.is_none() {
            let _ = self.socket.close(None).await;
            let _ = self.wait_closed(Duration::from_secs(2)).await;
        }
    }

    fn mark_closed(&mut self, code: Option<u16>, reason: String) -> ClientError {
        let (code, reason) = self.closed.get_or_insert((code, reason)).clone();
        ClientError::Closed { code, reason }
    }
}
