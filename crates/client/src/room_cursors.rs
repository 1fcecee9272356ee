//! Per-room cursors (protocol 1.1): for each room, the last room event id the caller
//! consumed — a room `message` or a `member` event, which share the room's sequence.
//! They are sent back as `hello.rooms` on reconnect, and the server replays every
//! room event after them.
//!
//! Each cursor follows the same rules as the 1:1 cursor: it moves only forward
//! (ids compared as stream ids), and only when the caller consumes an event. A room
//! the server could not recover, or that the user is no longer a member of, loses
//! its cursor at `welcome`: the next room event starts it again. Keeping a stale id
//! instead would pin the room: an id beyond the room's newest event (a store that
//! was reset) would never be passed, and every later resume would fail again.

use std::collections::BTreeMap;

use chat_protocol::rooms::RoomsRecovered;

use crate::advance_cursor;

/// Room id → the last room event id consumed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomCursors {
    /// The cursors, in room id order (the order `hello.rooms` lists them in).
    cursors: BTreeMap<String, String>,
}

impl RoomCursors {
    /// Cursors kept from an earlier connection ([`crate::ResumeState::rooms`]).
    pub fn from_map(cursors: BTreeMap<String, String>) -> RoomCursors {
        RoomCursors { cursors }
    }

    /// The cursors as a map, to keep in a [`crate::ResumeState`].
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.cursors.clone()
    }

    /// The last event id consumed in `room`.
    pub fn get(&self, room: &str) -> Option<&str> {
        self.cursors.get(room).map(String::as_str)
    }

    /// Moves `room`'s cursor forward to `id` (never backwards; a room without one
    /// starts at `id`).
    pub fn advance(&mut self, room: &str, id: &str) {
        match self.cursors.get_mut(room) {
            Some(current) => {
                let mut cursor = Some(std::mem::take(current));
                advance_cursor(&mut cursor, id);
                *current = cursor.unwrap_or_default();
            }
            None => {
                self.cursors.insert(room.to_string(), id.to_string());
            }
        }
    }

    /// Forgets `room` (after leaving it): it is no longer listed in `hello.rooms`.
    pub fn remove(&mut self, room: &str) {
        self.cursors.remove(room);
    }

    /// `hello.rooms`: `None` when there is no room to recover, so a 1.0 `hello` stays
    /// as it was.
    pub fn for_hello(&self) -> Option<BTreeMap<String, String>> {
        (!self.cursors.is_empty()).then(|| self.cursors.clone())
    }

    /// Keeps only the rooms `welcome.rooms` reports recovered: their replay follows
    /// and moves them on. The others start live, so their cursors are dropped (see
    /// the module docs).
    pub fn after_welcome(&mut self, report: &RoomsRecovered) {
        self.cursors
            .retain(|room, _| report.get(room).is_some_and(|r| r.recovered));
    }

    /// Number of rooms with a cursor.
    pub fn len(&self) -> usize {
        self.cursors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cursors.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use chat_protocol::rooms::RoomRecovery;

    use super::*;

    #[test]
    fn cursors_only_move_forward_per_room() {
        let mut c = RoomCursors::default();
        assert_eq!(c.for_hello(), None, "no rooms: no hello.rooms");
        c.advance("lobby", "10-1");
        c.advance("lobby", "9-5");
        c.advance("team", "3-0");
        assert_eq!(c.get("lobby"), Some("10-1"));
        c.advance("lobby", "10-2");
        assert_eq!(c.get("lobby"), Some("10-2"));
        assert_eq!(c.get("team"), Some("3-0"));
        let hello = c.for_hello().expect("hello.rooms");
        assert_eq!(hello.len(), 2);
        assert_eq!(hello["lobby"], "10-2");
        c.remove("lobby");
        assert_eq!(c.get("lobby"), None);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn welcome_keeps_only_recovered_rooms() {
        let mut c = RoomCursors::from_map(BTreeMap::from([
            ("a".to_string(), "5-0".to_string()),
            ("b".to_string(), "6-0".to_string()),
            ("gone".to_string(), "7-0".to_string()),
        ]));
        let report = RoomsRecovered::from([
            ("a".to_string(), RoomRecovery { recovered: true }),
            ("b".to_string(), RoomRecovery { recovered: false }),
        ]);
        c.after_welcome(&report);
        assert_eq!(c.get("a"), Some("5-0"), "recovered: the replay moves it on");
        assert_eq!(c.get("b"), None, "not recovered: starts again live");
        assert_eq!(c.get("gone"), None, "not a member any more");
        // A dropped room starts again at its next event, even one below the old id.
        c.advance("b", "2-0");
        assert_eq!(c.get("b"), Some("2-0"));
        c.after_welcome(&RoomsRecovered::new());
        assert!(c.is_empty());
    }
}
