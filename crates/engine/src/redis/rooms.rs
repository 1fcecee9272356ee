//! Rooms on Redis ([`Rooms`]), the same on one Redis, Sentinel and a cluster.
//!
//! Every room key shares the room's hash tag ([`keys::room_meta`] and the rest), so
//! each room write is one slot-local `FCALL` (`scripts/rooms.lua`, called through
//! [`room_calls`]): a message is appended once to the room's event stream and
//! `SPUBLISH`ed once on the room's channel, whatever the number of members
//! (`room_commands_do_not_grow_with_members` in the tests counts them). The user's half
//! of a join or leave — the set of the user's rooms and the `member` event on the
//! user's own channel, so every node with the user's connections follows — is in the
//! user's slot: a join first lists the room in the user's set with
//! `chat_rooms_reserve`, atomically against the rooms-per-user cap (two joins at once
//! cannot both pass it), and takes it out again if the room was full or the join
//! failed; the members-per-room cap is checked atomically by the join itself.
//!
//! The event stream is trimmed on each append like a conversation's history:
//! `history_max_len` events and `history_max_age_secs` (a `MINID` from this node's
//! clock), both approximate. Recovery stays exact because it is proven by the `prev`
//! chain of what is left, not by the trim.

use async_trait::async_trait;
use bytes::Bytes;
use chat_protocol::rooms::{MemberChange, MemberEvent};
use chat_protocol::{room_conversation, Event, Message, StreamId, User};
use fred::prelude::*;
use serde::Deserialize;

use super::conn::{all_ok, entries, map_err, number, text, Entry};
use super::functions::rooms::{self as room_calls, MemberCall, RoomSend, RoomSent, SEND};
use super::{keys, messages, payload, RedisEngine};
use crate::events::now_ms;
use crate::{
    sort_by_activity, EngineError, JoinOutcome, RoomEvent, RoomLimits, RoomSendRequest, RoomState,
    RoomSummary, Rooms, SendOutcome,
};

/// Entries read per `XREVRANGE` while paging history past `member` events.
const HISTORY_SCAN: usize = 200;

fn bad(what: &str) -> EngineError {
    EngineError::Internal(format!("unexpected room reply from redis: {what}"))
}

/// A stored room event with its full frame.
fn room_event(room: &str, entry: &Entry) -> Result<RoomEvent, EngineError> {
    let id = StreamId::parse(&entry.id).ok_or_else(|| bad("event id"))?;
    let field = |name| entry.bytes(name).cloned().unwrap_or_default();
    let prev = std::str::from_utf8(&field("p"))
        .ok()
        .and_then(StreamId::parse)
        .unwrap_or(StreamId::ZERO);
    let mut json = Vec::new();
    json.extend_from_slice(&field("j"));
    json.extend_from_slice(entry.id.as_bytes());
    json.extend_from_slice(&field("t"));
    let user = String::from_utf8_lossy(&field("u")).to_string();
    let change = match field("k").as_ref() {
        b"j" => Some((user, true)),
        b"l" => Some((user, false)),
        _ => None,
    };
    Ok(RoomEvent {
        room: room.to_string(),
        id,
        prev,
        json: Bytes::from(json),
        change,
    })
}

/// The message inside a `{"type":"message","message":{…}}` frame.
fn message_of(frame: &[u8]) -> Option<Message> {
    #[derive(Deserialize)]
    struct Frame {
        message: Message,
    }
    serde_json::from_slice::<Frame>(frame)
        .ok()
        .map(|f| f.message)
}

