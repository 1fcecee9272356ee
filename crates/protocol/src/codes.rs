//! Error codes carried in `error` frames and WebSocket close codes.

use serde::{Deserialize, Serialize};

/// The `code` of an `error` frame. The set is closed: clients switch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    TooLarge,
    RateLimited,
    /// The backend is down: nothing was stored, retry later.
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes used by the gateway.
pub mod close {
    /// Normal closure: after `logout` (protocol 1.2); the client does not reconnect.
    pub const NORMAL: u16 = 1000;
    /// Going away: the node is shutting down; reconnect elsewhere.
    pub const GOING_AWAY: u16 = 1001;
    /// A binary frame was received.
    pub const UNSUPPORTED: u16 = 1003;
    /// A frame larger than `limits.max_frame`.
    pub const TOO_BIG: u16 = 1009;
    /// Internal error.
    pub const INTERNAL: u16 = 1011;
    /// Unauthorized, or no `hello` in time.
    pub const UNAUTHORIZED: u16 = 4001;
    /// Policy: persistent rate-limit abuse.
    pub const POLICY: u16 = 4008;
    /// Slow consumer: the outgoing queue filled up.
    pub const SLOW_CONSUMER: u16 = 4010;
}
