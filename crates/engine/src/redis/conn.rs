//! Connecting to Redis with fred, mapping its errors, and reading its replies.
//!
//! Every client the engine builds (the command pool and the subscribers) comes from
//! [`builder`]: a `ReconnectPolicy` that retries forever with a capped backoff (without
//! one a fred client never reconnects), a connection and command timeout of
//! `command_timeout_ms`, and `fail_fast` so the first connect reports a dead Redis at
//! once. Commands run with [`Options`] that fail fast while the connection is down, so
//! a caller gets [`EngineError::Unavailable`] promptly instead of a queued command.

use std::time::Duration;

use bytes::Bytes;
use fred::error::{Error as FredError, ErrorKind};
use fred::prelude::*;
use fred::types::config::Options;

use crate::EngineError;

/// Capacity of fred's broadcast channels (pub/sub messages, reconnect events). The
/// default, 32, makes a listener lag at the first burst.
pub(crate) const BROADCAST_CAPACITY: usize = 16 * 1024;

/// A fred builder for `url` with the engine's timeouts and reconnect policy.
pub(crate) fn builder(url: &str, timeout: Duration) -> Result<Builder, EngineError> {
    let mut config = Config::from_url(url)
        .map_err(|e| EngineError::Internal(format!("bad redis url {url:?}: {e}")))?;
    config.fail_fast = true;
    let mut builder = Builder::from_config(config);
    builder
        .with_connection_config(|c| {
            c.connection_timeout = timeout;
            c.internal_command_timeout = timeout;
            c.max_command_attempts = 2;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = timeout;
            p.broadcast_channel_capacity = BROADCAST_CAPACITY;
        })
        // max_attempts 0 = forever; 50 ms doubling up to 1 s.
        .set_policy(ReconnectPolicy::new_exponential(0, 50, 1000, 2));
    Ok(builder)
}

/// Options for an ordinary command: bounded time, fail at once while disconnected,
/// at most `attempts` writes (a command in flight when the connection drops is
/// written again once, unless `attempts` is 1).
pub(crate) fn options(timeout: Duration, attempts: u32) -> Options {
    Options {
        timeout: Some(timeout),
        fail_fast: true,
        max_attempts: Some(attempts),
        ..Default::default()
    }
}

/// Maps a fred error: anything that means "Redis is not reachable right now" is
/// `Unavailable`, everything else `Internal`.
pub(crate) fn map_err(e: FredError) -> EngineError {
    if is_unavailable(&e) {
        EngineError::Unavailable(e.to_string())
    } else {
        EngineError::Internal(e.to_string())
    }
}

fn is_unavailable(e: &FredError) -> bool {
    match e.kind() {
        ErrorKind::IO
        | ErrorKind::Timeout
        | ErrorKind::Canceled
        | ErrorKind::Cluster
        | ErrorKind::Backpressure
        | ErrorKind::Routing => true,
        _ => {
            let d = e.details();
            [
                "CLUSTERDOWN",
                "LOADING",
                "TRYAGAIN",
                "MASTERDOWN",
                "Too many failed write attempts",
                "Connection closed",
            ]
            .iter()
            .any(|p| d.contains(p))
        }
    }
}

/// Whether the error says the function library is missing (a restart lost it).
pub(crate) fn is_function_missing(e: &FredError) -> bool {
    e.details().contains("Function not found")
}

/// A bulk string reply as text.
pub(crate) fn text(v: Value) -> Option<String> {
    match v {
        Value::Null => None,
        other => other.into_string(),
    }
}

/// One stream entry: its id and its field/value pairs.
pub(crate) struct Entry {
    pub id: String,
    pub fields: Vec<(String, Bytes)>,
}

impl Entry {
    /// The value of a field as bytes.
    pub fn bytes(&self, name: &str) -> Option<&Bytes> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The value of a field as text (empty when missing or not UTF-8).
    pub fn text(&self, name: &str) -> String {
        self.bytes(name)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default()
            .to_string()
    }
}

/// Parses an `XRANGE` / `XREVRANGE` reply.
pub(crate) fn entries(v: Value) -> Result<Vec<Entry>, EngineError> {
    let bad = || EngineError::Internal("unexpected stream reply from redis".into());
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        _ => return Err(bad()),
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(mut parts) = item else {
            return Err(bad());
        };
        if parts.len() != 2 {
            return Err(bad());
        }
        let raw_fields = parts.pop().ok_or_else(bad)?;
        let id = text(parts.pop().ok_or_else(bad)?).ok_or_else(bad)?;
        let mut fields = Vec::new();
        match raw_fields {
            Value::Array(flat) => {
                let mut it = flat.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    fields.push((text(k).ok_or_else(bad)?, v.into_bytes().unwrap_or_default()));
                }
            }
            Value::Map(map) => {
                for (k, v) in map.inner() {
                    let k = k.as_str().map(str::to_string).ok_or_else(bad)?;
                    fields.push((k, v.into_bytes().unwrap_or_default()));
                }
            }
            Value::Null => {}
            _ => return Err(bad()),
        }
        out.push(Entry { id, fields });
    }
    Ok(out)
}