impl RedisEngine {
    /// Tells every node with the user's connections about their membership change.
    async fn notify_member(&self, event: &RoomEvent, user: &str) -> Result<(), EngineError> {
        let _: i64 = self
            .core
            .pool
            .next_connected()
            .with_options(&self.core.opts)
            .spublish(keys::channel(user), payload::room_notice(event))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// A join (`join`: the name of the room should the join create it, and the
    /// members cap) or a leave; with the `member` event it appended, if it did.
    async fn member_event(
        &self,
        room: &str,
        user: &User,
        change: MemberChange,
        join: Option<(&str, u64)>,
    ) -> Result<(i64, Option<RoomEvent>), EngineError> {
        let event = MemberEvent::new(room, change, user);
        let (head, tail) = event.split_at_id();
        let call = MemberCall {
            room,
            user: &user.id,
            head,
            tail,
            retention: &self.core.retention,
            now_ms: now_ms(),
        };
        let (function, (keys, args)) = match join {
            Some((name, max_members)) => (
                room_calls::JOIN,
                call.join_call(&user.name, name, max_members),
            ),
            None => (room_calls::LEAVE, call.leave_call()),
        };
        let reply = self
            .core
            .fcall(function, &keys, &args, &self.core.opts)
            .await?;
        let (code, ids) = room_calls::parse_member_reply(reply)?;
        let event = ids.map(|(id, prev)| RoomEvent {
            room: room.to_string(),
            id,
            prev,
            json: Bytes::from(event.with_id(&id.to_string())),
            change: Some((user.id.clone(), change == MemberChange::Joined)),
        });
        Ok((code, event))
    }

    async fn state(&self, room: &str) -> Result<Option<RoomState>, EngineError> {
        let pipeline = self.core.pool.next_connected().pipeline();
        let _: () = pipeline
            .hmget(keys::room_meta(room), vec!["name", "lm"])
            .await
            .map_err(map_err)?;
        let _: () = pipeline
            .zcard(keys::room_members(room))
            .await
            .map_err(map_err)?;
        let mut replies = all_ok(pipeline.try_all::<Value>().await)?.into_iter();
        let (Some(meta), Some(count)) = (replies.next(), replies.next()) else {
            return Err(bad("room state"));
        };
        let mut meta = match meta {
            Value::Array(items) => items.into_iter(),
            _ => return Err(bad("room meta")),
        };
        let Some(name) = meta.next().and_then(text) else {
            return Ok(None);
        };
        let last = meta
            .next()
            .and_then(|v| v.into_bytes())
            .and_then(|b| message_of(&b));
        Ok(Some(RoomState {
            id: room.to_string(),
            name,
            member_count: number(&count),
            last,
        }))
    }
}

#[async_trait]
impl Rooms for RedisEngine {
    async fn join_room(
        &self,
        room: &str,
        user: &User,
        name: Option<&str>,
        limits: RoomLimits,
    ) -> Result<JoinOutcome, EngineError> {
        // The room goes into the user's set first, atomically against the cap; a join
        // that then does not happen takes it out again.
        let (keys, args) = room_calls::reserve_call(&user.id, room, limits.rooms_per_user);
        let reply = self
            .core
            .fcall(room_calls::RESERVE, &keys, &args, &self.core.opts)
            .await?;
        let reserved = room_calls::parse_reserve_reply(reply)?;
        if reserved < 0 {
            return Ok(JoinOutcome::TooManyRooms);
        }
        let join = (name.unwrap_or(room), limits.members_per_room);
        let joined = self
            .member_event(room, user, MemberChange::Joined, Some(join))
            .await;
        let full = matches!(joined, Ok((code, _)) if code < 0);
        if reserved == 1 && (full || joined.is_err()) {
            let undo: Result<i64, _> = self.core.cmd().srem(keys::user_rooms(&user.id), room).await;
            if let Err(e) = undo {
                tracing::warn!(room.id = room, user.id = %user.id, error = %e, "could not unlist a room that was not joined");
            }
        }
        let (code, event) = joined?;
        if full {
            return Ok(JoinOutcome::RoomFull);
        }
        if let Some(event) = &event {
            self.notify_member(event, &user.id).await?;
        }
        let state = self
            .state(room)
            .await?
            .ok_or_else(|| EngineError::Internal("joined room has no meta".into()))?;
        Ok(JoinOutcome::Joined {
            room: Box::new(state),
            changed: code == 1,
        })
    }

    async fn leave_room(&self, room: &str, user: &User) -> Result<bool, EngineError> {
        let (code, event) = self
            .member_event(room, user, MemberChange::Left, None)
            .await?;
        let _: i64 = self
            .core
            .cmd()
            .srem(keys::user_rooms(&user.id), room)
            .await
            .map_err(map_err)?;
        if let Some(event) = &event {
            self.notify_member(event, &user.id).await?;
        }
        Ok(code == 1)
    }

    async fn room(&self, room: &str) -> Result<Option<RoomState>, EngineError> {
        self.state(room).await
    }

