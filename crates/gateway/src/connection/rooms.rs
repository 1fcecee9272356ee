//! A connection's rooms (protocol 1.1): the room requests (`join`, `leave`,
//! `members`, `rooms`, and `send`/`history`/`read` naming a `room`), the recovery of
//! the rooms listed in `hello.rooms`, and writing room events in each room's order.
//!
//! Room events carry ids from the room's own stream and the id before them (`prev`),
//! so per room this connection keeps the last id it wrote: an event at or before it
//! is a duplicate, an event whose `prev` is not it shows a gap, read from the room's
//! stream. Rooms this connection has written nothing of yet are live only. Nothing
//! here lets a non-member read or write a room: every room request checks membership
//! in the engine (`forbidden`, nothing stored).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chat_engine::{JoinOutcome, RoomEvent, RoomLimits, RoomSendRequest};
use chat_protocol::rooms::{
    RoomInfo, RoomItem, RoomRecovery, RoomRef, RoomsRecovered, MAX_ROOM_NAME, MEMBERS_PAGE,
};
use chat_protocol::{
    room_conversation, ClientFrame, ErrorCode, ServerFrame, StreamId, Unread, User, UserInfo,
};

use super::{Conn, Socket, Stop};
use crate::errors::{on_socket, refuse, Refused};
use crate::history;
use crate::router::RoomOut;
use crate::send_policy::{self, Origin};
use crate::state::AppState;

/// Room events read per round trip during recovery and catch-up.
const PAGE: usize = 200;

/// What `hello` said about rooms.
#[derive(Debug, Default)]
pub(crate) struct SignedInRooms {
    /// `hello.rooms`: room → the last event id the client saw.
    pub last_seen: BTreeMap<String, String>,
    /// The JWT `rooms` claim, of the token or of the sign-in that created the resumed
    /// session (`None`: guests, tokens without it).
    pub claim: Option<Vec<String>>,
}

/// A connection's room state.
#[derive(Debug, Default)]
pub(crate) struct ConnRooms {
    /// Room → id of the last event written to this connection, and whether the user
    /// is still a member (after their own `left`, only their next `joined` is
    /// written: late copies of the room's events are dropped).
    last: HashMap<String, (StreamId, bool)>,
    /// The JWT `rooms` claim.
    claim: Option<Box<[String]>>,
}

fn check_room(room: &str) -> Result<(), Refused> {
    send_policy::check_room(room).map_err(Refused::from)
}

fn not_member() -> Refused {
    refuse(ErrorCode::Forbidden, "not a member of this room")
}

/// Members with their online flags.
pub(crate) async fn with_presence(
    state: &AppState,
    users: Vec<User>,
) -> Result<Vec<UserInfo>, chat_engine::EngineError> {
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    let presence = state.engine.presence(&ids).await?;
    Ok(users
        .into_iter()
        .zip(presence)
        .map(|(u, p)| UserInfo {
            id: u.id,
            name: u.name,
            online: p.online,
        })
        .collect())
}

/// The rooms with unread messages, as `welcome.unread` entries.
pub(super) async fn room_unread(
    state: &AppState,
    user: &str,
) -> Result<Vec<Unread>, chat_engine::EngineError> {
    Ok(state
        .engine
        .room_summaries(user)
        .await?
        .into_iter()
        .filter(|r| r.unread > 0)
        .filter_map(|r| {
            Some(Unread {
                peer: User::default(),
                count: r.unread,
                last: r.room.last?,
                room: Some(RoomRef {
                    id: r.room.id,
                    name: r.room.name,
                }),
            })
        })
        .collect())
}

