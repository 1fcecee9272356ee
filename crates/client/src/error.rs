//! Errors of the client. Each variant is a different situation a caller reacts to
//! differently: a refused `hello`, a server `error` reply to one request, a closed
//! connection, a timeout. Never used for I/O retries inside the client: it does not
//! retry on its own.

use chat_protocol::{ErrorCode, ServerFrame};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered `hello` with an `error` (e.g. `unauthorized`). `close_code`
    /// is the WebSocket close code that followed, if the server closed (4001).
    #[error("hello refused: {code}: {message} (close code {close_code:?})")]
    Refused {
        code: ErrorCode,
        message: String,
        close_code: Option<u16>,
    },
    /// The server answered a request with an `error` frame carrying its `ref`.
    #[error("server error {code}: {message}")]
    Server { code: ErrorCode, message: String },
    /// The connection ended: `code` is the close frame's code, `None` when the socket
    /// ended without a close frame (reset, EOF).
    #[error("connection closed (code {code:?}): {reason}")]
    Closed { code: Option<u16>, reason: String },
    /// No reply or event within the allotted time.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The reply to a request had an unexpected type.
    #[error("unexpected reply: {0:?}")]
    Unexpected(Box<ServerFrame>),
    /// The server sent something that is not a valid server frame.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The WebSocket handshake or transport failed.
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
}

impl ClientError {
    /// The error code, for `Refused` and `Server` errors.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { code, .. } | ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The close code, for `Closed` (and a `Refused` that was followed by a close).
    pub fn close_code(&self) -> Option<u16> {
        match self {
            ClientError::Closed { code, .. } => *code,
            ClientError::Refused { close_code, .. } => *close_code,
            _ => None,
        }
    }
}
