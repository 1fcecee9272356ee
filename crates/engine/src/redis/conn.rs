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

use crate::{EngineError, WriteRefusal};

/// Capacity of fred's broadcast channels (pub/sub messages, reconnect events). The
/// default, 32, makes a listener lag at the first burst.
pub(crate) const BROADCAST_CAPACITY: usize = 16 * 1024;

/// How the engine reaches Redis, from the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// `redis://` (or `rediss://`): one Redis.
    Single,
    /// `redis-cluster://`: a Redis Cluster.
    Cluster,
    /// `redis-sentinel://`: the primary that Sentinel names.
    Sentinel,
}

/// Rewrites the comma form `scheme://[auth@]h1:p1,h2:p2,…[/db][?query]` into fred's
/// `scheme://[auth@]h1:p1[/db]?node=h2:p2&…[&query]`; any other URL is returned as is.
pub fn normalize_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (auth, hosts) = match authority.rsplit_once('@') {
        Some((auth, hosts)) => (format!("{auth}@"), hosts),
        None => (String::new(), authority),
    };
    let mut hosts = hosts.split(',').filter(|h| !h.is_empty());
    let Some(first) = hosts.next() else {
        return url.to_string();
    };
    let others: Vec<String> = hosts.map(|h| format!("node={h}")).collect();
    if others.is_empty() {
        return url.to_string();
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let mut out = format!("{scheme}://{auth}{first}{path}?{}", others.join("&"));
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        out.push('&');
        out.push_str(query);
    }
    out
}

/// Parses a Redis URL (the forms in [`normalize_url`] and fred's) and tells its mode.
pub fn parse_url(url: &str) -> Result<(Config, RedisMode), EngineError> {
    let normalized = normalize_url(url);
    let config = Config::from_url(&normalized)
        .map_err(|e| EngineError::Internal(format!("bad redis url {url:?}: {e}")))?;
    let mode = if config.server.is_clustered() {
        RedisMode::Cluster
    } else if config.server.is_sentinel() {
        RedisMode::Sentinel
    } else {
        RedisMode::Single
    };
    Ok((config, mode))
}