impl<S: Socket> Conn<S> {
    /// Registers the user's rooms with the router (subscribing them on this node),
    /// before anything is read for recovery, so no live event is missed.
    pub(super) async fn attach_rooms(&mut self, signed: &SignedInRooms) -> Result<(), Stop> {
        self.rooms.claim = signed.claim.clone().map(Vec::into_boxed_slice);
        let engine = self.state.engine.clone();
        let rooms = engine
            .user_rooms(&self.user.id)
            .await
            .map_err(super::delivery::unavailable)?;
        for room in rooms {
            self.state
                .router
                .set_room_member(engine.as_ref(), &room, &self.user.id, true)
                .await
                .map_err(super::delivery::unavailable)?;
        }
        Ok(())
    }

    /// For each room of `hello.rooms` the user is a member of: whether every event
    /// after the client's id is still retained, and those events. Rooms not
    /// recovered start live from their newest event.
    pub(super) async fn recover_rooms(
        &mut self,
        signed: &SignedInRooms,
    ) -> Result<(Option<RoomsRecovered>, Vec<RoomEvent>), Stop> {
        if signed.last_seen.is_empty() {
            return Ok((None, Vec::new()));
        }
        let engine = self.state.engine.clone();
        let member_of = self.state.router.local_rooms(&self.user.id);
        let mut report = RoomsRecovered::new();
        let mut replay = Vec::new();
        for (room, last) in &signed.last_seen {
            if !member_of.contains(room) {
                continue;
            }
            let head = engine
                .room_head(room)
                .await
                .map_err(super::delivery::unavailable)?;
            let recovered = match StreamId::parse(last) {
                Some(after) if after <= head => {
                    let mut events = Vec::new();
                    let mut cursor = after;
                    loop {
                        let page = engine
                            .read_room(room, cursor, PAGE)
                            .await
                            .map_err(super::delivery::unavailable)?;
                        let full = page.len() == PAGE;
                        if let Some(last) = page.last() {
                            cursor = last.id;
                        }
                        events.extend(page);
                        if !full {
                            break;
                        }
                    }
                    let proven = match events.first() {
                        Some(first) => first.prev == after,
                        None => after == head,
                    };
                    if proven {
                        self.rooms.last.insert(room.clone(), (after, true));
                        replay.extend(events);
                    }
                    proven
                }
                _ => false,
            };
            if !recovered {
                self.rooms.last.insert(room.clone(), (head, true));
            }
            report.insert(room.clone(), RoomRecovery { recovered });
        }
        Ok((Some(report), replay))
    }

