//! Bodies of the server HTTP API (`/api/v1/…`, `docs/protocol.md`): what the host
//! application sends and what it gets back. `POST /api/v1/messages` answers a
//! [`Message`](crate::Message) and `PUT /api/v1/users/{id}` a [`User`](crate::User);
//! every refusal is an [`ApiError`].

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use crate::{ErrorCode, Message};

/// `POST /api/v1/messages`: a message sent on behalf of `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendMessage {
    pub from: String,
    pub to: String,
    pub body: String,
    /// Makes the send idempotent (24 h), like a client's `send.nonce`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// `PUT /api/v1/users/{id}`: create or rename a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutUser {
    pub name: String,
}

/// The query of `GET /api/v1/conversations/{a}/{b}/messages`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Only messages older than this message id (empty = from the newest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// 1-100, default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// The answer to a history query: up to `limit` messages, oldest first, and whether
/// older ones exist.
///
/// Each message's fields are written in alphabetical order (`body`, `conversation`,
/// `from`, `id`, `sent_at`, `to`), unlike [`Message`]'s own order: the API has always
/// answered them so, and its bytes do not change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    #[serde(serialize_with = "alphabetical")]
    pub messages: Vec<Message>,
    pub more: bool,
}

/// Every refusal: `{"error":{"code","message"}}`, the HTTP status being the code's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ApiErrorDetail,
}

/// The `error` of an [`ApiError`]: the same codes as an `error` frame's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            error: ApiErrorDetail {
                code,
                message: message.into(),
            },
        }
    }
}

fn alphabetical<S: Serializer>(messages: &[Message], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(messages.iter().map(Alphabetical))
}

/// A message with its fields in alphabetical order.
struct Alphabetical<'a>(&'a Message);

impl Serialize for Alphabetical<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut st = s.serialize_struct("Message", 6)?;
        st.serialize_field("body", &m.body)?;
        st.serialize_field("conversation", &m.conversation)?;
        st.serialize_field("from", &m.from)?;
        st.serialize_field("id", &m.id)?;
        st.serialize_field("sent_at", &m.sent_at)?;
        st.serialize_field("to", &m.to)?;
        st.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(i: u32) -> Message {
        Message {
            id: format!("1700000000000-{i}"),
            conversation: "dm:alice:bob".into(),
            from: "alice".into(),
            to: "bob".into(),
            body: format!("hello \"{i}\" ✓"),
            sent_at: "2026-12-04T08:00:00.000Z".into(),
            room: None,
        }
    }

    /// The bytes the gateway wrote before these types existed (`json!` values).
    #[test]
    fn same_bytes_as_before() {
        for (messages, more) in [(vec![], false), (vec![message(1), message(2)], true)] {
            let before = json!({"messages": messages, "more": more}).to_string();
            let page = HistoryPage { messages, more };
            assert_eq!(serde_json::to_string(&page).unwrap(), before);
            let back: HistoryPage = serde_json::from_str(&before).unwrap();
            assert_eq!(back, page);
        }
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::TooLarge,
            ErrorCode::Unavailable,
        ] {
            let before =
                json!({"error": {"code": code.as_str(), "message": "body is empty"}}).to_string();
            let error = ApiError::new(code, "body is empty");
            assert_eq!(serde_json::to_string(&error).unwrap(), before);
            assert_eq!(serde_json::from_str::<ApiError>(&before).unwrap(), error);
        }
    }

    #[test]
    fn requests_parse_as_before() {
        let send: SendMessage =
            serde_json::from_str(r#"{"from":"a","to":"b","body":"hi","extra":1}"#).unwrap();
        assert_eq!(
            send.nonce, None,
            "nonce is optional; unknown fields ignored"
        );
        let send: SendMessage =
            serde_json::from_str(r#"{"from":"a","to":"b","body":"hi","nonce":null}"#).unwrap();
        assert_eq!(send.nonce, None);
        let send: SendMessage =
            serde_json::from_str(r#"{"from":"a","to":"b","body":"hi","nonce":"n1"}"#).unwrap();
        assert_eq!(send.nonce.as_deref(), Some("n1"));
        assert!(serde_json::from_str::<SendMessage>(r#"{"from":"a","to":"b"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&send).unwrap(),
            r#"{"from":"a","to":"b","body":"hi","nonce":"n1"}"#
        );
        let user: PutUser = serde_json::from_str(r#"{"name":"Bob"}"#).unwrap();
        assert_eq!(user.name, "Bob");
        assert!(serde_json::from_str::<PutUser>("{}").is_err());
    }
}