    async fn is_member(&self, room: &str, user: &str) -> Result<bool, EngineError> {
        let score: Option<f64> = self
            .core
            .cmd()
            .zscore(keys::room_members(room), user)
            .await
            .map_err(map_err)?;
        Ok(score.is_some())
    }

    async fn room_members(
        &self,
        room: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<User>, bool), EngineError> {
        let min = match after {
            Some(a) => format!("({a}"),
            None => "-".to_string(),
        };
        let mut ids: Vec<String> = self
            .core
            .cmd()
            .zrangebylex(
                keys::room_members(room),
                min,
                "+",
                Some((0, limit as i64 + 1)),
            )
            .await
            .map_err(map_err)?;
        let more = ids.len() > limit;
        ids.truncate(limit);
        if ids.is_empty() {
            return Ok((Vec::new(), more));
        }
        let names: Vec<Option<String>> = self
            .core
            .cmd()
            .hmget(keys::room_names(room), ids.clone())
            .await
            .map_err(map_err)?;
        let users = ids
            .into_iter()
            .zip(names)
            .map(|(id, name)| User {
                name: name.unwrap_or_else(|| id.clone()),
                id,
            })
            .collect();
        Ok((users, more))
    }

    async fn user_rooms(&self, user: &str) -> Result<Vec<String>, EngineError> {
        let mut rooms: Vec<String> = self
            .core
            .cmd()
            .smembers(keys::user_rooms(user))
            .await
            .map_err(map_err)?;
        rooms.sort();
        Ok(rooms)
    }

    async fn room_summaries(&self, user: &str) -> Result<Vec<RoomSummary>, EngineError> {
        let rooms = self.user_rooms(user).await?;
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.core.pool.next_connected().pipeline();
        let marker = format!("r:{user}");
        for room in &rooms {
            let fields = vec!["name", "lm", "s", "lt", marker.as_str()];
            let _: () = pipeline
                .hmget(keys::room_meta(room), fields)
                .await
                .map_err(map_err)?;
            let _: () = pipeline
                .zcard(keys::room_members(room))
                .await
                .map_err(map_err)?;
        }
        let replies = all_ok(pipeline.try_all::<Value>().await)?;
        let mut out = Vec::new();
        for (room, pair) in rooms.into_iter().zip(replies.chunks(2)) {
            let [meta, count] = pair else {
                return Err(bad("room summaries"));
            };
            let Value::Array(meta) = meta.clone() else {
                return Err(bad("room meta"));
            };
            let mut meta = meta.into_iter();
            let Some(name) = meta.next().and_then(text) else {
                continue;
            };
            let last = meta
                .next()
                .and_then(|v| v.into_bytes())
                .and_then(|b| message_of(&b));
            let seq = meta.next().map(|v| number(&v)).unwrap_or(0);
            let active = meta
                .next()
                .and_then(text)
                .and_then(|s| StreamId::parse(&s))
                .unwrap_or(StreamId::ZERO);
            let read = meta.next().map(|v| number(&v)).unwrap_or(0);
            out.push(RoomSummary {
                room: RoomState {
                    id: room,
                    name,
                    member_count: number(count),
                    last,
                },
                unread: seq.saturating_sub(read),
                active,
            });
        }
        sort_by_activity(&mut out);
        Ok(out)
    }

