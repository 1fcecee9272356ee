//! The API's error body: a wire code (its HTTP status from the error map) and a
//! message, as `{"error":{"code","message"}}`. Engine errors and refusals of the
//! shared rules (`send_policy`, `history`) become one through the error map
//! (`crate::errors`), so the API words them as the socket does.

use axum::response::{IntoResponse, Response};
use axum::Json;
use chat_engine::EngineError;
use chat_protocol::api as wire;
use chat_protocol::ErrorCode;

use crate::errors::{self, Refused};

/// An API error: wire code and message.
pub(crate) struct ApiError(ErrorCode, String);

impl ApiError {
    pub(super) fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError(code, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            errors::http_status(self.0),
            Json(wire::ApiError::new(self.0, self.1)),
        )
            .into_response()
    }
}

impl From<Refused> for ApiError {
    fn from((code, message): Refused) -> Self {
        ApiError(code, message)
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        errors::on_api(e).into()
    }
}

/// A request the API cannot take as it is (400).
pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError(ErrorCode::BadRequest, message.into())
}

/// What the request names does not exist (404).
pub(super) fn not_found(what: impl Into<String>) -> ApiError {
    ApiError(ErrorCode::NotFound, what.into())
}
