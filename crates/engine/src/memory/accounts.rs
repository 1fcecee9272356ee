//! The memory engine's users and sessions ([`Accounts`]).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chat_protocol::User;

use super::{MemoryEngine, State};
use crate::ids::{new_guest_id, new_session_token};
use crate::{Accounts, EngineError, Session};

/// A session this node issued.
pub(super) struct StoredSession {
    /// The user it signs in.
    pub(super) user: String,
    /// When it expires unless resumed before (sliding).
    pub(super) expires: Instant,
    /// The JWT `rooms` claim it was created with, returned on every resume.
    pub(super) rooms: Option<Vec<String>>,
    /// When it was created: no resume once `session_max_age_secs` old.
    pub(super) created: Instant,
}

impl State {
    /// Creates or renames a user, keeping the directory index in step. Returns
    /// whether the user existed.
    fn set_name(&mut self, id: &str, name: &str) -> bool {
        let old = self.users.insert(id.to_string(), name.to_string());
        if let Some(old) = &old {
            self.names.remove(&(old.to_lowercase(), id.to_string()));
        }
        self.names.insert((name.to_lowercase(), id.to_string()));
        old.is_some()
    }

    /// Removes the guests whose time ran out: their record, directory entry and
    /// sessions.
    pub(super) fn expire_guests(&mut self) {
        let now = Instant::now();
        while let Some((at, id)) = self.guest_expiry.first().cloned() {
            if at > now {
                break;
            }
            self.guest_expiry.pop_first();
            self.guests.remove(&id);
            if let Some(name) = self.users.remove(&id) {
                self.names.remove(&(name.to_lowercase(), id.clone()));
            }
            for s in self.user_sessions.remove(&id).unwrap_or_default() {
                self.sessions.remove(&s);
            }
        }
    }

    /// A guest signed in: they live `ttl` more. Nothing for other users.
    fn touch_guest(&mut self, id: &str, ttl: Duration) {
        if let Some(at) = self.guests.get_mut(id) {
            self.guest_expiry.remove(&(*at, id.to_string()));
            *at = Instant::now() + ttl;
            self.guest_expiry.insert((*at, id.to_string()));
        }
    }

    /// Revokes the user's oldest sessions beyond `max` (at most `max` + 1 are
    /// looked at: the set never holds more).
    fn cap_user_sessions(&mut self, user: &str, max: usize) {
        let Some(set) = self.user_sessions.get_mut(user) else {
            return;
        };
        if set.len() <= max {
            return;
        }
        let sessions = &mut self.sessions;
        let mut by_age: Vec<(Instant, String)> = set
            .iter()
            .filter_map(|s| Some((sessions.get(s)?.created, s.clone())))
            .collect();
        by_age.sort();
        for (_, old) in by_age.iter().take(set.len() - max) {
            set.remove(old);
            sessions.remove(old);
        }
    }

    /// Drops the user's expired sessions from their set.
    fn prune_user_sessions(&mut self, user: &str) {
        let now = Instant::now();
        let Some(set) = self.user_sessions.get_mut(user) else {
            return;
        };
        let sessions = &mut self.sessions;
        set.retain(|s| match sessions.get(s) {
            Some(session) if session.expires > now => true,
            _ => {
                sessions.remove(s);
                false
            }
        });
    }
}

#[async_trait]
impl Accounts for MemoryEngine {
    async fn get_user(&self, id: &str) -> Result<Option<User>, EngineError> {
        let mut st = self.lock();
        st.expire_guests();
        Ok(st.users.get(id).map(|name| User {
            id: id.to_string(),
            name: name.clone(),
        }))
    }

    async fn upsert_user(&self, id: &str, name: &str) -> Result<bool, EngineError> {
        Ok(self.lock().set_name(id, name))
    }

    async fn create_guest(&self, name: &str) -> Result<User, EngineError> {
        let id = new_guest_id();
        let mut st = self.lock();
        st.expire_guests();
        st.set_name(&id, name);
        if self.retention.guest_ttl_secs > 0 {
            let at = Instant::now() + Duration::from_secs(self.retention.guest_ttl_secs);
            st.guests.insert(id.clone(), at);
            st.guest_expiry.insert((at, id.clone()));
        }
        Ok(User {
            id,
            name: name.to_string(),
        })
    }

    async fn create_session(
        &self,
        user_id: &str,
        rooms: Option<&[String]>,
        ttl_secs: u64,
    ) -> Result<String, EngineError> {
        let session = new_session_token();
        let mut st = self.lock();
        st.prune();
        st.expire_guests();
        st.prune_user_sessions(user_id);
        st.touch_guest(user_id, Duration::from_secs(self.retention.guest_ttl_secs));
        st.sessions.insert(
            session.clone(),
            StoredSession {
                user: user_id.to_string(),
                expires: Instant::now() + Duration::from_secs(ttl_secs),
                rooms: rooms.map(<[String]>::to_vec),
                created: Instant::now(),
            },
        );
        st.user_sessions
            .entry(user_id.to_string())
            .or_default()
            .insert(session.clone());
        let max = usize::try_from(self.retention.max_sessions_per_user).unwrap_or(usize::MAX);
        if max > 0 {
            st.cap_user_sessions(user_id, max);
        }
        Ok(session)
    }

    async fn resume_session(
        &self,
        session: &str,
        ttl_secs: u64,
    ) -> Result<Option<Session>, EngineError> {
        let mut st = self.lock();
        let now = Instant::now();
        let max_age = self.retention.session_max_age_secs;
        let too_old =
            |s: &StoredSession| max_age > 0 && now >= s.created + Duration::from_secs(max_age);
        let (uid, rooms) = match st.sessions.get_mut(session) {
            Some(stored) if stored.expires > now && !too_old(stored) => {
                stored.expires = now + Duration::from_secs(ttl_secs);
                (stored.user.clone(), stored.rooms.clone())
            }
            _ => return Ok(None),
        };
        st.expire_guests();
        st.touch_guest(&uid, Duration::from_secs(self.retention.guest_ttl_secs));
        Ok(st.users.get(&uid).map(|name| Session {
            user: User {
                id: uid.clone(),
                name: name.clone(),
            },
            rooms,
        }))
    }

    async fn revoke_session(&self, session: &str) -> Result<(), EngineError> {
        let mut st = self.lock();
        if let Some(stored) = st.sessions.remove(session) {
            if let Some(set) = st.user_sessions.get_mut(&stored.user) {
                set.remove(session);
            }
        }
        Ok(())
    }

    async fn revoke_sessions(&self, user_id: &str) -> Result<(), EngineError> {
        let mut st = self.lock();
        if let Some(set) = st.user_sessions.remove(user_id) {
            for s in set {
                st.sessions.remove(&s);
            }
        }
        Ok(())
    }
}
