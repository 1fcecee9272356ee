//! [`Client`]: one signed-in connection. It sends `hello` and waits for `welcome`,
//! matches replies to requests by `ref`, queues frames that arrive meanwhile, drops
//! duplicate `message` events (conversation + id) and keeps the last cursor so a
//! reconnect — to any node — resumes exactly where the caller stopped reading.
//!
//! The cursor follows what the caller *consumed* through [`Client::next_event`], not
//! what was merely received: frames still queued when the connection drops are
//! replayed by the server after [`Client::resume`]. It never moves backwards.
//!
//! Rooms (protocol 1.1) have cursors of their own, one per room ([`RoomCursors`]),
//! kept by the same rule and sent as `hello.rooms`. The 1:1 requests are in
//! `client/requests.rs`, the room requests in `client/rooms.rs`.

mod requests;
mod rooms;

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use chat_protocol::rooms::{MemberChange, RoomsRecovered};
use chat_protocol::{
    room_conversation, ClientFrame, Limits, Message, ServerFrame, StreamId, Unread, User,
};

use crate::raw::{Connection, RawFrame};
use crate::{ClientError, RecentIds, RefGen, RoomCursors};

/// Default deadline for connecting, `welcome` and each request's reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The one credential of a `hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A JWT signed by the host application.
    Token(String),
    /// A session issued earlier by the cluster.
    Session(String),
    /// Guest sign-in with this name (where guests are enabled).
    Username(String),
}

/// The server's `welcome`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The session to resume with on a later connection.
    pub session: String,
    /// Who signed in.
    pub user: User,
    /// Whether `hello` named a session that was still valid.
    pub resumed: bool,
    /// Whether every 1:1 event after `hello.last_seen` follows; `false` means the
    /// caller reloads with `history` and `conversations`.
    pub recovered: bool,
    /// The node that answered, for logs and tests.
    pub node: String,
    /// Body, frame and send-rate limits this node applies.
    pub limits: Limits,
    /// Conversations and rooms with unread messages.
    pub unread: Vec<Unread>,
    /// Inbox cursor after which live delivery starts (protocol extension).
    pub cursor: Option<String>,
    /// Per room listed in `hello.rooms` that the user is still a member of: whether
    /// every event after the id sent follows (protocol 1.1). Empty when no room was
    /// listed. A room with `recovered: false` is reloaded with `room_history`.
    pub rooms: RoomsRecovered,
}

impl Welcome {
    fn from_frame(frame: ServerFrame) -> Option<Welcome> {
        match frame {
            ServerFrame::Welcome {
                session,
                user,
                resumed,
                recovered,
                node,
                limits,
                unread,
                cursor,
                rooms,
            } => Some(Welcome {
                session,
                user,
                resumed,
                recovered,
                node,
                limits,
                unread,
                cursor,
                rooms: rooms.unwrap_or_default(),
            }),
            _ => None,
        }
    }
}

/// What a client needs to pick up where it left off on a new connection: its
/// session, its last cursors, and the ids it already delivered (for de-duplication).
#[derive(Debug, Clone)]
pub struct ResumeState {
    /// The session to sign in with (`hello.session`).
    pub session: String,
    /// The last 1:1 cursor consumed, sent as `hello.last_seen`.
    pub cursor: Option<String>,
    /// Room id → the last room event id consumed, sent as `hello.rooms`.
    pub rooms: BTreeMap<String, String>,
    /// Ids already delivered, so the replay's overlap is dropped.
    pub seen: RecentIds,
}

/// One signed-in connection to a gateway node.
pub struct Client {
    conn: Connection,
    welcome: Welcome,
    /// Last cursor consumed by the caller (see the module docs).
    cursor: Option<String>,
    /// Per room, the last room event id consumed by the caller (`hello.rooms`).
    room_cursors: RoomCursors,
    /// Frames that arrived while a request waited for its reply, oldest first.
    pending: VecDeque<ServerFrame>,
    /// Recently delivered ids, to drop the duplicates at-least-once delivery brings.
    seen: RecentIds,
    /// Gives each request a `ref` to match its reply by.
    refs: RefGen,
    /// Deadline for each request's reply.
    timeout: Duration,
}

