//! The memory engine's rooms ([`Rooms`]): the same rules as the Redis engine — a
//! stream of events per room with a `prev` chain, membership as a set per room and a
//! set of rooms per user, unread = message count − the member's marker — inside the
//! engine's one lock. Live events go to the sinks while the lock is held (in order):
//! once for the room ([`EventSink::deliver_room`]) to each node subscribed to it, and
//! a `member` event also to the user it is about ([`LiveEvent::Room`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chat_protocol::rooms::{MemberChange, MemberEvent};
use chat_protocol::{room_conversation, Event, Message, StreamId, User};

use super::faults::Op;
use super::messages::SendNonce;
use super::{MemoryEngine, State};
use crate::events::now_ms;
use crate::{
    sort_by_activity, EngineError, JoinOutcome, LiveEvent, RoomEvent, RoomLimits, RoomSendRequest,
    RoomState, RoomSummary, Rooms, SendOutcome,
};

/// Every room of the node.
#[derive(Default)]
pub(super) struct RoomsState {
    rooms: HashMap<String, Room>,
    /// User → rooms they are a member of.
    of_user: HashMap<String, BTreeSet<String>>,
}

struct Room {
    /// Display name, set by the join that created the room.
    name: String,
    /// Member id → display name at join.
    members: BTreeMap<String, String>,
    /// Every event (messages and `member` events), oldest first, trimmed from the
    /// front by `history_max_len` and `history_max_age_secs` (as Redis trims the
    /// room's one stream).
    events: VecDeque<Arc<RoomEvent>>,
    /// Messages by id with their sequence number (the history): the messages among
    /// `events`, so history and recovery keep the same ones, as on Redis.
    messages: BTreeMap<StreamId, (u64, Message)>,
    /// Newest event id: the next event's `prev`, kept when trimming drops events.
    head: StreamId,
    /// Messages ever sent: unread is this minus a member's marker.
    seq: u64,
    /// The newest message, for room states and summaries even once trimmed.
    last: Option<Message>,
    /// Newest message (or the creating join): orders the user's rooms list.
    active: StreamId,
    /// Member → read marker (sequence number).
    reads: HashMap<String, u64>,
}

impl Room {
    /// Drops the oldest events past `max_len` (0 = no limit) or older than `min_ms`,
    /// and the messages among them. Only the oldest end is touched (both are in id
    /// order), so a trim costs what it drops, not the room's size.
    fn trim(&mut self, max_len: u64, min_ms: Option<u64>) {
        while let Some(oldest) = self.events.front() {
            let too_many = max_len > 0 && self.events.len() as u64 > max_len;
            let too_old = min_ms.is_some_and(|min| oldest.id.ms < min);
            if !too_many && !too_old {
                break;
            }
            self.events.pop_front();
        }
        let kept = self.events.front().map(|e| e.id);
        while let Some((&id, _)) = self.messages.first_key_value() {
            if kept.is_some_and(|kept| id >= kept) {
                break;
            }
            self.messages.pop_first();
        }
    }

    fn state(&self, id: &str) -> RoomState {
        RoomState {
            id: id.to_string(),
            name: self.name.clone(),
            member_count: self.members.len() as u64,
            last: self.last.clone(),
        }
    }
}

impl MemoryEngine {
    /// Appends an event to the room and hands it to the sinks: of every node
    /// subscribed to the room, and for a membership change also of every node
    /// subscribed to the user it is about.
    fn append_room_event(
        &self,
        st: &mut State,
        room_id: &str,
        json: impl FnOnce(StreamId) -> String,
        change: Option<(String, bool)>,
    ) -> StreamId {
        let id = st.next_id();
        let max_len = self.retention.history_max_len;
        let max_age = self.retention.history_max_age_secs;
        let min_ms = (max_age > 0).then(|| now_ms().saturating_sub(max_age.saturating_mul(1000)));
        let Some(room) = st.rooms.rooms.get_mut(room_id) else {
            return id;
        };
        let event = Arc::new(RoomEvent {
            room: room_id.to_string(),
            id,
            prev: room.head,
            json: Bytes::from(json(id)),
            change,
        });
        room.head = id;
        room.events.push_back(event.clone());
        room.trim(max_len, min_ms);
        if let Some((user, _)) = &event.change {
            st.nodes.deliver(user, LiveEvent::Room(event.clone()));
        }
        st.nodes.deliver_room(&event);
        id
    }
}

