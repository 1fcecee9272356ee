//! The one error map: what a client is told when the engine fails, on the socket and
//! over the HTTP API, and the HTTP status of every wire [`ErrorCode`].
//!
//! An engine error that a client is told about is logged and counted
//! (`chat_redis_errors_total`) here, once, whatever the path; callers only pass the
//! refusal on. (Failures of a connection's own bookkeeping — registering and counting
//! it at sign-in, a recovery read — close the socket and are logged where they
//! happen: `presence.rs`, `connection/`.)

use axum::http::StatusCode;
use chat_engine::EngineError;
use chat_protocol::ErrorCode;

use crate::metric;

/// A refused request: the wire code and a human-readable message.
pub type Refused = (ErrorCode, String);

pub fn refuse(code: ErrorCode, message: impl Into<String>) -> Refused {
    (code, message.into())
}

/// Where an engine error surfaces. Only the wording and the log level differ; the
/// codes are the same everywhere except during sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// A signed-in client's request on the socket: an `error` frame with its `ref`.
    Socket,
    /// Signing in (`hello`, registering the connection): every failure is
    /// `unavailable` and the socket is closed 1011, so the client retries elsewhere.
    SignIn,
    /// The server HTTP API: the code's [`http_status`] and `{"error":{…}}`.
    Api,
}

/// The message of `unavailable` when nothing was stored.
const UNAVAILABLE: &str = "backend unavailable, retry later";

/// Added to [`UNAVAILABLE`] for a send that may have been stored.
pub const MAYBE_STORED: &str = "the message may have been stored: retry with the same nonce";

/// Maps an engine error to what the client is told, logging and counting it.
pub fn engine_error(e: EngineError, surface: Surface) -> Refused {
    metrics::counter!(metric::REDIS_ERRORS).increment(1);
    if surface == Surface::SignIn {
        tracing::warn!(error = %e, "sign-in failed on the backend");
        return refuse(ErrorCode::Unavailable, UNAVAILABLE);
    }
    // One arm per fact the engine reports.
    match e {
        EngineError::MaybeStored(_) => refuse(
            ErrorCode::Unavailable,
            format!("{UNAVAILABLE}; {MAYBE_STORED}"),
        ),
        EngineError::Unavailable(_) | EngineError::Refused { .. } => match surface {
            Surface::Socket => refuse(
                ErrorCode::Unavailable,
                format!("{UNAVAILABLE}; nothing was stored"),
            ),
            _ => refuse(ErrorCode::Unavailable, UNAVAILABLE),
        },
        EngineError::NotFound(what) => refuse(ErrorCode::NotFound, what),
        EngineError::Internal(what) => {
            tracing::error!(error = %what, ?surface, "engine error");
            refuse(ErrorCode::Internal, "internal error")
        }
    }
}

/// An engine error on a signed-in client's socket request.
pub fn on_socket(e: EngineError) -> Refused {
    engine_error(e, Surface::Socket)
}

/// An engine error while signing in.
pub fn on_sign_in(e: EngineError) -> Refused {
    engine_error(e, Surface::SignIn)
}

/// An engine error in an HTTP API call.
pub fn on_api(e: EngineError) -> Refused {
    engine_error(e, Surface::Api)
}

/// The HTTP status the API answers with for a wire error code.
pub fn http_status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_by_surface() {
        let down = || EngineError::Unavailable("connection refused".into());
        assert_eq!(
            on_socket(down()),
            refuse(
                ErrorCode::Unavailable,
                "backend unavailable, retry later; nothing was stored"
            )
        );
        assert_eq!(
            on_api(down()),
            refuse(ErrorCode::Unavailable, "backend unavailable, retry later")
        );
        // A send whose attempts went unanswered never claims nothing was stored.
        let maybe = || EngineError::MaybeStored("timeout".into());
        for refused in [on_socket(maybe()), on_api(maybe())] {
            assert_eq!(
                refused,
                refuse(
                    ErrorCode::Unavailable,
                    "backend unavailable, retry later; the message may have been stored: \
                     retry with the same nonce"
                )
            );
        }
        // A write Redis refused did not run.
        let oom = EngineError::Refused {
            refusal: chat_engine::WriteRefusal::OutOfMemory,
            reason: "OOM command not allowed".into(),
        };
        assert_eq!(
            on_socket(oom),
            refuse(
                ErrorCode::Unavailable,
                "backend unavailable, retry later; nothing was stored"
            )
        );
        for surface in [Surface::Socket, Surface::Api] {
            assert_eq!(
                engine_error(EngineError::NotFound("no such user".into()), surface),
                refuse(ErrorCode::NotFound, "no such user")
            );
            // The cause of an internal error stays in the log.
            assert_eq!(
                engine_error(EngineError::Internal("bad reply: 42".into()), surface),
                refuse(ErrorCode::Internal, "internal error")
            );
        }
        // Signing in: every failure is `unavailable` (the socket then closes 1011).
        for e in [
            down(),
            EngineError::NotFound("x".into()),
            EngineError::Internal("y".into()),
        ] {
            assert_eq!(
                on_sign_in(e),
                refuse(ErrorCode::Unavailable, "backend unavailable, retry later")
            );
        }
    }

    #[test]
    fn every_code_has_its_status() {
        let pairs = [
            (ErrorCode::BadRequest, 400),
            (ErrorCode::Unauthorized, 401),
            (ErrorCode::Forbidden, 403),
            (ErrorCode::NotFound, 404),
            (ErrorCode::TooLarge, 413),
            (ErrorCode::RateLimited, 429),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::Internal, 500),
        ];
        for (code, status) in pairs {
            assert_eq!(http_status(code).as_u16(), status, "{code}");
        }
    }
}