impl Client {
    /// Connects, signs in with `cred` (and `last_seen` for recovery) and waits for
    /// `welcome`. An `error` reply is [`ClientError::Refused`] with the close code that
    /// followed it.
    pub async fn connect(
        url: &str,
        cred: Credential,
        last_seen: Option<String>,
    ) -> Result<Client, ClientError> {
        Self::connect_with(
            url,
            cred,
            last_seen,
            RoomCursors::default(),
            RecentIds::default(),
        )
        .await
    }

    /// Connects with a stored session and cursors (after any disconnect, to any
    /// node). Rooms with a cursor are listed in `hello.rooms`; see
    /// [`Welcome::rooms`] for which were recovered.
    pub async fn resume(url: &str, state: ResumeState) -> Result<Client, ClientError> {
        Self::connect_with(
            url,
            Credential::Session(state.session),
            state.cursor,
            RoomCursors::from_map(state.rooms),
            state.seen,
        )
        .await
    }

    /// Closes this connection and resumes on `url` (which may be another node).
    pub async fn reconnect(self, url: &str) -> Result<Client, ClientError> {
        let state = self.resume_state();
        self.close().await;
        Self::resume(url, state).await
    }

    async fn connect_with(
        url: &str,
        cred: Credential,
        last_seen: Option<String>,
        mut room_cursors: RoomCursors,
        seen: RecentIds,
    ) -> Result<Client, ClientError> {
        let (mut token, mut session, mut username) = (None, None, None);
        match cred {
            Credential::Token(t) => token = Some(t),
            Credential::Session(s) => session = Some(s),
            Credential::Username(u) => username = Some(u),
        }
        let hello = ClientFrame::Hello {
            token,
            session,
            username,
            last_seen: last_seen.clone(),
            client: Some(concat!("chat-client/", env!("CARGO_PKG_VERSION")).to_string()),
            reference: None,
            rooms: room_cursors.for_hello(),
        };
        let mut conn = Connection::open(url, DEFAULT_TIMEOUT).await?;
        conn.send_frame(&hello).await?;
        let welcome = wait_welcome(&mut conn, DEFAULT_TIMEOUT).await?;
        let cursor = initial_cursor(last_seen, &welcome);
        room_cursors.after_welcome(&welcome.rooms);
        tracing::debug!(user.id = %welcome.user.id, node = %welcome.node, "signed in");
        Ok(Client {
            conn,
            welcome,
            cursor,
            room_cursors,
            pending: VecDeque::new(),
            seen,
            refs: RefGen::new(),
            timeout: DEFAULT_TIMEOUT,
        })
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    pub fn user_id(&self) -> &str {
        &self.welcome.user.id
    }

    pub fn session(&self) -> &str {
        &self.welcome.session
    }

    /// The last cursor consumed (initially from `welcome`), to send as `last_seen`.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// The last event id consumed in `room`, to send in `hello.rooms`.
    pub fn room_cursor(&self, room: &str) -> Option<&str> {
        self.room_cursors.get(room)
    }

    /// Session, cursors and seen ids, for [`Client::resume`].
    pub fn resume_state(&self) -> ResumeState {
        ResumeState {
            session: self.welcome.session.clone(),
            cursor: self.cursor.clone(),
            rooms: self.room_cursors.to_map(),
            seen: self.seen.clone(),
        }
    }

    /// Changes the deadline for each request's reply.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Records a message as delivered, so a later `message` event for it is dropped
    /// (e.g. after its `ack`, for a UI that shows acked messages at once).
    pub fn mark_seen(&mut self, message: &Message) {
        self.seen.insert(&message.conversation, &message.id);
    }

    /// Sends a request with a fresh `ref` and returns the reply carrying that `ref`.
    /// An `error` reply is [`ClientError::Server`]. Other frames that arrive meanwhile
    /// are queued for [`Client::next_event`].
    pub async fn request(&mut self, mut frame: ClientFrame) -> Result<ServerFrame, ClientError> {
        let reference = self.refs.next_ref();
        frame.set_reference(reference.clone());
        self.conn.send_frame(&frame).await?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.conn.next_frame())
                .await
                .map_err(|_| ClientError::Timeout(format!("reply to ref {reference}")))??;
            if frame.reference() == Some(reference.as_str()) {
                return match frame {
                    ServerFrame::Error { code, message, .. } => {
                        Err(ClientError::Server { code, message })
                    }
                    reply => Ok(reply),
                };
            }
            self.pending.push_back(frame);
        }
    }

    /// Sends a frame that expects no reply (`read`, `typing`, `watch`) as is.
    pub async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        self.conn.send_frame(frame).await
    }

    /// The next unsolicited frame: queued ones first, then the socket. Duplicate
    /// `message` and `member` events are dropped; `message` (1:1), `read` and
    /// `cleared` events advance the cursor, room `message` and `member` events their
    /// room's cursor.
    pub async fn next_event(&mut self) -> Result<ServerFrame, ClientError> {
        loop {
            let frame = match self.pending.pop_front() {
                Some(frame) => frame,
                None => self.conn.next_frame().await?,
            };
            match &frame {
                ServerFrame::Message { message, cursor } => {
                    if !cursor.is_empty() {
                        advance_cursor(&mut self.cursor, cursor);
                    }
                    if let Some(room) = &message.room {
                        self.room_cursors.advance(room, &message.id);
                    }
                    if !self.seen.insert(&message.conversation, &message.id) {
                        tracing::trace!(message.id = %message.id, "dropped duplicate");
                        continue;
                    }
                }
                ServerFrame::Member {
                    room,
                    event,
                    user,
                    id,
                } => {
                    self.room_cursors.advance(room, id);
                    if *event == MemberChange::Left && user.id == self.welcome.user.id {
                        // Left on another tab: the room is no longer ours to recover.
                        self.room_cursors.remove(room);
                    }
                    if !self.seen.insert(&room_conversation(room), id) {
                        tracing::trace!(room.id = %room, event.id = %id, "dropped duplicate");
                        continue;
                    }
                }
                ServerFrame::Read {
                    cursor: Some(cursor),
                    ..
                }
                | ServerFrame::Cleared {
                    cursor: Some(cursor),
                    ..
                } => advance_cursor(&mut self.cursor, cursor),
                _ => {}
            }
            return Ok(frame);
        }
    }

    /// [`Client::next_event`] with a deadline: `Ok(None)` when nothing came. Safe to
    /// call in a loop: a timeout loses no frame.
    pub async fn next_event_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<ServerFrame>, ClientError> {
        match tokio::time::timeout(timeout, self.next_event()).await {
            Ok(frame) => frame.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The next `message` event (other events are skipped), within `timeout`.
    pub async fn next_message(&mut self, timeout: Duration) -> Result<Message, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.next_event())
                .await
                .map_err(|_| ClientError::Timeout("a message event".into()))??;
            if let ServerFrame::Message { message, .. } = frame {
                return Ok(message);
            }
        }
    }

    /// Number of frames queued for `next_event`.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Sends a text frame exactly as given (for bad-input tests).
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.conn.send_text(text).await
    }

    /// Sends a binary frame (the server closes with 1003).
    pub async fn send_binary(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.conn.send_binary(data).await
    }

    /// The next frame straight off the socket, bypassing the queue, de-duplication and
    /// cursor: for tests that check exactly what the server sent, closes included.
    pub async fn next_raw(&mut self) -> RawFrame {
        self.conn.next_raw().await
    }

    /// The underlying connection, e.g. for [`Connection::wait_closed`].
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// Closes the connection (close handshake, briefly awaited).
    pub async fn close(self) {
        self.conn.close().await;
    }
}