    /// Handles one room request.
    pub(super) async fn room_request(
        &mut self,
        frame: ClientFrame,
    ) -> Result<Option<ServerFrame>, Refused> {
        match frame {
            ClientFrame::Join {
                reference,
                room,
                name,
            } => self.join(reference, room, name).await,
            ClientFrame::Leave { reference, room } => {
                check_room(&room)?;
                let engine = self.state.engine.clone();
                engine
                    .leave_room(&room, &self.user)
                    .await
                    .map_err(on_socket)?;
                // The `left` event reaches this user's connections through their own
                // channel; other rooms' events stop here at once.
                let _ = self
                    .state
                    .router
                    .set_room_member(engine.as_ref(), &room, &self.user.id, false)
                    .await;
                Ok(Some(ServerFrame::Left { reference, room }))
            }
            ClientFrame::Members {
                reference,
                room,
                after,
            } => {
                check_room(&room)?;
                self.require_member(&room).await?;
                let (users, more) = self
                    .state
                    .engine
                    .room_members(&room, after.as_deref(), MEMBERS_PAGE)
                    .await
                    .map_err(on_socket)?;
                let items = with_presence(&self.state, users).await.map_err(on_socket)?;
                Ok(Some(ServerFrame::Members {
                    reference,
                    room,
                    items,
                    more,
                }))
            }
            ClientFrame::Rooms { reference } => {
                let items = self
                    .state
                    .engine
                    .room_summaries(&self.user.id)
                    .await
                    .map_err(on_socket)?
                    .into_iter()
                    .map(|r| RoomItem {
                        id: r.room.id,
                        name: r.room.name,
                        member_count: r.room.member_count,
                        unread: r.unread,
                        last: r.room.last,
                    })
                    .collect();
                Ok(Some(ServerFrame::Rooms { reference, items }))
            }
            ClientFrame::RoomSend {
                reference,
                room,
                body,
                nonce,
            } => self.room_send(reference, room, body, nonce).await,
            ClientFrame::RoomHistory {
                reference,
                room,
                before,
                limit,
            } => {
                check_room(&room)?;
                let (before, limit) = history::page(before.as_deref(), limit)?;
                self.require_member(&room).await?;
                let (messages, more) = self
                    .state
                    .engine
                    .room_history(&room, before, limit)
                    .await
                    .map_err(on_socket)?;
                Ok(Some(ServerFrame::History {
                    reference,
                    conversation: room_conversation(&room),
                    messages,
                    more,
                }))
            }
            ClientFrame::RoomRead { room, up_to, .. } => {
                check_room(&room)?;
                let up_to = StreamId::parse(&up_to)
                    .ok_or_else(|| refuse(ErrorCode::BadRequest, "up_to is not a message id"))?;
                self.require_member(&room).await?;
                let engine = self.state.engine.clone();
                if let Some(marker) = engine
                    .room_mark_read(&room, &self.user.id, up_to)
                    .await
                    .map_err(on_socket)?
                {
                    // Only the member's own connections hear of it.
                    let frame = ServerFrame::Read {
                        conversation: room_conversation(&room),
                        by: self.user.id.clone(),
                        up_to: marker,
                        cursor: None,
                    };
                    engine
                        .publish_ephemeral(&self.user.id, &frame.to_json())
                        .await
                        .map_err(on_socket)?;
                }
                Ok(None)
            }
            _ => Err(refuse(ErrorCode::BadRequest, "not a room request")),
        }
    }

    async fn require_member(&self, room: &str) -> Result<(), Refused> {
        if self
            .state
            .engine
            .is_member(room, &self.user.id)
            .await
            .map_err(on_socket)?
        {
            Ok(())
        } else {
            Err(not_member())
        }
    }