#[async_trait]
impl Rooms for MemoryEngine {
    async fn join_room(
        &self,
        room_id: &str,
        user: &User,
        name: Option<&str>,
        limits: RoomLimits,
    ) -> Result<JoinOutcome, EngineError> {
        let mut st = self.lock();
        if let Some(room) = st.rooms.rooms.get(room_id) {
            if room.members.contains_key(&user.id) {
                return Ok(JoinOutcome::Joined {
                    room: Box::new(room.state(room_id)),
                    changed: false,
                });
            }
            if room.members.len() as u64 >= limits.members_per_room {
                return Ok(JoinOutcome::RoomFull);
            }
        }
        let mine = st.rooms.of_user.get(&user.id).map_or(0, |r| r.len()) as u64;
        if mine >= limits.rooms_per_user {
            return Ok(JoinOutcome::TooManyRooms);
        }
        let room = st
            .rooms
            .rooms
            .entry(room_id.to_string())
            .or_insert_with(|| Room {
                name: name.unwrap_or(room_id).to_string(),
                members: BTreeMap::new(),
                events: VecDeque::new(),
                messages: BTreeMap::new(),
                head: StreamId::ZERO,
                seq: 0,
                last: None,
                active: StreamId::ZERO,
                reads: HashMap::new(),
            });
        room.members.insert(user.id.clone(), user.name.clone());
        // Messages from before the join are not unread.
        let seq = room.seq;
        room.reads.insert(user.id.clone(), seq);
        st.rooms
            .of_user
            .entry(user.id.clone())
            .or_default()
            .insert(room_id.to_string());
        let event = MemberEvent::new(room_id, MemberChange::Joined, user);
        let id = self.append_room_event(
            &mut st,
            room_id,
            |id| event.with_id(&id.to_string()),
            Some((user.id.clone(), true)),
        );
        let room = st.rooms.rooms.get_mut(room_id);
        let state = room.map(|r| {
            if r.active == StreamId::ZERO {
                r.active = id;
            }
            r.state(room_id)
        });
        Ok(JoinOutcome::Joined {
            room: Box::new(state.ok_or_else(|| EngineError::Internal("room vanished".into()))?),
            changed: true,
        })
    }

    async fn leave_room(&self, room_id: &str, user: &User) -> Result<bool, EngineError> {
        let mut st = self.lock();
        let Some(room) = st.rooms.rooms.get_mut(room_id) else {
            return Ok(false);
        };
        if room.members.remove(&user.id).is_none() {
            return Ok(false);
        }
        room.reads.remove(&user.id);
        if let Some(set) = st.rooms.of_user.get_mut(&user.id) {
            set.remove(room_id);
        }
        let event = MemberEvent::new(room_id, MemberChange::Left, user);
        self.append_room_event(
            &mut st,
            room_id,
            |id| event.with_id(&id.to_string()),
            Some((user.id.clone(), false)),
        );
        Ok(true)
    }

    async fn room(&self, room_id: &str) -> Result<Option<RoomState>, EngineError> {
        Ok(self
            .lock()
            .rooms
            .rooms
            .get(room_id)
            .map(|r| r.state(room_id)))
    }

    async fn is_member(&self, room_id: &str, user: &str) -> Result<bool, EngineError> {
        Ok(self
            .lock()
            .rooms
            .rooms
            .get(room_id)
            .is_some_and(|r| r.members.contains_key(user)))
    }

    async fn room_members(
        &self,
        room_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<User>, bool), EngineError> {
        let st = self.lock();
        let Some(room) = st.rooms.rooms.get(room_id) else {
            return Ok((Vec::new(), false));
        };
        let mut page: Vec<User> = room
            .members
            .iter()
            .filter(|(id, _)| after.is_none_or(|a| id.as_str() > a))
            .take(limit + 1)
            .map(|(id, name)| User {
                id: id.clone(),
                name: st.users.get(id).unwrap_or(name).clone(),
            })
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        Ok((page, more))
    }

    async fn user_rooms(&self, user: &str) -> Result<Vec<String>, EngineError> {
        Ok(self
            .lock()
            .rooms
            .of_user
            .get(user)
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default())
    }

