//! The memory engine's directory ([`Directory`]): an ordered set of
//! (lower-cased name, id), kept in step by `set_name` (see [`super::accounts`]).

use async_trait::async_trait;
use chat_protocol::User;

use super::{MemoryEngine, State};
use crate::{Directory, EngineError};

impl State {
    fn search(&self, prefix: &str, limit: usize) -> Vec<User> {
        let lower = prefix.to_lowercase();
        self.names
            .range((lower.clone(), String::new())..)
            .take_while(|(name, _)| name.starts_with(&lower))
            .take(limit)
            .map(|(_, id)| User {
                id: id.clone(),
                name: self.users.get(id).cloned().unwrap_or_default(),
            })
            .collect()
    }
}

#[async_trait]
impl Directory for MemoryEngine {
    async fn search_users(&self, prefix: &str, limit: usize) -> Result<Vec<User>, EngineError> {
        let mut st = self.lock();
        st.expire_guests();
        Ok(st.search(prefix, limit))
    }
}