    async fn join(
        &mut self,
        reference: Option<String>,
        room: String,
        name: Option<String>,
    ) -> Result<Option<ServerFrame>, Refused> {
        check_room(&room)?;
        let name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
        if name
            .as_ref()
            .is_some_and(|n| n.chars().count() > MAX_ROOM_NAME)
        {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("room name is longer than {MAX_ROOM_NAME} characters"),
            ));
        }
        if !crate::auth::claim_allows_room(self.rooms.claim.as_deref(), &room) {
            return Err(refuse(
                ErrorCode::Forbidden,
                "your token does not allow joining this room",
            ));
        }
        let engine = self.state.engine.clone();
        let router = self.state.router.clone();
        let was_member = router.local_rooms(&self.user.id).contains(&room);
        // Subscribed before the join is stored, so nothing after it is missed here.
        router
            .set_room_member(engine.as_ref(), &room, &self.user.id, true)
            .await
            .map_err(on_socket)?;
        let limits = &self.state.settings.limits;
        let outcome = engine
            .join_room(
                &room,
                &self.user,
                name.as_deref(),
                RoomLimits {
                    rooms_per_user: limits.max_rooms_per_user,
                    members_per_room: limits.max_room_members,
                },
            )
            .await;
        let refused = match outcome {
            Ok(JoinOutcome::Joined { room: state, .. }) => {
                let state = *state;
                let (users, _) = engine
                    .room_members(&room, None, MEMBERS_PAGE)
                    .await
                    .map_err(on_socket)?;
                let members = with_presence(&self.state, users).await.map_err(on_socket)?;
                return Ok(Some(ServerFrame::Joined {
                    reference,
                    room: RoomInfo {
                        id: state.id,
                        name: state.name,
                        member_count: state.member_count,
                        members,
                        last: state.last,
                    },
                }));
            }
            Ok(JoinOutcome::RoomFull) => refuse(
                ErrorCode::Forbidden,
                format!("room is full: at most {} members", limits.max_room_members),
            ),
            Ok(JoinOutcome::TooManyRooms) => refuse(
                ErrorCode::Forbidden,
                format!(
                    "too many rooms: at most {} per user",
                    limits.max_rooms_per_user
                ),
            ),
            Err(e) => on_socket(e),
        };
        if !was_member {
            let _ = router
                .set_room_member(engine.as_ref(), &room, &self.user.id, false)
                .await;
        }
        Err(refused)
    }

    async fn room_send(
        &mut self,
        reference: Option<String>,
        room: String,
        body: String,
        nonce: Option<String>,
    ) -> Result<Option<ServerFrame>, Refused> {
        send_policy::check_room_message(
            &room,
            &body,
            nonce.as_deref(),
            self.state.settings.server.max_body,
        )?;
        // Room messages share the sender's send budget (taken once the message is
        // checked, as for a 1:1 send).
        self.take(crate::limits::Kind::Send, 1)?;
        let (nonce, nonce_ttl_secs) = send_policy::stored_nonce(Origin::Socket, nonce);
        let outcome = self
            .state
            .engine
            .room_send(RoomSendRequest {
                room,
                from: self.user.id.clone(),
                body,
                nonce: Some(nonce),
                nonce_ttl_secs,
                sent_at: chat_engine::events::now_rfc3339(),
            })
            .await
            .map_err(on_socket)?
            .ok_or_else(not_member)?;
        metrics::counter!(crate::metric::MESSAGES_RECEIVED).increment(1);
        Ok(Some(ServerFrame::Ack {
            reference,
            message: outcome.message,
        }))
    }

    /// Writes the replay of recovered rooms (after `welcome`).
    pub(super) async fn write_room_replay(&mut self, events: Vec<RoomEvent>) -> Result<(), Stop> {
        for event in events {
            self.write_room_event(&event).await?;
        }
        Ok(())
    }

    /// Handles a room item of the outbox.
    pub(super) async fn deliver_room(&mut self, out: Arc<RoomOut>) -> Result<(), Stop> {
        match out.as_ref() {
            RoomOut::CatchUp(room) => self.catch_up_room(room).await.map(drop),
            RoomOut::Event(event) => {
                if let Some(&(last, member)) = self.rooms.last.get(&event.room) {
                    if event.id <= last {
                        return Ok(());
                    }
                    if !member {
                        // Left: only the user's own next join starts the room again.
                        let rejoined =
                            matches!(&event.change, Some((u, true)) if *u == self.user.id);
                        if rejoined {
                            self.rooms.last.remove(&event.room);
                            return self.write_room_event(event).await;
                        }
                        return Ok(());
                    }
                    // A gap: read it from the room's stream first. When that read
                    // fails the event is not written past the gap: the connection
                    // closes 1013 and the client resumes with `hello.rooms`.
                    if event.prev != last && !self.catch_up_room(&event.room).await? {
                        return Err(Stop::Close(
                            super::delivery::TRY_AGAIN,
                            "room delivery gap: resume",
                        ));
                    }
                }
                self.write_room_event(event).await
            }
        }
    }

    async fn write_room_event(&mut self, event: &RoomEvent) -> Result<(), Stop> {
        if let Some(&(last, member)) = self.rooms.last.get(&event.room) {
            if event.id <= last || !member {
                return Ok(());
            }
        }
        metrics::counter!(crate::metric::MESSAGES_DELIVERED).increment(1);
        self.write_bytes(event.json.clone()).await?;
        // The user left: nothing more of this room reaches this connection.
        let member = !matches!(&event.change, Some((user, false)) if *user == self.user.id);
        // Updated in place: a delivery allocates nothing here once the room is known.
        match self.rooms.last.get_mut(&event.room) {
            Some(last) => *last = (event.id, member),
            None => {
                self.rooms
                    .last
                    .insert(event.room.clone(), (event.id, member));
            }
        }
        Ok(())
    }

    /// Writes every event of `room` after the last one written here (a gap, or a
    /// late subscription). Returns whether the read succeeded; a failure is logged
    /// (after a late subscription the next live event finds the gap again).
    async fn catch_up_room(&mut self, room: &str) -> Result<bool, Stop> {
        let Some((mut after, true)) = self.rooms.last.get(room).copied() else {
            return Ok(true);
        };
        let engine = self.state.engine.clone();
        loop {
            let page = match engine.read_room(room, after, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(room.id = room, error = %e, "room catch-up failed");
                    return Ok(false);
                }
            };
            let full = page.len() == PAGE;
            for event in page {
                after = event.id;
                self.write_room_event(&event).await?;
                if self.rooms.last.get(room).is_some_and(|(_, member)| !member) {
                    return Ok(true);
                }
            }
            if !full {
                return Ok(true);
            }
        }
    }

    /// Catches up every room this connection follows (after a resync).
    pub(super) async fn catch_up_rooms(&mut self) -> Result<(), Stop> {
        let rooms: Vec<String> = self
            .rooms
            .last
            .iter()
            .filter(|(_, (_, member))| *member)
            .map(|(room, _)| room.clone())
            .collect();
        for room in rooms {
            self.catch_up_room(&room).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use chat_engine::RoomEvent;
    use chat_protocol::StreamId;

    use super::super::{test_socket, Stop};
    use crate::config::Settings;
    use crate::router::Out;
    use crate::router::RoomOut;

    fn text_of(m: &axum::extract::ws::Message) -> String {
        match m {
            axum::extract::ws::Message::Text(t) => t.as_str().to_string(),
            _ => String::new(),
        }
    }

    fn event(id: u64, prev: u64) -> Out {
        Out::Room(Arc::new(RoomOut::Event(RoomEvent {
            room: "lobby".into(),
            id: StreamId { ms: id, seq: 0 },
            prev: StreamId { ms: prev, seq: 0 },
            json: Bytes::from(format!(r#"{{"type":"message","n":{id}}}"#)),
            change: None,
        })))
    }

    /// A room event after a gap whose read fails is not written past the gap: the
    /// connection closes 1013 and the client resumes with `hello.rooms` (it used to
    /// log the failure and write the event, losing the gap for good).
    #[tokio::test(start_paused = true)]
    async fn a_room_gap_that_cannot_be_read_closes_for_a_resume() {
        let (state, flaky) = test_socket::flaky_state(Settings::default());
        let user = chat_protocol::User {
            id: "bob".into(),
            name: "bob".into(),
        };
        let (mut conn, tx, mut peer) = test_socket::conn(state, user);
        conn.rooms
            .last
            .insert("lobby".into(), (StreamId { ms: 1, seq: 0 }, true));
        let task = tokio::spawn(async move { conn.run().await });
        // Contiguous: written.
        tx.send(event(2, 1)).await.unwrap();
        let first = peer.next().await.expect("the first event is written");
        assert!(text_of(&first).contains(r#""n":2"#), "{first:?}");
        // Event 3 is missing and cannot be read.
        flaky.fail(true);
        tx.send(event(4, 3)).await.unwrap();
        let stop = tokio::time::timeout(std::time::Duration::from_secs(60), task)
            .await
            .expect("the connection stops")
            .expect("task");
        assert!(
            matches!(stop, Stop::Close(super::super::delivery::TRY_AGAIN, _)),
            "close 1013 expected, got {stop:?}"
        );
        let written = peer.written();
        assert!(
            !written
                .iter()
                .any(|m| format!("{m:?}").contains(r#""n":4"#)),
            "nothing written past the gap: {written:?}"
        );
    }
}
