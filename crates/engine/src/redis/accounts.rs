//! Users and sessions on Redis ([`Accounts`]).
//!
//! A user is the hash `chat:user:<id>` (`name`, `idx`: its directory member, `seen`);
//! a session is `chat:sess:<hash>` ([`secret_hash`]: never the secret itself) holding its creation time ([`CREATED_MARK`]), the
//! user id and the sign-in's `rooms` claim ([`session_value`]) with a sliding expiry, and `chat:usess:<id>` the set of a user's
//! sessions, for revoking them all.

use async_trait::async_trait;
use chat_protocol::User;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, Expiration, SetOptions};

use super::conn::{all_ok, map_err, strings, text};
use super::{keys, ttl, RedisEngine};
use crate::ids::{new_guest_id, new_session_token};
use crate::{Accounts, EngineError, Session};

/// Expired guests' directory entries removed per sweep (one sweep per new guest and
/// per reaping round): bounded work per call.
const GUEST_SWEEP: i64 = 100;

/// The value of a session key: the user id, then, only when the sign-in carried a
/// `rooms` claim, a space and the claim as a JSON array (`alice ["lobby"]`; an empty
/// claim is `alice []`, which may join no room). A bare user id (every session written
/// before the claim was stored) reads as no claim, as it meant then. User ids never
/// contain a space (refused here all the same, so a value always reads back as
/// written); JSON keeps any claim entry intact, valid room id or not.
fn session_value(user_id: &str, rooms: Option<&[String]>) -> Result<String, EngineError> {
    if user_id.is_empty() || user_id.contains(' ') {
        return Err(EngineError::Internal(format!(
            "cannot issue a session for user id {user_id:?}: empty or contains a space"
        )));
    }
    match rooms {
        None => Ok(user_id.to_string()),
        Some(rooms) => {
            let claim = serde_json::to_string(rooms)
                .map_err(|e| EngineError::Internal(format!("rooms claim not encodable: {e}")))?;
            Ok(format!("{user_id} {claim}"))
        }
    }
}

