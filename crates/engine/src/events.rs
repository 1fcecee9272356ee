//! The JSON of the stored and ephemeral events both engines produce, built in one
//! place so the memory and Redis engines write byte-identical frames (the Lua library
//! writes the same field order: see `redis/scripts/*.lua`).

use serde::Serialize;

/// The current time as RFC 3339 UTC with milliseconds (`2026-11-24T15:30:00.123Z`).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    now.format(&fmt)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `{"type":"message","message":{…}}`, the inbox form of a message (the cursor is
/// added per connection when it is sent).
pub fn message_event_json(message: &chat_protocol::Message) -> String {
    #[derive(Serialize)]
    struct Event<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        message: &'a chat_protocol::Message,
    }
    serde_json::to_string(&Event {
        kind: "message",
        message,
    })
    .unwrap_or_default()
}

/// `{"type":"read","conversation":"…","by":"<reader>","up_to":"<id>"}`, the inbox
/// form of a read receipt.
pub fn read_event_json(conversation: &str, by: &str, up_to: &str) -> String {
    #[derive(Serialize)]
    struct Event<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        conversation: &'a str,
        by: &'a str,
        up_to: &'a str,
    }
    serde_json::to_string(&Event {
        kind: "read",
        conversation,
        by,
        up_to,
    })
    .unwrap_or_default()
}

/// `{"type":"presence","user":"<id>","online":true}` or, going offline,
/// `{"type":"presence","user":"<id>","online":false,"last_seen_at":"…"}`.
pub fn presence_frame(user: &str, online: bool, last_seen_at: Option<&str>) -> String {
    #[derive(Serialize)]
    struct Frame<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        user: &'a str,
        online: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_seen_at: Option<&'a str>,
    }
    serde_json::to_string(&Frame {
        kind: "presence",
        user,
        online,
        last_seen_at,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_shapes() {
        assert_eq!(
            read_event_json("dm:a:b", "a", "1-0"),
            r#"{"type":"read","conversation":"dm:a:b","by":"a","up_to":"1-0"}"#
        );
        assert_eq!(
            presence_frame("a", true, None),
            r#"{"type":"presence","user":"a","online":true}"#
        );
        assert_eq!(
            presence_frame("a", false, Some("2026-01-01T00:00:00.000Z")),
            r#"{"type":"presence","user":"a","online":false,"last_seen_at":"2026-01-01T00:00:00.000Z"}"#
        );
        let t = now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z'));
    }
}
