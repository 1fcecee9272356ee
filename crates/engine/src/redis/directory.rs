//! The user directory on Redis ([`Directory`]): the sorted set [`keys::NAMES`] of
//! `<lower-cased name>\0<id>`, searched with `ZRANGEBYLEX`; each user hash remembers
//! its member (`idx`) so a rename removes the old one (see [`super::accounts`]).

use async_trait::async_trait;
use bytes::Bytes;
use chat_protocol::User;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};

use super::conn::{all_ok, map_err, text};
use super::{keys, RedisEngine};
use crate::{Directory, EngineError};

#[async_trait]
impl Directory for RedisEngine {
    async fn search_users(&self, prefix: &str, limit: usize) -> Result<Vec<User>, EngineError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lower = prefix.to_lowercase();
        let (min, max) = if lower.is_empty() {
            (Bytes::from_static(b"-"), Bytes::from_static(b"+"))
        } else {
            let mut min = b"[".to_vec();
            min.extend_from_slice(lower.as_bytes());
            let mut max = min.clone();
            // No UTF-8 byte is 0xff: every member starting with the prefix sorts below.
            max.push(0xff);
            (Bytes::from(min), Bytes::from(max))
        };
        // Stale members (see `set_name`) are skipped, so ask for a few more.
        let want = limit + limit / 4 + 4;
        let cmd = CustomCommand::new_static("ZRANGEBYLEX", ClusterHash::FirstKey, false);
        let members: Vec<String> = self
            .core
            .cmd()
            .custom(
                cmd,
                vec![
                    Value::from(keys::NAMES),
                    Value::Bytes(min),
                    Value::Bytes(max),
                    Value::from("LIMIT"),
                    Value::from(0),
                    Value::from(want as i64),
                ],
            )
            .await
            .map_err(map_err)?;
        let ids: Vec<(String, String)> = members
            .iter()
            .filter_map(|m| m.rsplit_once('\0'))
            .map(|(name, id)| (name.to_string(), id.to_string()))
            .collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let pipeline = self.core.pool.next_connected().pipeline();
        for (_, id) in &ids {
            let _: () = pipeline
                .hget(keys::user(id), "name")
                .await
                .map_err(map_err)?;
        }
        let names = all_ok(pipeline.try_all::<Value>().await)?;
        Ok(ids
            .into_iter()
            .zip(names)
            .filter_map(|((indexed, id), name)| {
                let name = text(name)?;
                (name.to_lowercase() == indexed).then_some(User { id, name })
            })
            .take(limit)
            .collect())
    }
}
