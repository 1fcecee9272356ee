//! A page of history, the same for the socket and the server API, for conversations
//! and rooms alike: the request's `before` and `limit` checked in one place, and the
//! read of a conversation's page.
//!
//! Knows nothing of sockets or HTTP: callers turn a refusal into an `error` frame or
//! an API error, and check who may read what (a conversation is always derived from
//! the signed-in user on the socket; a room needs membership).

use chat_engine::{Engine, EngineError};
use chat_protocol::{ErrorCode, Message, StreamId};

use crate::errors::{refuse, Refused};

/// A history request's `before` (none: the newest page) and `limit` (1–100, default
/// 50).
pub(crate) fn page(
    before: Option<&str>,
    limit: Option<u32>,
) -> Result<(Option<StreamId>, usize), Refused> {
    let limit = limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(refuse(ErrorCode::BadRequest, "limit must be 1-100"));
    }
    let before = match before {
        Some(b) => Some(
            StreamId::parse(b)
                .ok_or_else(|| refuse(ErrorCode::BadRequest, "before is not a message id"))?,
        ),
        None => None,
    };
    Ok((before, limit as usize))
}

/// A page of the conversation of `a` and `b`: a `before` below every id (`0`, `0-0`)
/// is an empty page without asking the engine (protocol 1.1: out-of-range cursors are
/// never `internal`; Redis refuses an exclusive range ending before 0-0).
pub(crate) async fn conversation_page(
    engine: &dyn Engine,
    a: &str,
    b: &str,
    before: Option<StreamId>,
    limit: usize,
) -> Result<(Vec<Message>, bool), EngineError> {
    if before == Some(StreamId::ZERO) {
        return Ok((Vec::new(), false));
    }
    engine.history(a, b, before, limit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_default_to_50_and_take_1_to_100() {
        assert_eq!(page(None, None), Ok((None, 50)));
        assert_eq!(page(None, Some(1)), Ok((None, 1)));
        assert_eq!(page(None, Some(100)), Ok((None, 100)));
        for limit in [0, 101] {
            assert_eq!(
                page(None, Some(limit)),
                Err(refuse(ErrorCode::BadRequest, "limit must be 1-100"))
            );
        }
        assert_eq!(
            page(Some("5-1"), None),
            Ok((Some(StreamId { ms: 5, seq: 1 }), 50))
        );
        assert_eq!(
            page(Some("soon"), Some(1000)),
            Err(refuse(ErrorCode::BadRequest, "limit must be 1-100")),
            "the limit is checked first"
        );
        assert_eq!(
            page(Some(""), None),
            Err(refuse(ErrorCode::BadRequest, "before is not a message id"))
        );
    }
}
