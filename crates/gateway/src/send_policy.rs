//! The send policy, one for the socket and the API, 1:1 and rooms alike (`send` and
//! `POST /api/v1/messages`; a room `send` and `POST /api/v1/rooms/{room}/messages`):
//! what a send must look like (peer or room id, body, nonce shape) and under which
//! namespace and for how long its nonce is remembered.
//!
//! What differs between the paths is only who the sender is (the signed-in user, or
//! `from`, which must exist), the budget (per user, socket only: `limiter.rs`) and,
//! for a room, membership (the engine's to check: nothing is stored for a non-member).

use chat_protocol::{valid_room_id, valid_user_id, ErrorCode, MAX_NONCE};

use crate::errors::{refuse, Refused};

/// How long a nonce chosen by a client or the host application is remembered
/// (protocol: 24 h).
pub const CLIENT_NONCE_TTL_SECS: u64 = 24 * 3600;
/// How long a gateway-generated nonce is remembered: long enough to cover the
/// engine's own retries, short enough to cost little memory.
pub const AUTO_NONCE_TTL_SECS: u64 = 60;

/// Why a send is refused before anything is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// `field` is not a valid user id.
    InvalidId {
        field: &'static str,
    },
    /// `field` names the sender.
    SelfPeer {
        field: &'static str,
    },
    /// The room id is not 1-64 characters of a-z, 0-9, `_` and `-`.
    InvalidRoom,
    EmptyBody,
    BodyTooLong {
        max: usize,
    },
    BadNonce,
}

impl Violation {
    pub fn code(&self) -> ErrorCode {
        match self {
            Violation::BodyTooLong { .. } => ErrorCode::TooLarge,
            _ => ErrorCode::BadRequest,
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::InvalidId { field } => write!(f, "{field} is not a valid user id"),
            Violation::SelfPeer { field } => write!(f, "{field} cannot be yourself"),
            Violation::InvalidRoom => {
                f.write_str("room must be 1-64 characters of a-z, 0-9, _ and -")
            }
            Violation::EmptyBody => f.write_str("body is empty"),
            Violation::BodyTooLong { max } => write!(f, "body is longer than {max} characters"),
            Violation::BadNonce => {
                write!(f, "nonce must be 1-{MAX_NONCE} characters without spaces")
            }
        }
    }
}

impl From<Violation> for Refused {
    fn from(v: Violation) -> Refused {
        refuse(v.code(), v.to_string())
    }
}

/// A peer named by (or on behalf of) `sender`: a valid user id, not the sender.
pub fn check_peer(sender: &str, peer: &str, field: &'static str) -> Result<(), Violation> {
    if !valid_user_id(peer) {
        return Err(Violation::InvalidId { field });
    }
    if peer == sender {
        return Err(Violation::SelfPeer { field });
    }
    Ok(())
}

/// Everything checked about a send before the rate limit and the engine: the peer
/// `to`, the body (not blank, at most `max_body` characters) and the nonce's shape.
pub fn check_send(
    sender: &str,
    to: &str,
    body: &str,
    nonce: Option<&str>,
    max_body: usize,
) -> Result<(), Violation> {
    check_peer(sender, to, "to")?;
    check_body_and_nonce(body, nonce, max_body)
}

/// A room named by a request: a valid room id (whether it exists and who is a member
/// is the engine's to say).
pub fn check_room(room: &str) -> Result<(), Violation> {
    if valid_room_id(room) {
        Ok(())
    } else {
        Err(Violation::InvalidRoom)
    }
}

/// Everything checked about a room message before the rate limit and the engine: the
/// room id, then the body and the nonce as for a 1:1 send.
pub fn check_room_message(
    room: &str,
    body: &str,
    nonce: Option<&str>,
    max_body: usize,
) -> Result<(), Violation> {
    check_room(room)?;
    check_body_and_nonce(body, nonce, max_body)
}

/// The body (not blank, at most `max_body` characters) and the nonce's shape.
fn check_body_and_nonce(body: &str, nonce: Option<&str>, max_body: usize) -> Result<(), Violation> {
    if body.trim().is_empty() {
        return Err(Violation::EmptyBody);
    }
    if body.chars().count() > max_body {
        return Err(Violation::BodyTooLong { max: max_body });
    }
    if let Some(n) = nonce {
        if n.is_empty() || n.chars().count() > MAX_NONCE || n.contains(char::is_whitespace) {
            return Err(Violation::BadNonce);
        }
    }
    Ok(())
}

