//! Helpers of the client's integration tests: real `chat-gateway` nodes from the
//! testkit (one node on either engine, or several on a spawned `redis-server`),
//! [`both_engines!`] to run a scenario on both, guests, and waits on room events
//! with deadlines (never a sleep standing in for an event).

#![allow(dead_code, unused_imports, unused_macros)]

use std::time::{Duration, Instant};

pub use chat_client::{
    Client, ClientError, Credential, ErrorCode, MemberChange, Message, ServerFrame,
};
pub use chat_testkit::{Cluster, Engine};

/// Deadline for a frame the test expects.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a test listens for a frame that must not come (after a ping round trip
/// proved everything sent before it has arrived).
pub const QUIET: Duration = Duration::from_millis(300);

/// Settings that let a test send as fast as it likes.
pub const NO_RATE_LIMIT: &[(&str, &str)] = &[
    ("CHAT_LIMITS__SEND_PER_SECOND", "100000"),
    ("CHAT_LIMITS__SEND_BURST", "100000"),
];

/// Runs an `async fn scenario(engine: Engine)` as two tests, `scenario::memory` and
/// `scenario::redis`.
macro_rules! both_engines {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test]
            async fn memory() {
                super::$scenario($crate::common::Engine::Memory).await;
            }

            #[tokio::test]
            async fn redis() {
                super::$scenario($crate::common::Engine::Redis).await;
            }
        }
    };
}
pub(crate) use both_engines;

/// A unique, valid guest name or room id with this prefix.
pub fn unique(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// Signs in a new guest (name made unique from `prefix`).
pub async fn guest(url: &str, prefix: &str) -> Client {
    let name = unique(prefix);
    Client::connect(url, Credential::Username(name.clone()), None)
        .await
        .unwrap_or_else(|e| panic!("guest sign-in of {name} on {url} failed: {e}"))
}

/// A room event as the tests compare them: what happened, in the room's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// A message: its id and body.
    Message { id: String, body: String },
    /// A member event: its id, the change and whom it is about.
    Member {
        id: String,
        change: MemberChange,
        user: String,
    },
}

impl RoomEvent {
    pub fn id(&self) -> &str {
        match self {
            RoomEvent::Message { id, .. } | RoomEvent::Member { id, .. } => id,
        }
    }

    pub fn body(&self) -> Option<&str> {
        match self {
            RoomEvent::Message { body, .. } => Some(body),
            RoomEvent::Member { .. } => None,
        }
    }

    pub fn message(m: &Message) -> RoomEvent {
        RoomEvent::Message {
            id: m.id.clone(),
            body: m.body.clone(),
        }
    }
}

/// The room event of `room` in `frame`, if it is one.
fn room_event(frame: ServerFrame, room: &str) -> Option<RoomEvent> {
    match frame {
        ServerFrame::Message { message, .. } if message.room.as_deref() == Some(room) => {
            Some(RoomEvent::message(&message))
        }
        ServerFrame::Member {
            room: r,
            event,
            user,
            id,
        } if r == room => Some(RoomEvent::Member {
            id,
            change: event,
            user: user.id,
        }),
        _ => None,
    }
}

/// The next event of `room` (other frames are skipped); panics after [`WAIT`].
pub async fn next_room_event(client: &mut Client, room: &str, what: &str) -> RoomEvent {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_event_timeout(left).await {
            Ok(Some(frame)) => {
                if let Some(ev) = room_event(frame, room) {
                    return ev;
                }
            }
            Ok(None) => panic!("no event of room {room} within {WAIT:?}: {what}"),
            Err(e) => panic!("connection failed waiting for {what}: {e}"),
        }
    }
}

/// The next `n` events of `room`, in the order they were delivered.
pub async fn room_events(client: &mut Client, room: &str, n: usize, what: &str) -> Vec<RoomEvent> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(next_room_event(client, room, what).await);
    }
    got
}

/// Events of `room` until the message with `body` (which is last).
pub async fn room_events_until(
    client: &mut Client,
    room: &str,
    body: &str,
    what: &str,
) -> Vec<RoomEvent> {
    let mut got = Vec::new();
    loop {
        let ev = next_room_event(client, room, what).await;
        let done = ev.body() == Some(body);
        got.push(ev);
        if done {
            return got;
        }
    }
}

/// Asserts that no further event of `room` reaches `client`: a ping round trip first
/// (whatever the server sent before the pong is then here), then [`QUIET`].
pub async fn assert_quiet(client: &mut Client, room: &str, what: &str) {
    client.ping().await.expect("ping");
    let deadline = Instant::now() + QUIET;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_event_timeout(left).await {
            Ok(Some(frame)) => {
                if let Some(ev) = room_event(frame, room) {
                    panic!("{what}: unexpected event of room {room}: {ev:?}");
                }
            }
            Ok(None) => return,
            Err(e) => panic!("connection failed while checking {what}: {e}"),
        }
    }
}

/// Asserts that the request failed with `code`.
pub fn assert_code<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    code: ErrorCode,
    what: &str,
) {
    match result {
        Err(ClientError::Server { code: got, .. }) if got == code => {}
        other => panic!("{what}: expected an error with code {code:?}, got {other:?}"),
    }
}