/// Waits for `welcome`; an `error` becomes `Refused`, with the close code if the
/// server closes within a moment.
async fn wait_welcome(conn: &mut Connection, timeout: Duration) -> Result<Welcome, ClientError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let frame = tokio::time::timeout_at(deadline, conn.next_frame())
            .await
            .map_err(|_| ClientError::Timeout("welcome".into()))??;
        if matches!(frame, ServerFrame::Welcome { .. }) {
            return Welcome::from_frame(frame)
                .ok_or_else(|| ClientError::Protocol("welcome frame".into()));
        }
        if let ServerFrame::Error { code, message, .. } = frame {
            let close_code = conn
                .wait_closed(Duration::from_secs(3))
                .await
                .unwrap_or_default();
            return Err(ClientError::Refused {
                code,
                message,
                close_code,
            });
        }
        tracing::debug!(?frame, "ignored a frame before welcome");
    }
}

/// The cursor to start from: after a proven recovery the caller's `last_seen` (the
/// replay that follows moves it on); otherwise the newer of `last_seen` and
/// `welcome.cursor`.
fn initial_cursor(last_seen: Option<String>, welcome: &Welcome) -> Option<String> {
    if welcome.recovered && last_seen.is_some() {
        return last_seen;
    }
    let mut cursor = last_seen;
    if let Some(c) = &welcome.cursor {
        advance_cursor(&mut cursor, c);
    }
    cursor
}

