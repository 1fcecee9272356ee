//! Room events to this connection, in each room's order: the user's rooms registered
//! with the router at sign-in, the recovery of the rooms of `hello.rooms`, then live
//! room events, with a catch-up read from the room's stream whenever a gap shows.

use std::sync::Arc;

use chat_engine::RoomEvent;
use chat_protocol::rooms::{RoomRecovery, RoomsRecovered};
use chat_protocol::StreamId;

use super::SignedInRooms;
use crate::connection::{unavailable, Conn, Socket, Stop, TRY_AGAIN};
use crate::router::RoomOut;

/// Room events read per round trip during recovery and catch-up.
const PAGE: usize = 200;

impl<S: Socket> Conn<S> {
    /// Registers the user's rooms with the router (subscribing them on this node),
    /// before anything is read for recovery, so no live event is missed.
    pub(in crate::connection) async fn attach_rooms(
        &mut self,
        signed: &SignedInRooms,
    ) -> Result<(), Stop> {
        self.rooms.claim = signed.claim.clone().map(Vec::into_boxed_slice);
        let engine = self.state.engine.clone();
        let rooms = engine
            .user_rooms(&self.user.id)
            .await
            .map_err(unavailable)?;
        for room in rooms {
            self.state
                .router
                .set_room_member(engine.as_ref(), &room, &self.user.id, true)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// For each room of `hello.rooms` the user is a member of: whether every event
    /// after the client's id is still retained, and those events. Rooms not
    /// recovered start live from their newest event.
    pub(in crate::connection) async fn recover_rooms(
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
            let head = engine.room_head(room).await.map_err(unavailable)?;
            let recovered = match StreamId::parse(last) {
                Some(after) if after <= head => {
                    let mut events = Vec::new();
                    let mut cursor = after;
                    loop {
                        let page = engine
                            .read_room(room, cursor, PAGE)
                            .await
                            .map_err(unavailable)?;
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

    /// Writes the replay of recovered rooms (after `welcome`).
    pub(in crate::connection) async fn write_room_replay(
        &mut self,
        events: Vec<RoomEvent>,
    ) -> Result<(), Stop> {
        for event in events {
            self.write_room_event(&event).await?;
        }
        Ok(())
    }

    /// Handles a room item of the outbox.
    pub(in crate::connection) async fn deliver_room(
        &mut self,
        out: Arc<RoomOut>,
    ) -> Result<(), Stop> {
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
                        return Err(Stop::Close(TRY_AGAIN, "room delivery gap: resume"));
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
    pub(in crate::connection) async fn catch_up_rooms(&mut self) -> Result<(), Stop> {
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

    use crate::config::Settings;
    use crate::connection::{test_socket, Stop, TRY_AGAIN};
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
        let (state, faults) = test_socket::faulty_state(Settings::default());
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
        faults.fail(chat_engine::memory::Op::ReadRoom);
        tx.send(event(4, 3)).await.unwrap();
        let stop = tokio::time::timeout(std::time::Duration::from_secs(60), task)
            .await
            .expect("the connection stops")
            .expect("task");
        assert!(
            matches!(stop, Stop::Close(TRY_AGAIN, _)),
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
