//! The room requests: `join`, `leave`, `members`, `rooms`, and `send`, `history`
//! and `read` naming a `room`. Every one that reads or writes a room checks
//! membership in the engine first (`forbidden`, nothing stored); a room message
//! follows the send policy (`send_policy.rs`) and the sender's send budget.

use chat_engine::events::now_rfc3339;
use chat_engine::{JoinOutcome, RoomLimits, RoomSendRequest};
use chat_protocol::rooms::{RoomInfo, RoomItem, MAX_ROOM_NAME, MEMBERS_PAGE};
use chat_protocol::{room_conversation, ClientFrame, ErrorCode, ServerFrame, StreamId};

use crate::connection::{Conn, Socket};
use crate::errors::{on_socket, refuse, Refused};
use crate::history;
use crate::send_policy::{self, Origin};

fn check_room(room: &str) -> Result<(), Refused> {
    send_policy::check_room(room).map_err(Refused::from)
}

fn not_member() -> Refused {
    refuse(ErrorCode::Forbidden, "not a member of this room")
}

impl<S: Socket> Conn<S> {
    /// Handles one room request.
    pub(in crate::connection) async fn room_request(
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
                let items = super::super::social::with_presence(&self.state, users)
                    .await
                    .map_err(on_socket)?;
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
                self.require_claim(&room)?;
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

    /// The sign-in's `rooms` claim (the token's, or the one a resumed session was
    /// created with) covers `room`: a member who joined under a wider token, or before
    /// the claim was narrowed, still may not read or write outside it.
    fn require_claim(&self, room: &str) -> Result<(), Refused> {
        if crate::auth::claim_allows_room(self.rooms.claim.as_deref(), room) {
            Ok(())
        } else {
            Err(refuse(
                ErrorCode::Forbidden,
                "your token does not allow this room",
            ))
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
                let members = super::super::social::with_presence(&self.state, users)
                    .await
                    .map_err(on_socket)?;
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
        self.require_claim(&room)?;
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
                sent_at: now_rfc3339(),
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
}