    async fn room_send(&self, req: RoomSendRequest) -> Result<Option<SendOutcome>, EngineError> {
        let blank = Message {
            id: String::new(),
            conversation: room_conversation(&req.room),
            from: req.from.clone(),
            to: String::new(),
            body: req.body,
            sent_at: req.sent_at,
            room: Some(req.room.clone()),
        };
        let (head, tail) = Event::Message { message: &blank }
            .split_at_id()
            .ok_or_else(|| EngineError::Internal("message frame has no id".into()))?;
        let nonce = req
            .nonce
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let (keys, args) = RoomSend {
            room: &req.room,
            from: &req.from,
            nonce: &nonce,
            nonce_ttl_secs: req.nonce_ttl_secs,
            head,
            tail,
        }
        .call(&self.core.retention, now_ms());
        // As for a 1:1 send: a call that failed `Unavailable` may have run (a
        // timeout), so it is sent again with the same nonce a bounded number of times;
        // the answer is the stored message or an `Unavailable` saying it may be stored.
        let mut attempt = 0;
        let mut uncertain = false;
        let reply = loop {
            match self.core.fcall(SEND, &keys, &args, &self.core.opts).await {
                Ok(reply) => break reply,
                Err(e) if attempt < messages::SEND_RETRIES && e.may_have_run() => {
                    uncertain = true;
                    attempt += 1;
                    tracing::warn!(attempt, error = %e, "room send failed; retrying with its nonce");
                    tokio::time::sleep(messages::SEND_RETRY_BACKOFF * attempt).await;
                }
                Err(e) if e.is_unavailable() && (uncertain || e.may_have_run()) => {
                    return Err(EngineError::MaybeStored(e.to_string()));
                }
                Err(e) => return Err(e),
            }
        };
        match room_calls::parse_send_reply(reply)? {
            RoomSent::Stored(id) => Ok(Some(SendOutcome {
                message: Message { id, ..blank },
                duplicate: false,
            })),
            RoomSent::Duplicate(id) => {
                let found: Value = self
                    .core
                    .cmd()
                    .xrange(keys::room_events(&req.room), &id, &id, Some(1))
                    .await
                    .map_err(map_err)?;
                let message = entries(found)?
                    .first()
                    .and_then(|e| room_event(&req.room, e).ok())
                    .and_then(|e| message_of(&e.json))
                    // Trimmed away since: the retry's id is all that is left.
                    .unwrap_or(Message { id, ..blank });
                Ok(Some(SendOutcome {
                    message,
                    duplicate: true,
                }))
            }
            RoomSent::NotMember => Ok(None),
        }
    }

    async fn room_history(
        &self,
        room: &str,
        before: Option<StreamId>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), EngineError> {
        let mut upper = match before {
            Some(StreamId::ZERO) => return Ok((Vec::new(), false)),
            Some(b) => format!("({b}"),
            None => "+".to_string(),
        };
        let mut newest = Vec::new();
        loop {
            let page: Value = self
                .core
                .cmd()
                .xrevrange(
                    keys::room_events(room),
                    &upper,
                    "-",
                    Some(HISTORY_SCAN as u64),
                )
                .await
                .map_err(map_err)?;
            let page = entries(page)?;
            let done = page.len() < HISTORY_SCAN;
            if let Some(last) = page.last() {
                upper = format!("({}", last.id);
            }
            for entry in &page {
                if entry.bytes("k").map(|k| k.as_ref()) == Some(b"m".as_ref()) {
                    let event = room_event(room, entry)?;
                    if let Some(m) = message_of(&event.json) {
                        newest.push(m);
                    }
                }
                if newest.len() > limit {
                    break;
                }
            }
            if done || newest.len() > limit {
                break;
            }
        }
        let more = newest.len() > limit;
        newest.truncate(limit);
        newest.reverse();
        Ok((newest, more))
    }

    async fn room_mark_read(
        &self,
        room: &str,
        user: &str,
        up_to: StreamId,
    ) -> Result<Option<String>, EngineError> {
        let (keys, args) = room_calls::read_call(room, user, up_to);
        let reply = self
            .core
            .fcall(room_calls::READ, &keys, &args, &self.core.opts)
            .await?;
        Ok(room_calls::parse_read_reply(reply))
    }

    async fn read_room(
        &self,
        room: &str,
        after: StreamId,
        count: usize,
    ) -> Result<Vec<RoomEvent>, EngineError> {
        let page: Value = self
            .core
            .cmd()
            .xrange(
                keys::room_events(room),
                format!("({after}"),
                "+",
                Some(count as u64),
            )
            .await
            .map_err(map_err)?;
        entries(page)?.iter().map(|e| room_event(room, e)).collect()
    }

    async fn room_head(&self, room: &str) -> Result<StreamId, EngineError> {
        let head: Option<String> = self
            .core
            .cmd()
            .hget(keys::room_meta(room), "e")
            .await
            .map_err(map_err)?;
        Ok(head
            .as_deref()
            .and_then(StreamId::parse)
            .unwrap_or(StreamId::ZERO))
    }

    async fn subscribe_room(&self, room: &str) -> Result<(), EngineError> {
        self.core.subscribers.subscribe_room(room).await
    }

    async fn unsubscribe_room(&self, room: &str) -> Result<(), EngineError> {
        self.core.subscribers.unsubscribe_room(room).await
    }
}
