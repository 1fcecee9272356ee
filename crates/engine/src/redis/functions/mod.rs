//! The `chat` Redis Function library and how the engine calls it: one child module
//! per Lua file, holding its functions' names, keys, arguments and reply parsing.
//!
//! - [`send`] — `scripts/send.lua`: 1:1 messages (`chat_send` on one Redis,
//!   `chat_conv_append` and `chat_inbox_append` on a cluster) and clears.
//! - [`receipts`] — `scripts/receipts.lua`: read markers.
//! - [`presence`] — `scripts/presence.lua`: connection counts, heartbeats, reaping.
//! - [`rooms`] — `scripts/rooms.lua`: room joins, leaves, sends and reads.
//!
//! `scripts/inbox.lua` registers nothing: it holds the inbox helpers the others call
//! (appends and their publish), so it comes first. The files are concatenated in that
//! order under one `#!lua name=chat` header ([`LIBRARY`]) and loaded with
//! `FUNCTION LOAD REPLACE` when the engine connects, and again whenever a call fails
//! with "Function not found" (a restarted Redis without persistence has lost it).
//! Functions, unlike the `EVALSHA` script cache, survive restarts with persistence
//! and failovers.
//!
//! Every registered function opens by naming its `KEYS` and `ARGV` as Lua locals; each
//! module lists the same names in the same order (`SIGNATURES`), and the tests here
//! hold the two sides together. A module never sends anything itself: the callers
//! (`single.rs`, `batch.rs`, `cluster.rs`, `messages.rs`, `rooms.rs`) make the calls.

pub(crate) mod presence;
pub(crate) mod receipts;
pub(crate) mod rooms;
pub(crate) mod send;

use fred::prelude::*;

use super::conn::map_err;
use crate::{EngineError, Retention};

/// The Lua source of the library.
pub(crate) const LIBRARY: &str = concat!(
    "#!lua name=chat\n",
    include_str!("../scripts/inbox.lua"),
    "\n",
    include_str!("../scripts/send.lua"),
    "\n",
    include_str!("../scripts/receipts.lua"),
    "\n",
    include_str!("../scripts/presence.lua"),
    "\n",
    include_str!("../scripts/rooms.lua"),
);

/// Loads (or replaces) the library; on Redis Cluster on every primary (fred's
/// `FUNCTION LOAD` to each primary node).
///
/// A Redis that kept its data from before the library was one (`chat` and
/// `chat_presence`) refuses the load because `chat_presence`'s functions already exist:
/// that library is then deleted and the load retried.
pub(crate) async fn load<C: FunctionInterface + Sync>(client: &C) -> Result<(), EngineError> {
    match client
        .function_load_cluster::<Value, _>(true, LIBRARY)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if super::conn::is_function_name_taken(&e) => {
            let _ = client.function_delete_cluster(OLD_LIBRARY).await;
            let _: Value = client
                .function_load_cluster(true, LIBRARY)
                .await
                .map_err(map_err)?;
            Ok(())
        }
        Err(e) => Err(map_err(e)),
    }
}

/// The presence library of earlier versions, now part of `chat`.
const OLD_LIBRARY: &str = "chat_presence";

/// The history options every send passes (1:1 and room events alike):
/// `history_max_len`, `history_max_age_secs`, `now_ms` (this node's clock, for the
/// age limit).
pub(crate) fn history_args(retention: &Retention, now_ms: u64) -> [String; 3] {
    [
        retention.history_max_len.to_string(),
        retention.history_max_age_secs.to_string(),
        now_ms.to_string(),
    ]
}

/// A registered function's `KEYS` and `ARGV` by the names its Lua opens them with, in
/// order, space-separated (as the Lua's `local a, b = …` lists them). `each_keys` /
/// `each_args`: those repeated per message after the fixed ones (`chat_send`'s batch;
/// its Lua names them inside its loop).
#[cfg(test)]
pub(crate) struct Signature {
    pub name: &'static str,
    pub keys: &'static str,
    pub args: &'static str,
    pub each_keys: &'static str,
    pub each_args: &'static str,
}

#[cfg(test)]
impl Signature {
    /// A function with fixed keys and arguments.
    pub(crate) const fn fixed(name: &'static str, keys: &'static str, args: &'static str) -> Self {
        Signature {
            name,
            keys,
            args,
            each_keys: "",
            each_args: "",
        }
    }

    /// The value a call passes for the fixed argument `name`.
    pub(crate) fn arg<'a>(&self, args: &'a [String], name: &str) -> &'a str {
        &args[self.position(self.args, name)]
    }

    /// The value a call passes for the fixed key `name`.
    pub(crate) fn key<'a>(&self, keys: &'a [String], name: &str) -> &'a str {
        &keys[self.position(self.keys, name)]
    }

    /// The value a call passes for message `message`'s argument `name`.
    pub(crate) fn each_arg<'a>(&self, args: &'a [String], message: usize, name: &str) -> &'a str {
        let (fixed, each) = (count(self.args), count(self.each_args));
        &args[fixed + message * each + self.position(self.each_args, name)]
    }

    /// The value a call passes for message `message`'s key `name`.
    pub(crate) fn each_key<'a>(&self, keys: &'a [String], message: usize, name: &str) -> &'a str {
        let (fixed, each) = (count(self.keys), count(self.each_keys));
        &keys[fixed + message * each + self.position(self.each_keys, name)]
    }

    /// Panics unless a call for `messages` messages has as many keys and arguments as
    /// the Lua names.
    pub(crate) fn check_call(&self, keys: &[String], args: &[String], messages: usize) {
        let keys_named = count(self.keys) + messages * count(self.each_keys);
        let args_named = count(self.args) + messages * count(self.each_args);
        assert_eq!(keys.len(), keys_named, "{}: keys", self.name);
        assert_eq!(args.len(), args_named, "{}: args", self.name);
    }

    fn position(&self, names: &str, name: &str) -> usize {
        names
            .split_whitespace()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{} names no {name}", self.name))
    }
}

#[cfg(test)]
fn count(names: &str) -> usize {
    names.split_whitespace().count()
}

#[cfg(test)]
mod bench;
#[cfg(test)]
mod tests;