/// A fred builder for `url` with the engine's timeouts and reconnect policy.
pub(crate) fn builder(url: &str, timeout: Duration) -> Result<Builder, EngineError> {
    let (mut config, _) = parse_url(url)?;
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

/// Maps a fred error, once, to the facts callers act on: a write Redis refused
/// ([`write_refusal`]) is `Refused` (it did not run), anything that means "Redis is
/// not reachable right now" is `Unavailable` (it may have run), everything else
/// `Internal`. Redis reports errors as text, so this is the one place that reads it.
pub(crate) fn map_err(e: FredError) -> EngineError {
    if let Some(refusal) = write_refusal(&e) {
        EngineError::Refused {
            refusal,
            reason: e.to_string(),
        }
    } else if is_unavailable(&e) {
        EngineError::Unavailable(e.to_string())
    } else {
        EngineError::Internal(e.to_string())
    }
}

/// The error replies with which a healthy Redis refuses writes for a while: out of
/// memory (`OOM`, with `maxmemory` and a `noeviction` policy), a failed background
/// save (`MISCONF`), too few replicas (`NOREPLICAS`), a replica (`READONLY`), or a
/// write pause (`NOWRITE`... on some versions). The code starts the reply, or follows
/// the prefix Redis puts before an error raised inside a function.
fn write_refusal(e: &FredError) -> Option<WriteRefusal> {
    let d = e.details();
    WriteRefusal::CODES.iter().find_map(|&(code, refusal)| {
        let found = d.starts_with(code)
            || d.contains(&format!(" {code} "))
            || d.contains(&format!("-{code} "))
            || d.contains(&format!(": {code}"));
        found.then_some(refusal)
    })
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
                // A failover in progress: the old primary became a replica.
                "READONLY",
                "Too many failed write attempts",
                "Connection closed",
                // No connection to the primary while Sentinel/Cluster re-route.
                "Failed to route command",
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

/// Whether a `FUNCTION LOAD` was refused because another library already registers
/// one of its function names.
pub(crate) fn is_function_name_taken(e: &FredError) -> bool {
    e.details().contains("already exists")
}

/// A bulk string reply as text.
pub(crate) fn text(v: Value) -> Option<String> {
    match v {
        Value::Null => None,
        other => other.into_string(),
    }
}

/// The results of a pipeline, or the first error.
pub(crate) fn all_ok(results: Vec<Result<Value, Error>>) -> Result<Vec<Value>, EngineError> {
    results.into_iter().map(|r| r.map_err(map_err)).collect()
}

/// An integer reply or a numeric string; 0 when missing.
pub(crate) fn number(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// An array reply of strings (an empty or missing one: none).
pub(crate) fn strings(v: Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.into_iter().filter_map(text).collect(),
        _ => Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_refusals_are_typed() {
        for (reply, expected) in [
            (
                "OOM command not allowed when used memory > 'maxmemory'.",
                WriteRefusal::OutOfMemory,
            ),
            (
                "MISCONF Redis is configured to save RDB snapshots, but it's currently unable",
                WriteRefusal::PersistenceFailing,
            ),
            (
                "NOREPLICAS Not enough good replicas to write.",
                WriteRefusal::NotEnoughReplicas,
            ),
            (
                "READONLY You can't write against a read only replica.",
                WriteRefusal::ReadOnly,
            ),
            ("NOWRITE writes are paused", WriteRefusal::WritesPaused),
        ] {
            let e = FredError::new(ErrorKind::Unknown, reply);
            match map_err(e) {
                EngineError::Refused { refusal, .. } => assert_eq!(refusal, expected, "{reply}"),
                other => panic!("{reply}: {other:?}"),
            }
        }
        // Raised inside a function: Redis puts its own prefix before the code.
        let e = FredError::new(
            ErrorKind::Unknown,
            "ERR Error running script: @user_function: -OOM command not allowed",
        );
        assert!(!map_err(e).may_have_run());
        // A lost connection may have run the call.
        let e = FredError::new(ErrorKind::IO, "Connection reset by peer");
        let e = map_err(e);
        assert!(
            matches!(e, EngineError::Unavailable(_)) && e.may_have_run(),
            "{e:?}"
        );
        let e = FredError::new(ErrorKind::Unknown, "ERR wrong number of arguments");
        assert!(matches!(map_err(e), EngineError::Internal(_)));
        let e = FredError::new(ErrorKind::Unknown, "ERR no such key BOOM");
        assert!(matches!(map_err(e), EngineError::Internal(_)));
    }

    #[test]
    fn url_forms() {
        assert_eq!(normalize_url("redis://h:1"), "redis://h:1");
        assert_eq!(
            normalize_url("redis-cluster://a:1,b:2,c:3"),
            "redis-cluster://a:1?node=b:2&node=c:3"
        );
        assert_eq!(
            normalize_url("redis-sentinel://u:p@a:1,b:2/0?sentinelServiceName=m"),
            "redis-sentinel://u:p@a:1/0?node=b:2&sentinelServiceName=m"
        );
        assert_eq!(
            normalize_url("redis-sentinel://a:1/0?sentinelServiceName=m"),
            "redis-sentinel://a:1/0?sentinelServiceName=m"
        );
        assert_eq!(
            parse_url("redis://127.0.0.1:1").unwrap().1,
            RedisMode::Single
        );
        assert_eq!(
            parse_url("redis-cluster://127.0.0.1:1,127.0.0.1:2")
                .unwrap()
                .1,
            RedisMode::Cluster
        );
        let (config, mode) =
            parse_url("redis-cluster://127.0.0.1:1?node=127.0.0.1:2&node=127.0.0.1:3").unwrap();
        assert_eq!(mode, RedisMode::Cluster);
        assert_eq!(config.server.hosts().len(), 3);
        let (config, mode) =
            parse_url("redis-sentinel://127.0.0.1:1,127.0.0.1:2/0?sentinelServiceName=mymaster")
                .unwrap();
        assert_eq!(mode, RedisMode::Sentinel);
        assert_eq!(config.server.hosts().len(), 2);
        assert!(
            parse_url("redis-sentinel://127.0.0.1:1/0").is_err(),
            "service name required"
        );
        assert!(parse_url("redis-sentinel://127.0.0.1:1/0?serviceName=x").is_err());
    }
}