/// Who sent a message, for its nonce's namespace: nonces from different origins never
/// collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client's `send` on the socket: its nonce is stored as `c:<nonce>`.
    Socket,
    /// The server HTTP API: its nonce is stored as `p:<nonce>`.
    Api,
}

/// The nonce handed to the engine and how long it is remembered: the sender's own
/// (24 h, namespaced by origin), or one made up here (`a:<uuid>`, 60 s) so an engine
/// retry never stores a message twice.
pub fn stored_nonce(origin: Origin, nonce: Option<String>) -> (String, u64) {
    match nonce {
        Some(n) => {
            let prefix = match origin {
                Origin::Socket => "c",
                Origin::Api => "p",
            };
            (format!("{prefix}:{n}"), CLIENT_NONCE_TTL_SECS)
        }
        None => (
            format!("a:{}", uuid::Uuid::new_v4().simple()),
            AUTO_NONCE_TTL_SECS,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(to: &str, body: &str, nonce: Option<&str>) -> Result<(), Violation> {
        check_send("alice", to, body, nonce, 5)
    }

    #[test]
    fn sends_are_checked_in_order() {
        assert_eq!(check("bob", "hello", None), Ok(()));
        assert_eq!(check("bob", "ééééé", Some(&"n".repeat(MAX_NONCE))), Ok(()));
        assert_eq!(
            check("b o b", "hello", None),
            Err(Violation::InvalidId { field: "to" })
        );
        assert_eq!(
            check("alice", "", None),
            Err(Violation::SelfPeer { field: "to" })
        );
        for blank in ["", " ", "\n\t "] {
            assert_eq!(check("bob", blank, None), Err(Violation::EmptyBody));
        }
        assert_eq!(
            check("bob", "éééééé", Some("")),
            Err(Violation::BodyTooLong { max: 5 })
        );
        let too_long = "n".repeat(MAX_NONCE + 1);
        for nonce in ["", "a b", "a\tb", "\u{a0}", too_long.as_str()] {
            assert_eq!(
                check("bob", "hi", Some(nonce)),
                Err(Violation::BadNonce),
                "{nonce:?}"
            );
        }
    }

    #[test]
    fn room_messages_are_checked_in_order() {
        let check =
            |room: &str, body: &str, nonce: Option<&str>| check_room_message(room, body, nonce, 5);
        assert_eq!(check("lobby", "hello", None), Ok(()));
        assert_eq!(
            check("a-b_9", "ééééé", Some(&"n".repeat(MAX_NONCE))),
            Ok(())
        );
        for room in ["", "Lobby", "a b", &"r".repeat(65)] {
            assert_eq!(
                check(room, "", Some("")),
                Err(Violation::InvalidRoom),
                "{room:?}"
            );
        }
        assert_eq!(check("lobby", " \n", None), Err(Violation::EmptyBody));
        assert_eq!(
            check("lobby", "éééééé", Some("")),
            Err(Violation::BodyTooLong { max: 5 })
        );
        assert_eq!(check("lobby", "hi", Some("a b")), Err(Violation::BadNonce));
        let r: Refused = Violation::InvalidRoom.into();
        assert_eq!(
            r,
            refuse(
                ErrorCode::BadRequest,
                "room must be 1-64 characters of a-z, 0-9, _ and -"
            )
        );
    }

    #[test]
    fn violations_as_refusals() {
        let r: Refused = Violation::BodyTooLong { max: 5 }.into();
        assert_eq!(
            r,
            refuse(ErrorCode::TooLarge, "body is longer than 5 characters")
        );
        let r: Refused = Violation::BadNonce.into();
        assert_eq!(
            r,
            refuse(
                ErrorCode::BadRequest,
                format!("nonce must be 1-{MAX_NONCE} characters without spaces")
            )
        );
        let r: Refused = Violation::SelfPeer { field: "with" }.into();
        assert_eq!(r, refuse(ErrorCode::BadRequest, "with cannot be yourself"));
    }

    #[test]
    fn nonce_namespaces_and_ttls() {
        assert_eq!(
            stored_nonce(Origin::Socket, Some("n1".into())),
            ("c:n1".to_string(), 24 * 3600)
        );
        assert_eq!(
            stored_nonce(Origin::Api, Some("n1".into())),
            ("p:n1".to_string(), 24 * 3600)
        );
        for origin in [Origin::Socket, Origin::Api] {
            let (a, ttl) = stored_nonce(origin, None);
            let (b, _) = stored_nonce(origin, None);
            assert!(a.starts_with("a:") && a.len() == 34, "{a}");
            assert_ne!(a, b, "a fresh nonce per send");
            assert_eq!(ttl, 60);
        }
    }
}
