//! The path and query parameters every API call checks the same way: user ids, room
//! ids and a history page's `before` and `limit`.

use chat_protocol::api as wire;
use chat_protocol::{valid_user_id, StreamId};

use super::errors::{bad, ApiError};
use crate::send_policy;

/// `id`, named `field` in the message, is a valid user id.
pub(super) fn check_id(id: &str, field: &str) -> Result<(), ApiError> {
    if valid_user_id(id) {
        Ok(())
    } else {
        Err(bad(format!("{field} is not a valid user id")))
    }
}

/// `room` is a valid room id (the socket's rule and wording).
pub(super) fn check_room(room: &str) -> Result<(), ApiError> {
    send_policy::check_room(room).map_err(|v| bad(v.to_string()))
}

/// A history request's `before` (empty: the newest page) and `limit` (1–100, default
/// 50), for conversations and rooms alike.
pub(super) fn page_query(q: &wire::HistoryQuery) -> Result<(Option<StreamId>, usize), ApiError> {
    let before = q.before.as_deref().filter(|s| !s.is_empty());
    Ok(crate::history::page(before, q.limit)?)
}
