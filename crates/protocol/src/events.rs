//! The events a user's inbox holds and live delivery carries, as JSON objects
//! without their cursor: the one serialization of these shapes.
//!
//! A client sees them as [`ServerFrame`](crate::ServerFrame)s (`message`, `read`,
//! `presence`, `typing`): the node adds `"cursor":"<id>"` to a stored event when it
//! sends it. The engine stores and publishes exactly these bytes; where the Redis Lua
//! library has to splice an id it only knows inside the call, the engine hands it the
//! bytes around the id ([`Event::split_at_id`]) and a test compares what Lua wrote with
//! [`Event::to_json`].

use serde::Serialize;

use crate::Message;

/// An event as stored in an inbox or delivered live, without its cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event<'a> {
    /// `{"type":"message","message":{…}}`: a stored message.
    Message { message: &'a Message },
    /// `{"type":"read","conversation":…,"by":…,"up_to":…}`: a read receipt (stored).
    Read {
        conversation: &'a str,
        by: &'a str,
        up_to: &'a str,
    },
    /// `{"type":"presence","user":…,"online":…[,"last_seen_at":…]}`: a presence
    /// transition (ephemeral).
    Presence {
        user: &'a str,
        online: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_seen_at: Option<&'a str>,
    },
    /// `{"type":"typing","from":…}` (ephemeral).
    Typing { from: &'a str },
    /// `{"type":"cleared","conversation":…,"up_to":…}`: the conversation's history up
    /// to and including message `up_to` was deleted (stored: recovery never replays
    /// those messages again, and this event carries a cursor).
    Cleared {
        conversation: &'a str,
        up_to: &'a str,
    },
}

impl Event<'_> {
    /// The event's JSON text.
    pub fn to_json(&self) -> String {
        // Plain structs of strings: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The JSON split around an id that is not known yet: the event serialized with
    /// the placeholder `""` as the message's `id` or the receipt's `up_to` is returned
    /// as the bytes before and after the placeholder's contents, so that
    /// `head + id + tail` is the event with that id (stream ids need no escaping).
    /// `None` for an event without such an id, or when the placeholder is not empty.
    pub fn split_at_id(&self) -> Option<(String, String)> {
        let json = self.to_json();
        let marker = match self {
            Event::Message { message } if message.id.is_empty() => r#""message":{"id":""#,
            Event::Read { up_to: "", .. } => r#","up_to":""#,
            _ => return None,
        };
        let at = json.find(marker)? + marker.len();
        Some((json[..at].to_string(), json[at..].to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServerFrame;

    fn message(id: &str) -> Message {
        Message {
            id: id.into(),
            conversation: "dm:alice:bob".into(),
            from: "bob".into(),
            to: "alice".into(),
            body: "say \"hi\" \u{1f600}\n".into(),
            sent_at: "2026-01-01T00:00:00.000Z".into(),
            room: None,
        }
    }

    /// The event plus `"cursor"` is the server frame a client parses.
    fn with_cursor(json: &str, cursor: &str) -> ServerFrame {
        let mut value: serde_json::Value = serde_json::from_str(json).unwrap();
        value["cursor"] = cursor.into();
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn shapes() {
        let m = message("5-1");
        assert_eq!(
            Event::Message { message: &m }.to_json(),
            format!(
                r#"{{"type":"message","message":{}}}"#,
                serde_json::to_string(&m).unwrap()
            )
        );
        let read = Event::Read {
            conversation: "dm:a:b",
            by: "a",
            up_to: "1-0",
        };
        assert_eq!(
            read.to_json(),
            r#"{"type":"read","conversation":"dm:a:b","by":"a","up_to":"1-0"}"#
        );
        assert_eq!(
            Event::Presence {
                user: "a",
                online: true,
                last_seen_at: None
            }
            .to_json(),
            r#"{"type":"presence","user":"a","online":true}"#
        );
        assert_eq!(
            Event::Presence {
                user: "a",
                online: false,
                last_seen_at: Some("2026-01-01T00:00:00.000Z")
            }
            .to_json(),
            r#"{"type":"presence","user":"a","online":false,"last_seen_at":"2026-01-01T00:00:00.000Z"}"#
        );
        assert_eq!(
            Event::Typing { from: "a" }.to_json(),
            r#"{"type":"typing","from":"a"}"#
        );
        assert_eq!(
            Event::Cleared {
                conversation: "dm:a:b",
                up_to: "7-0"
            }
            .to_json(),
            r#"{"type":"cleared","conversation":"dm:a:b","up_to":"7-0"}"#
        );
    }

    #[test]
    fn events_are_the_server_frames_without_cursor() {
        let m = message("5-1");
        assert_eq!(
            with_cursor(&Event::Message { message: &m }.to_json(), "9-0"),
            ServerFrame::Message {
                message: m.clone(),
                cursor: "9-0".into()
            }
        );
        let read = Event::Read {
            conversation: "dm:a:b",
            by: "a",
            up_to: "1-0",
        };
        assert_eq!(
            serde_json::from_str::<ServerFrame>(&read.to_json()).unwrap(),
            ServerFrame::Read {
                conversation: "dm:a:b".into(),
                by: "a".into(),
                up_to: "1-0".into(),
                cursor: None
            }
        );
        let cleared = Event::Cleared {
            conversation: "dm:a:b",
            up_to: "1-0",
        };
        assert_eq!(
            with_cursor(&cleared.to_json(), "9-0"),
            ServerFrame::Cleared {
                conversation: "dm:a:b".into(),
                up_to: "1-0".into(),
                cursor: Some("9-0".into())
            }
        );
        let presence = Event::Presence {
            user: "a",
            online: false,
            last_seen_at: Some("t"),
        };
        assert_eq!(
            presence.to_json(),
            ServerFrame::Presence {
                user: "a".into(),
                online: false,
                last_seen_at: Some("t".into())
            }
            .to_json()
        );
        assert_eq!(
            Event::Typing { from: "a" }.to_json(),
            ServerFrame::Typing { from: "a".into() }.to_json()
        );
    }

    #[test]
    fn split_at_id_puts_the_id_back_in_place() {
        let blank = message("");
        let (head, tail) = Event::Message { message: &blank }.split_at_id().unwrap();
        assert_eq!(
            format!("{head}5-1{tail}"),
            Event::Message {
                message: &message("5-1")
            }
            .to_json()
        );
        let read = |up_to| Event::Read {
            conversation: "dm:a:b",
            by: "a",
            up_to,
        };
        let (head, tail) = read("").split_at_id().unwrap();
        assert_eq!(format!("{head}7-3{tail}"), read("7-3").to_json());
        assert_eq!(read("1-0").split_at_id(), None);
        assert_eq!(Event::Typing { from: "a" }.split_at_id(), None);
    }
}