    async fn room_summaries(&self, user: &str) -> Result<Vec<RoomSummary>, EngineError> {
        let st = self.lock();
        let mut out: Vec<RoomSummary> = st
            .rooms
            .of_user
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|id| {
                let room = st.rooms.rooms.get(id)?;
                let read = room.reads.get(user).copied().unwrap_or(0);
                Some(RoomSummary {
                    room: room.state(id),
                    unread: room.seq.saturating_sub(read),
                    active: room.active,
                })
            })
            .collect();
        sort_by_activity(&mut out);
        Ok(out)
    }

    async fn room_send(&self, req: RoomSendRequest) -> Result<Option<SendOutcome>, EngineError> {
        self.faults.check(Op::RoomSend)?;
        let conversation = room_conversation(&req.room);
        let mut st = self.lock();
        st.prune();
        if !st
            .rooms
            .rooms
            .get(&req.room)
            .is_some_and(|r| r.members.contains_key(&req.from))
        {
            return Ok(None);
        }
        let nonce = SendNonce::new(&conversation, &req.from, req.nonce.as_deref());
        if let Some(message) = nonce.stored(&st) {
            return Ok(Some(SendOutcome {
                message,
                duplicate: true,
            }));
        }
        let mut message = Message {
            id: String::new(),
            conversation,
            from: req.from.clone(),
            to: String::new(),
            body: req.body,
            sent_at: req.sent_at,
            room: Some(req.room.clone()),
        };
        let id = self.append_room_event(
            &mut st,
            &req.room,
            |id| {
                message.id = id.to_string();
                Event::Message { message: &message }.to_json()
            },
            None,
        );
        if let Some(room) = st.rooms.rooms.get_mut(&req.room) {
            room.seq += 1;
            let seq = room.seq;
            room.reads.insert(req.from.clone(), seq);
            room.last = Some(message.clone());
            room.active = id;
            // Trimmed with the events (`append_room_event`).
            room.messages.insert(id, (seq, message.clone()));
        }
        nonce.remember(&mut st, &message, req.nonce_ttl_secs);
        Ok(Some(SendOutcome {
            message,
            duplicate: false,
        }))
    }

    async fn room_history(
        &self,
        room_id: &str,
        before: Option<StreamId>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), EngineError> {
        let st = self.lock();
        let Some(room) = st.rooms.rooms.get(room_id) else {
            return Ok((Vec::new(), false));
        };
        let upper = before.unwrap_or(StreamId {
            ms: u64::MAX,
            seq: u64::MAX,
        });
        let mut newest: Vec<Message> = room
            .messages
            .range(..upper)
            .rev()
            .take(limit + 1)
            .map(|(_, (_, m))| m.clone())
            .collect();
        let more = newest.len() > limit;
        newest.truncate(limit);
        newest.reverse();
        Ok((newest, more))
    }

    async fn room_mark_read(
        &self,
        room_id: &str,
        user: &str,
        up_to: StreamId,
    ) -> Result<Option<String>, EngineError> {
        let mut st = self.lock();
        let Some(room) = st.rooms.rooms.get_mut(room_id) else {
            return Ok(None);
        };
        if !room.members.contains_key(user) {
            return Ok(None);
        }
        let Some((id, seq)) = room
            .messages
            .range(..=up_to)
            .next_back()
            .map(|(id, (seq, _))| (*id, *seq))
        else {
            return Ok(None);
        };
        if room.reads.get(user).is_some_and(|r| *r >= seq) {
            return Ok(None);
        }
        room.reads.insert(user.to_string(), seq);
        Ok(Some(id.to_string()))
    }

    async fn read_room(
        &self,
        room_id: &str,
        after: StreamId,
        count: usize,
    ) -> Result<Vec<RoomEvent>, EngineError> {
        self.faults.check(Op::ReadRoom)?;
        let st = self.lock();
        let Some(room) = st.rooms.rooms.get(room_id) else {
            return Ok(Vec::new());
        };
        let start = room.events.partition_point(|e| e.id <= after);
        Ok(room
            .events
            .iter()
            .skip(start)
            .take(count)
            .map(|e| RoomEvent::clone(e))
            .collect())
    }

    async fn room_head(&self, room_id: &str) -> Result<StreamId, EngineError> {
        self.faults.check(Op::RoomHead)?;
        Ok(self
            .lock()
            .rooms
            .rooms
            .get(room_id)
            .map_or(StreamId::ZERO, |r| r.head))
    }

    async fn subscribe_room(&self, room_id: &str) -> Result<(), EngineError> {
        self.faults.check(Op::SubscribeRoom)?;
        self.with_node(|_, rooms| {
            rooms.insert(room_id.to_string());
        });
        Ok(())
    }

    async fn unsubscribe_room(&self, room_id: &str) -> Result<(), EngineError> {
        self.with_node(|_, rooms| {
            rooms.remove(room_id);
        });
        Ok(())
    }
}