/// The name a session is stored under (its key and its member of the user's set):
/// the SHA-256 of its secret, in hex. Only the client holds the secret, so a Redis
/// reader or a backup cannot resume anyone's session; the secret has 244 random
/// bits, so a plain hash (no salt, no slow hash) is enough.
fn secret_hash(session: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let digest = Sha256::digest(session.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Starts a stored session value whose creation time (ms since the epoch) comes
/// next: `#1765000000000 alice ["lobby"]`. A user id never starts with `#`, so a value
/// without it is one written before sessions kept their creation time.
const CREATED_MARK: char = '#';

/// The creation time and the rest ([`session_value`]) of a stored session value;
/// `None` for a value without [`CREATED_MARK`] (or an unreadable time).
fn split_created(stored: &str) -> Option<(u64, &str)> {
    let (created, rest) = stored.strip_prefix(CREATED_MARK)?.split_once(' ')?;
    Some((created.parse().ok()?, rest))
}

/// Reads a [`session_value`]: the user id and the claim. `None` when the value is not
/// one (the claim part is not a JSON array of strings).
fn parse_session_value(value: &str) -> Option<(&str, Option<Vec<String>>)> {
    match value.split_once(' ') {
        None => Some((value, None)),
        Some((user_id, claim)) => {
            let rooms: Vec<String> = serde_json::from_str(claim).ok()?;
            Some((user_id, Some(rooms)))
        }
    }
}

impl RedisEngine {
    /// A guest signed in (or was created): their user hash lives
    /// `retention.guest_ttl_secs` more, their directory member is (re)indexed, and
    /// [`keys::GUESTS`] records when it expires. One pipeline; nothing when guests
    /// never expire.
    async fn touch_guest(&self, id: &str, member: &str) -> Result<(), EngineError> {
        let ttl_secs = self.core.retention.guest_ttl_secs;
        if ttl_secs == 0 {
            return Ok(());
        }
        let expires = crate::events::now_ms() + ttl_secs.saturating_mul(1000);
        let pipeline = self.core.pool.next_connected().pipeline();
        let _: () = pipeline
            .expire(keys::user(id), ttl(ttl_secs), None)
            .await
            .map_err(map_err)?;
        let _: () = pipeline
            .zadd(keys::NAMES, None, None, false, false, (0.0, member))
            .await
            .map_err(map_err)?;
        let _: () = pipeline
            .zadd(
                keys::GUESTS,
                None,
                None,
                false,
                false,
                (expires as f64, member),
            )
            .await
            .map_err(map_err)?;
        all_ok(pipeline.try_all::<Value>().await)?;
        Ok(())
    }

    /// Removes the directory members of up to [`GUEST_SWEEP`] guests whose time ran
    /// out (their user hash expired on its own; sessions expire by their own TTL).
    pub(crate) async fn sweep_guests(&self) -> Result<(), EngineError> {
        let now = crate::events::now_ms();
        let members: Vec<String> = self
            .core
            .cmd()
            .zrangebyscore(
                keys::GUESTS,
                "-inf",
                now as f64,
                false,
                Some((0, GUEST_SWEEP)),
            )
            .await
            .map_err(map_err)?;
        if members.is_empty() {
            return Ok(());
        }
        // Two keys in two slots: two commands (one pipeline).
        let pipeline = self.core.pool.next_connected().pipeline();
        let _: () = pipeline
            .zrem(keys::NAMES, members.clone())
            .await
            .map_err(map_err)?;
        let _: () = pipeline
            .zrem(keys::GUESTS, members)
            .await
            .map_err(map_err)?;
        all_ok(pipeline.try_all::<Value>().await)?;
        Ok(())
    }

    /// Records a new session in the user's sessions by creation time, drops those past
    /// the max age, and revokes the oldest beyond `max_sessions_per_user`: one
    /// pipeline, then one more only when some must go. Bounded work per sign-in,
    /// whatever the user did before.
    async fn track_session(
        &self,
        user_id: &str,
        hash: &str,
        created_ms: u64,
        ttl_secs: u64,
    ) -> Result<(), EngineError> {
        let times = keys::user_session_times(user_id);
        let retention = &self.core.retention;
        let max = retention.max_sessions_per_user;
        let max_age_ms = retention.session_max_age_secs.saturating_mul(1000);
        let pipeline = self.core.pool.next_connected().pipeline();
        let _: () = pipeline
            .zadd(&times, None, None, false, false, (created_ms as f64, hash))
            .await
            .map_err(map_err)?;
        if max_age_ms > 0 {
            // Created before this are past the max age: never resumed again.
            let oldest_alive = created_ms.saturating_sub(max_age_ms) as f64;
            let _: () = pipeline
                .zremrangebyscore(&times, f64::NEG_INFINITY, oldest_alive - 1.0)
                .await
                .map_err(map_err)?;
        }
        let _: () = pipeline
            .expire(
                &times,
                ttl(ttl_secs.max(retention.session_max_age_secs)),
                None,
            )
            .await
            .map_err(map_err)?;
        if max > 0 {
            // Everything but the newest `max`.
            let beyond = -(i64::try_from(max).unwrap_or(i64::MAX).saturating_add(1));
            let _: () = pipeline
                .zrange(&times, 0, beyond, None, false, None, false)
                .await
                .map_err(map_err)?;
        }
        let replies = all_ok(pipeline.try_all::<Value>().await)?;
        let over: Vec<String> = if max > 0 {
            replies.into_iter().last().map(strings).unwrap_or_default()
        } else {
            Vec::new()
        };
        if over.is_empty() {
            return Ok(());
        }
        // One DEL per key: on Redis Cluster the session keys live in different slots.
        let pipeline = self.core.pool.next_connected().pipeline();
        for old in &over {
            let _: () = pipeline.del(keys::session(old)).await.map_err(map_err)?;
        }
        let _: () = pipeline.zrem(&times, over).await.map_err(map_err)?;
        all_ok(pipeline.try_all::<Value>().await)?;
        Ok(())
    }

    /// Sets the user's name and keeps the directory in step. Returns whether the user
    /// existed. Two round trips (read the old index member, then write), each slot-local
    /// so it works on Redis Cluster too; concurrent renames of one user may leave a stale
    /// directory member, which `search` drops (its name no longer matches).
    async fn set_name(&self, id: &str, name: &str) -> Result<bool, EngineError> {
        let key = keys::user(id);
        let old: Vec<Option<String>> = self
            .core
            .cmd()
            .hmget(&key, vec!["name", "idx"])
            .await
            .map_err(map_err)?;
        let existed = old.first().is_some_and(Option::is_some);
        let old_member = old.get(1).cloned().flatten();
        let member = keys::name_member(id, name);
        let pipeline = self.core.pool.next_connected().pipeline();
        let _: () = pipeline
            .hset(&key, vec![("name", name), ("idx", member.as_str())])
            .await
            .map_err(map_err)?;
        if let Some(old) = old_member.filter(|m| *m != member) {
            let _: () = pipeline.zrem(keys::NAMES, old).await.map_err(map_err)?;
        }
        let _: () = pipeline
            .zadd(
                keys::NAMES,
                None,
                None,
                false,
                false,
                (0.0, member.as_str()),
            )
            .await
            .map_err(map_err)?;
        all_ok(pipeline.try_all::<Value>().await)?;
        Ok(existed)
    }
}

#[async_trait]
impl Accounts for RedisEngine {
    async fn get_user(&self, id: &str) -> Result<Option<User>, EngineError> {
        let name: Option<String> = self
            .core
            .cmd()
            .hget(keys::user(id), "name")
            .await
            .map_err(map_err)?;
        Ok(name.map(|name| User {
            id: id.to_string(),
            name,
        }))
    }

    async fn upsert_user(&self, id: &str, name: &str) -> Result<bool, EngineError> {
        self.set_name(id, name).await
    }

    async fn create_guest(&self, name: &str) -> Result<User, EngineError> {
        let id = new_guest_id();
        self.set_name(&id, name).await?;
        let _: i64 = self
            .core
            .cmd()
            .hset(keys::user(&id), ("guest", "1"))
            .await
            .map_err(map_err)?;
        self.touch_guest(&id, &keys::name_member(&id, name)).await?;
        self.sweep_guests().await?;
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
        let created_ms = crate::events::now_ms();
        let value = format!(
            "{CREATED_MARK}{created_ms} {}",
            session_value(user_id, rooms)?
        );
        let token = new_session_token();
        let hash = secret_hash(&token);
        let _: () = self
            .core
            .cmd()
            .set(
                keys::session(&hash),
                value,
                Some(Expiration::EX(ttl(ttl_secs))),
                None,
                false,
            )
            .await
            .map_err(map_err)?;
        self.track_session(user_id, &hash, created_ms, ttl_secs)
            .await?;
        Ok(token)
    }

    async fn resume_session(
        &self,
        session: &str,
        ttl_secs: u64,
    ) -> Result<Option<Session>, EngineError> {
        let hash = secret_hash(session);
        let key = keys::session(&hash);
        let getex = CustomCommand::new_static("GETEX", ClusterHash::FirstKey, false);
        let value: Value = self
            .core
            .cmd()
            .custom(
                getex,
                vec![key.clone(), "EX".into(), ttl(ttl_secs).to_string()],
            )
            .await
            .map_err(map_err)?;
        let (value, legacy) = match text(value) {
            Some(value) => (value, false),
            None => {
                // A session stored before secrets were hashed lives under its raw
                // secret: taken out of there (`GETDEL`, so the readable copy is gone)
                // and stored under its hash below. An unknown session costs one more
                // command for it.
                let getdel = CustomCommand::new_static("GETDEL", ClusterHash::FirstKey, false);
                let old: Value = self
                    .core
                    .cmd()
                    .custom(getdel, vec![keys::session(session)])
                    .await
                    .map_err(map_err)?;
                match text(old) {
                    Some(value) => (value, true),
                    None => return Ok(None),
                }
            }
        };
        let now = crate::events::now_ms();
        let (created, value, marked) = match split_created(&value) {
            Some((created, rest)) => (created, rest.to_string(), true),
            // A value written before sessions kept their creation time: treated as
            // created now (and marked so), not as expired, so an upgrade signs nobody
            // out; the mark makes the max age count from here, so such a session
            // cannot live on forever by being used.
            None => (now, value, false),
        };
        if legacy || !marked {
            // Once per old session. Under its hash it gets the expiry the resume
            // gives; an old value already under its hash keeps its own (`XX`: a
            // session revoked meanwhile is not brought back).
            let (expiry, only_if) = if legacy {
                (Expiration::EX(ttl(ttl_secs)), None)
            } else {
                (Expiration::KEEPTTL, Some(SetOptions::XX))
            };
            let _: Value = self
                .core
                .cmd()
                .set(
                    &key,
                    format!("{CREATED_MARK}{created} {value}"),
                    Some(expiry),
                    only_if,
                    false,
                )
                .await
                .map_err(map_err)?;
        }
        let max_age_ms = self
            .core
            .retention
            .session_max_age_secs
            .saturating_mul(1000);
        if max_age_ms > 0 && now.saturating_sub(created) >= max_age_ms {
            let _: i64 = self.core.cmd().del(&key).await.map_err(map_err)?;
            return Ok(None);
        }
        let Some((uid, rooms)) = parse_session_value(&value) else {
            // Fail closed: an unreadable claim must not turn into "any room".
            tracing::warn!("session value unreadable: the session is treated as unknown");
            return Ok(None);
        };
        let uid = uid.to_string();
        let times = keys::user_session_times(&uid);
        let cmd = self.core.cmd();
        let keep = ttl(ttl_secs.max(self.core.retention.session_max_age_secs));
        let (user, _) = tokio::join!(
            cmd.hmget::<Vec<Option<String>>, _, _>(keys::user(&uid), vec!["name", "guest"]),
            cmd.expire::<i64, _>(&times, keep, None)
        );
        let user = user.map_err(map_err)?;
        if legacy || !marked {
            // A session of an earlier version: listed among the user's sessions by
            // creation time from now on (the old plain set forgets it).
            let pipeline = self.core.pool.next_connected().pipeline();
            let _: () = pipeline
                .srem(keys::user_sessions(&uid), vec![session, hash.as_str()])
                .await
                .map_err(map_err)?;
            let _: () = pipeline
                .zadd(
                    &times,
                    None,
                    None,
                    false,
                    false,
                    (created as f64, hash.as_str()),
                )
                .await
                .map_err(map_err)?;
            all_ok(pipeline.try_all::<Value>().await)?;
        }
        let Some(name) = user.first().cloned().flatten() else {
            return Ok(None);
        };
        if user.get(1).is_some_and(Option::is_some) {
            // A guest's sign-in slides their expiry.
            self.touch_guest(&uid, &keys::name_member(&uid, &name))
                .await?;
        }
        Ok(Some(Session {
            user: User { id: uid, name },
            rooms,
        }))
    }

    async fn revoke_session(&self, session: &str) -> Result<(), EngineError> {
        let hash = secret_hash(session);
        // GETDEL: the key is gone whatever its value, and the value names the set to
        // drop it from (another slot on Redis Cluster: a second command).
        let getdel = CustomCommand::new_static("GETDEL", ClusterHash::FirstKey, false);
        let value: Value = self
            .core
            .cmd()
            .custom(getdel, vec![keys::session(&hash)])
            .await
            .map_err(map_err)?;
        let value = text(value);
        let rest = value
            .as_deref()
            .map(|v| split_created(v).map_or(v, |(_, rest)| rest));
        if let Some((uid, _)) = rest.and_then(parse_session_value) {
            let pipeline = self.core.pool.next_connected().pipeline();
            let _: () = pipeline
                .zrem(keys::user_session_times(uid), hash.as_str())
                .await
                .map_err(map_err)?;
            let _: () = pipeline
                .srem(keys::user_sessions(uid), hash.as_str())
                .await
                .map_err(map_err)?;
            all_ok(pipeline.try_all::<Value>().await)?;
        }
        Ok(())
    }

    async fn revoke_sessions(&self, user_id: &str) -> Result<(), EngineError> {
        // The sessions by creation time, and those an earlier version listed in a plain
        // set (until it expires).
        let set = keys::user_sessions(user_id);
        let times = keys::user_session_times(user_id);
        let mut tokens: Vec<String> = self.core.cmd().smembers(&set).await.map_err(map_err)?;
        let listed: Vec<String> = self
            .core
            .cmd()
            .zrange(&times, 0, -1, None, false, None, false)
            .await
            .map_err(map_err)?;
        tokens.extend(listed);
        if !tokens.is_empty() {
            // One DEL per key: on Redis Cluster the session keys live in different slots.
            let pipeline = self.core.pool.next().pipeline();
            for token in &tokens {
                let _: () = pipeline.del(keys::session(token)).await.map_err(map_err)?;
            }
            let _: Vec<Value> = pipeline.all().await.map_err(map_err)?;
        }
        // Two slots on Redis Cluster: one DEL each.
        let pipeline = self.core.pool.next_connected().pipeline();
        let _: () = pipeline.del(set).await.map_err(map_err)?;
        let _: () = pipeline.del(times).await.map_err(map_err)?;
        all_ok(pipeline.try_all::<Value>().await)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_values_round_trip_and_old_values_read_as_no_claim() {
        let lobby = ["lobby".to_string(), "*".to_string()];
        for rooms in [None, Some(&[][..]), Some(&lobby[..])] {
            let value = session_value("g-1.a@b", rooms).unwrap();
            let (user, read) = parse_session_value(&value).unwrap();
            assert_eq!((user, read.as_deref()), ("g-1.a@b", rooms));
        }
        assert_eq!(session_value("alice", None).unwrap(), "alice");
        assert_eq!(session_value("alice", Some(&[])).unwrap(), "alice []");
        assert_eq!(parse_session_value("alice"), Some(("alice", None)));
        assert_eq!(parse_session_value("alice {oops"), None);
        assert_eq!(parse_session_value("alice [1]"), None);
        assert!(session_value("al ice", None).is_err());
        assert!(session_value("", None).is_err());
        assert_eq!(split_created("#17 alice []"), Some((17, "alice []")));
        assert_eq!(split_created("alice []"), None);
        assert_eq!(split_created("#x alice"), None);
    }
}
