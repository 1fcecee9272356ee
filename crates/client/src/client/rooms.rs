//! Room requests of [`Client`] (protocol 1.1): `join`, `leave`, room `send`,
//! `history` and `read`, `rooms` and `members`.
//!
//! Room events arrive through [`Client::next_event`] like 1:1 ones: `message` frames
//! whose message has a `room`, and `member` frames. Both move the room's cursor
//! ([`crate::RoomCursors`]) when consumed and are de-duplicated by room + id.

use chat_protocol::rooms::{RoomInfo, RoomItem};
use chat_protocol::{ClientFrame, Message, ServerFrame, UserInfo};

use super::requests::Thread;
use super::Client;
use crate::ClientError;

impl Client {
    /// Joins `room` (creating it, named `name` or else its id, if it does not exist)
    /// and returns it with its first 100 members. Joining a room one is in changes
    /// nothing. Refused with `forbidden` when the token may not join it or a cap is
    /// reached, `bad_request` for an invalid id.
    ///
    /// The room's `last` message, if any, starts its cursor: a disconnect before
    /// the first room event is consumed still recovers what came after the join.
    pub async fn join(&mut self, room: &str, name: Option<&str>) -> Result<RoomInfo, ClientError> {
        let frame = ClientFrame::Join {
            reference: None,
            room: room.to_string(),
            name: name.map(str::to_string),
        };
        match self.request(frame).await? {
            ServerFrame::Joined { room, .. } => {
                if let Some(last) = &room.last {
                    self.room_cursors.advance(&room.id, &last.id);
                }
                Ok(room)
            }
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Leaves `room`: nothing more arrives from it, and it is no longer recovered.
    /// Leaving a room one is not in succeeds and changes nothing.
    pub async fn leave(&mut self, room: &str) -> Result<(), ClientError> {
        let frame = ClientFrame::Leave {
            reference: None,
            room: room.to_string(),
        };
        match self.request(frame).await? {
            ServerFrame::Left { room, .. } => {
                self.room_cursors.remove(&room);
                Ok(())
            }
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Sends a message to `room` with a random nonce and waits for its `ack`.
    pub async fn room_send(&mut self, room: &str, body: &str) -> Result<Message, ClientError> {
        let nonce = uuid::Uuid::new_v4().to_string();
        self.room_send_with_nonce(room, body, &nonce).await
    }

    /// Sends a message to `room` with this nonce and waits for its `ack`. A retry
    /// of an earlier send (after a timeout, a disconnect or `unavailable`) reuses its
    /// nonce and gets the message stored the first time, never a second copy.
    pub async fn room_send_with_nonce(
        &mut self,
        room: &str,
        body: &str,
        nonce: &str,
    ) -> Result<Message, ClientError> {
        let frame = ClientFrame::RoomSend {
            reference: None,
            room: room.to_string(),
            body: body.to_string(),
            nonce: Some(nonce.to_string()),
        };
        match self.request(frame).await? {
            ServerFrame::Ack { message, .. } => Ok(message),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// A page of `room`'s history: up to `limit` messages older than `before`,
    /// ascending, and whether older ones exist.
    pub async fn room_history(
        &mut self,
        room: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Message>, bool), ClientError> {
        self.history_page(Thread::Room(room), before, limit).await
    }

    /// `room`'s whole history, oldest first, paging backwards by 100.
    pub async fn full_room_history(&mut self, room: &str) -> Result<Vec<Message>, ClientError> {
        self.full_history_of(Thread::Room(room)).await
    }

    /// The user's rooms with unread counts, newest activity first.
    pub async fn rooms(&mut self) -> Result<Vec<RoomItem>, ClientError> {
        match self.request(ClientFrame::Rooms { reference: None }).await? {
            ServerFrame::Rooms { items, .. } => Ok(items),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// A page of `room`'s members (at most 100, in id order) after the member id
    /// `after`, and whether more follow.
    pub async fn members(
        &mut self,
        room: &str,
        after: Option<&str>,
    ) -> Result<(Vec<UserInfo>, bool), ClientError> {
        let frame = ClientFrame::Members {
            reference: None,
            room: room.to_string(),
            after: after.map(str::to_string),
        };
        match self.request(frame).await? {
            ServerFrame::Members { items, more, .. } => Ok((items, more)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Every member of `room`, page after page.
    pub async fn all_members(&mut self, room: &str) -> Result<Vec<UserInfo>, ClientError> {
        let mut all: Vec<UserInfo> = Vec::new();
        loop {
            let after = all.last().map(|m| m.id.clone());
            let (page, more) = self.members(room, after.as_deref()).await?;
            let empty = page.is_empty();
            all.extend(page);
            if !more || empty {
                return Ok(all);
            }
        }
    }

    /// Moves this member's read marker in `room` forward to `up_to`. Like a 1:1
    /// `read` there is no reply: the user's own connections (this one too) receive a
    /// `read` event when the marker moved, and a refusal (`forbidden` for a
    /// non-member) arrives as an `error` event.
    pub async fn room_read(&mut self, room: &str, up_to: &str) -> Result<(), ClientError> {
        let frame = ClientFrame::RoomRead {
            reference: None,
            room: room.to_string(),
            up_to: up_to.to_string(),
        };
        self.send_frame(&frame).await
    }
}