/// Moves `current` forward to `new`; never backwards when both are stream ids.
pub fn advance_cursor(current: &mut Option<String>, new: &str) {
    let newer = match (
        current.as_deref().and_then(StreamId::parse),
        StreamId::parse(new),
    ) {
        (Some(old), Some(new)) => new > old,
        _ => true,
    };
    if newer {
        *current = Some(new.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn welcome(recovered: bool, cursor: Option<&str>) -> Welcome {
        Welcome {
            session: "s".into(),
            user: User {
                id: "u".into(),
                name: "U".into(),
            },
            resumed: true,
            recovered,
            node: "n".into(),
            limits: Limits {
                max_body: 4000,
                max_frame: 65536,
                send_per_second: 10,
                send_burst: 20,
            },
            unread: vec![],
            cursor: cursor.map(str::to_string),
            rooms: RoomsRecovered::new(),
        }
    }

    #[test]
    fn cursor_only_moves_forward() {
        let mut c = Some("10-1".to_string());
        advance_cursor(&mut c, "9-5");
        assert_eq!(c.as_deref(), Some("10-1"));
        advance_cursor(&mut c, "10-2");
        assert_eq!(c.as_deref(), Some("10-2"));
        let mut none = None;
        advance_cursor(&mut none, "1-0");
        assert_eq!(none.as_deref(), Some("1-0"));
    }

    #[test]
    fn initial_cursor_keeps_last_seen_while_replay_is_pending() {
        let w = welcome(true, Some("50-0"));
        assert_eq!(
            initial_cursor(Some("10-0".into()), &w).as_deref(),
            Some("10-0")
        );
        let w = welcome(false, Some("50-0"));
        assert_eq!(
            initial_cursor(Some("10-0".into()), &w).as_deref(),
            Some("50-0")
        );
        assert_eq!(initial_cursor(None, &w).as_deref(), Some("50-0"));
        let w = welcome(false, None);
        assert_eq!(initial_cursor(None, &w), None);
    }

    #[test]
    fn replies_are_matched_by_ref_and_events_are_not() {
        let mut f = ClientFrame::Ping { reference: None };
        f.set_reference("r1".into());
        assert_eq!(f.reference(), Some("r1"));
        let pong = ServerFrame::Pong {
            reference: Some("r1".into()),
        };
        assert_eq!(pong.reference(), Some("r1"));
        let typing = ServerFrame::Typing { from: "x".into() };
        assert_eq!(typing.reference(), None);
    }
}
