//! The Redis engine: everything stored in Redis, so any number of nodes share it.
//!
//! [`RedisEngine`] implements [`Engine`] with a small fred command pool and a few
//! subscriber connections ([`subscriber`]). On a single Redis (and behind Sentinel) a
//! send is one `FCALL chat_send` (one round trip): the Lua library ([`functions`],
//! `scripts/chat.lua`) checks the nonce, appends the message to the conversation
//! stream, appends an event to both participants' inboxes and publishes it on their
//! channels, atomically.
//!
//! The URL picks the mode ([`RedisMode`], see [`redis_url_mode`]): `redis://` one
//! Redis, `redis-sentinel://` the primary Sentinel names (fred follows failovers; the
//! function library is replicated to the replica, and reloaded if a primary lacks
//! it), `redis-cluster://` a Redis Cluster. On a cluster every `FCALL` touches the keys
//! of one slot: a send is `chat_conv_append` in the conversation's slot, then the two
//! `chat_inbox_append` in the users' slots, concurrently (two round trips); a read
//! receipt likewise; presence transitions are decided in the user's slot and the
//! partners' `SPUBLISH`es, the node set and the user hash are written from here. Reads are plain stream
//! commands. Key names live in [`keys`]; connection settings and error mapping in
//! [`conn`]. While Redis is down every call fails fast with
//! [`EngineError::Unavailable`]; fred reconnects on its own, the library is reloaded if
//! the restarted Redis lost it, and subscriptions are re-established. Read receipts,
//! conversation lists and the directory are in [`social`]; presence in [`presence`].

mod batch;
mod conn;
pub use conn::RedisMode;
mod functions;
mod inbox;
pub mod keys;
mod presence;
mod social;
mod subscriber;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_protocol::{Message, StreamId, User};
use fred::clients::Pool;
use fred::prelude::*;
use fred::types::config::Options;
use fred::types::{ClusterHash, CustomCommand, Expiration};

use self::conn::{entries, map_err, text};
use self::subscriber::Subscribers;
use crate::events::now_ms;
use crate::{
    ConversationSummary, Engine, EngineError, EventSink, InboxEvent, PresenceInfo, ReadOutcome,
    Retention, SendOutcome, SendRequest,
};

/// The mode a Redis URL selects, or why it is not a usable Redis URL: for config
/// validation. Forms: `redis://host:port[/db]`; `redis-cluster://host:port[,host:port…]`
/// (or fred's `redis-cluster://host:port?node=host:port&node=…`);
/// `redis-sentinel://host:port[,host:port…][/db]?sentinelServiceName=<name>` (the
/// hosts are sentinels; or fred's `…?sentinelServiceName=<name>&node=host:port…`).
pub fn redis_url_mode(url: &str) -> Result<RedisMode, String> {
    conn::parse_url(url)
        .map(|(_, mode)| mode)
        .map_err(|e| match e {
            EngineError::Internal(why) => why,
            other => other.to_string(),
        })
}

/// Connections in the command pool.
const POOL_SIZE: usize = 4;

/// How to reach Redis and what to keep.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`, `redis-cluster://host:port[,host:port…]` or
    /// `redis-sentinel://host:port[,host:port…][/db]?sentinelServiceName=<name>`
    /// (see [`redis_url_mode`]).
    pub url: String,
    pub retention: Retention,
    /// Subscriber connections users are spread over (default 2).
    pub subscribers: usize,
    /// Connection and command timeout in milliseconds (default 3000).
    pub command_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            retention: Retention::default(),
            subscribers: 2,
            command_timeout_ms: 3000,
        }
    }
}

/// The engine backed by Redis.
pub struct RedisEngine {
    pool: Pool,
    /// Ordinary commands: timeout, fail fast, one retry after a reconnect.
    opts: Options,
    /// Sends without a nonce: never written twice.
    once: Options,
    timeout: Duration,
    retention: Retention,
    subscribers: Subscribers,
    mode: RedisMode,
    /// Single Redis and Sentinel: the queue that batches sends into `chat_send` calls.
    /// `None` on a cluster (a send there spans slots: [`RedisEngine::cluster_send`]).
    batcher: Option<batch::Batcher>,
}

impl RedisEngine {
    /// Connects the pool and the subscribers and loads the function library. Fails
    /// with `Unavailable` when Redis does not answer within the timeout.
    pub async fn connect(
        config: RedisConfig,
        sink: Arc<dyn EventSink>,
    ) -> Result<Arc<RedisEngine>, EngineError> {
        let timeout = Duration::from_millis(config.command_timeout_ms.max(1));
        let (_, mode) = conn::parse_url(&config.url)?;
        let builder = conn::builder(&config.url, timeout)?;
        let pool = builder.build_pool(POOL_SIZE).map_err(map_err)?;
        pool.init().await.map_err(map_err)?;
        let opts = conn::options(timeout, 2);
        functions::load(&pool.with_options(&opts)).await?;
        let subscribers = Subscribers::start(&builder, config.subscribers, timeout, sink).await?;
        Ok(Arc::new_cyclic(|engine| RedisEngine {
            pool,
            once: conn::options(timeout, 1),
            opts,
            timeout,
            retention: config.retention,
            subscribers,
            mode,
            batcher: (mode != RedisMode::Cluster).then(|| batch::Batcher::start(engine.clone())),
        }))
    }

    /// The mode the URL selected.
    pub fn mode(&self) -> RedisMode {
        self.mode
    }

    fn clustered(&self) -> bool {
        self.mode == RedisMode::Cluster
    }

    /// Cluster mode: appends an event to `user`'s inbox and publishes it
    /// (`chat_inbox_append`, in the user's slot). See [`functions::inbox_append_call`].
    #[allow(clippy::too_many_arguments)]
    async fn inbox_append(
        &self,
        user: &str,
        other: &str,
        event: &str,
        stored: functions::Stored<'_>,
        window: usize,
        trace: Option<&str>,
        node: Option<&str>,
    ) -> Result<Option<(StreamId, StreamId)>, EngineError> {
        let message = matches!(stored, functions::Stored::Message { .. });
        let (keys, args) = functions::inbox_append_call(
            user,
            other,
            event,
            stored,
            &self.retention,
            window,
            trace,
            node,
        );
        // With a search window a resent message is caught by the Lua, and a read event
        // written twice is a harmless duplicate (same content, clients drop it); a
        // message's first attempt searches nothing, so it is never written twice.
        let opts = if window == 0 && message {
            &self.once
        } else {
            &self.opts
        };
        let reply = self
            .fcall(functions::INBOX_APPEND, &keys, &args, opts)
            .await?;
        // {id, prev, appended}
        let entry = match reply {
            Value::Array(parts) => {
                let mut ids = parts
                    .into_iter()
                    .take(2)
                    .filter_map(|v| text(v).and_then(|t| StreamId::parse(&t)));
                ids.next().zip(ids.next())
            }
            _ => None,
        };
        Ok(entry)
    }

    /// Cluster mode: `chat_conv_append` in the conversation's slot, then both inbox
    /// appends concurrently. A duplicate (nonce retry) still runs the inbox appends,
    /// in case the first attempt died between the two steps; they skip an inbox that
    /// already holds the message.
    async fn cluster_send(&self, request: &SendRequest) -> Result<SendOutcome, EngineError> {
        let (keys, args) = functions::conv_append_call(request, &self.retention, now_ms());
        let opts = if request.nonce.is_some() {
            &self.opts
        } else {
            &self.once
        };
        let reply = self
            .fcall(functions::CONV_APPEND, &keys, &args, opts)
            .await?;
        let functions::SendReply {
            duplicate,
            message,
            json,
            ..
        } = functions::parse_conv_append_reply(reply)?;
        let event = functions::message_event(&json);
        let window = if duplicate {
            functions::RETRY_DEDUPE_WINDOW
        } else {
            0
        };
        let (from, to) = (request.from.as_str(), request.to.as_str());
        // A retry may follow an attempt that never published: publish as usual then.
        let node = request.local_node.as_deref().filter(|_| !duplicate);
        let trace = request.trace.as_deref();
        let (a, b) = tokio::join!(
            self.inbox_append(
                from,
                to,
                &event,
                functions::Stored::Message {
                    message: &message,
                    sent: true,
                },
                window,
                trace,
                node,
            ),
            self.inbox_append(
                to,
                from,
                &event,
                functions::Stored::Message {
                    message: &message,
                    sent: false,
                },
                window,
                trace,
                None,
            ),
        );
        let sender_entry = a?;
        b?;
        let sender_event = sender_event(node.is_some(), sender_entry, event);
        Ok(SendOutcome {
            message,
            duplicate,
            sender_event,
        })
    }

    /// Single Redis: one `chat_send` call storing and delivering `requests` in order
    /// (see [`batch`]). `now_ms`: this node's clock, for the history age limit.
    async fn send_batch(
        &self,
        requests: &[&SendRequest],
        now_ms: u64,
    ) -> Result<Vec<SendOutcome>, EngineError> {
        let (keys, args) = functions::send_call(requests.iter().copied(), &self.retention, now_ms);
        // With nonces a retried call is harmless; without one, never write it twice.
        let opts = if requests.iter().all(|r| r.nonce.is_some()) {
            &self.opts
        } else {
            &self.once
        };
        let reply = self.fcall(functions::SEND, &keys, &args, opts).await?;
        let replies = functions::parse_send_reply(reply, requests, &args)?;
        Ok(requests
            .iter()
            .zip(replies)
            .map(|(request, reply)| {
                let functions::SendReply {
                    duplicate,
                    message,
                    json,
                    sender_entry,
                } = reply;
                let local = request.local_node.is_some() && !duplicate;
                let sender_event =
                    sender_event(local, sender_entry, functions::message_event(&json));
                SendOutcome {
                    message,
                    duplicate,
                    sender_event,
                }
            })
            .collect())
    }

    /// Closes every connection. The engine is unusable afterwards.
    pub async fn close(&self) {
        self.subscribers.close().await;
        let _ = self.pool.quit().await;
    }

    fn cmd(&self) -> fred::clients::WithOptions<Pool> {
        self.pool.with_options(&self.opts)
    }

    /// `FCALL function`, reloading the libraries once if Redis lost them.
    async fn fcall(
        &self,
        function: &'static str,
        keys: &[String],
        args: &[String],
        opts: &Options,
    ) -> Result<Value, EngineError> {
        let client = self.pool.with_options(opts);
        match client.fcall(function, keys.to_vec(), args.to_vec()).await {
            Err(e) if conn::is_function_missing(&e) => {
                tracing::warn!("redis lost the chat function library; reloading it");
                functions::load(&self.cmd()).await?;
                client
                    .fcall(function, keys.to_vec(), args.to_vec())
                    .await
                    .map_err(map_err)
            }
            other => other.map_err(map_err),
        }
    }

    /// Whether entries were ever trimmed from (or deleted in) the stream `key`:
    /// `XINFO STREAM`'s `entries-added` above its `length`.
    async fn inbox_trimmed(&self, key: &str) -> Result<bool, EngineError> {
        let v: Value = self
            .cmd()
            .custom(
                CustomCommand::new_static("XINFO", ClusterHash::FirstKey, false),
                vec!["STREAM".to_string(), key.to_string()],
            )
            .await
            .map_err(map_err)?;
        let field = |name: &str| -> Option<i64> {
            match &v {
                Value::Array(items) => items
                    .chunks(2)
                    .find(|kv| kv[0].as_str().as_deref() == Some(name))
                    .and_then(|kv| kv.get(1))
                    .and_then(|n| n.as_i64()),
                Value::Map(map) => map
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(name))
                    .and_then(|(_, n)| n.as_i64()),
                _ => None,
            }
        };
        match (field("entries-added"), field("length")) {
            (Some(added), Some(length)) => Ok(added > length),
            _ => Err(EngineError::Internal(
                "unexpected XINFO STREAM reply".into(),
            )),
        }
    }

    async fn last_entry_id(&self, key: String) -> Result<StreamId, EngineError> {
        let v: Value = self
            .cmd()
            .xrevrange(key, "+", "-", Some(1))
            .await
            .map_err(map_err)?;
        Ok(entries(v)?
            .first()
            .and_then(|e| StreamId::parse(&e.id))
            .unwrap_or(StreamId::ZERO))
    }
}

impl Drop for RedisEngine {
    fn drop(&mut self) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let pool = self.pool.clone();
            handle.spawn(async move {
                let _ = pool.quit().await;
            });
        }
    }
}

fn guest_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("g-{}", &hex[..20])
}

fn session_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn ttl(secs: u64) -> i64 {
    secs.clamp(1, i64::MAX as u64) as i64
}

#[async_trait]
impl Engine for RedisEngine {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn ready(&self) -> bool {
        let opts = conn::options(self.timeout.min(Duration::from_secs(1)), 1);
        let pong: Result<String, _> = self.pool.with_options(&opts).ping(None).await;
        pong.is_ok() && self.subscribers.connected()
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>, EngineError> {
        let name: Option<String> = self
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
        let id = guest_id();
        self.set_name(&id, name).await?;
        Ok(User {
            id,
            name: name.to_string(),
        })
    }

    async fn create_session(&self, user_id: &str, ttl_secs: u64) -> Result<String, EngineError> {
        let token = session_token();
        let _: () = self
            .cmd()
            .set(
                keys::session(&token),
                user_id,
                Some(Expiration::EX(ttl(ttl_secs))),
                None,
                false,
            )
            .await
            .map_err(map_err)?;
        let set = keys::user_sessions(user_id);
        let _: i64 = self
            .cmd()
            .sadd(&set, token.as_str())
            .await
            .map_err(map_err)?;
        let _: i64 = self
            .cmd()
            .expire(&set, ttl(ttl_secs), None)
            .await
            .map_err(map_err)?;
        Ok(token)
    }

    async fn resume_session(
        &self,
        session: &str,
        ttl_secs: u64,
    ) -> Result<Option<User>, EngineError> {
        let getex = CustomCommand::new_static("GETEX", ClusterHash::FirstKey, false);
        let uid: Value = self
            .cmd()
            .custom(
                getex,
                vec![
                    keys::session(session),
                    "EX".into(),
                    ttl(ttl_secs).to_string(),
                ],
            )
            .await
            .map_err(map_err)?;
        let Some(uid) = text(uid) else {
            return Ok(None);
        };
        let set = keys::user_sessions(&uid);
        let cmd = self.cmd();
        let (user, _) = tokio::join!(
            self.get_user(&uid),
            cmd.expire::<i64, _>(&set, ttl(ttl_secs), None)
        );
        user
    }

    async fn revoke_sessions(&self, user_id: &str) -> Result<(), EngineError> {
        let set = keys::user_sessions(user_id);
        let tokens: Vec<String> = self.cmd().smembers(&set).await.map_err(map_err)?;
        if !tokens.is_empty() {
            // One DEL per key: on Redis Cluster the session keys live in different slots.
            let pipeline = self.pool.next().pipeline();
            for token in &tokens {
                let _: () = pipeline.del(keys::session(token)).await.map_err(map_err)?;
            }
            let _: Vec<Value> = pipeline.all().await.map_err(map_err)?;
        }
        let _: i64 = self.cmd().del(&set).await.map_err(map_err)?;
        Ok(())
    }

    async fn send(&self, request: SendRequest) -> Result<SendOutcome, EngineError> {
        match &self.batcher {
            Some(batcher) => batcher.send(request).await,
            None => self.cluster_send(&request).await,
        }
    }

    async fn history(
        &self,
        a: &str,
        b: &str,
        before: Option<StreamId>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool), EngineError> {
        let end = match before {
            Some(id) => format!("({id}"),
            None => "+".to_string(),
        };
        let v: Value = self
            .cmd()
            .xrevrange(keys::conv_msgs(a, b), end, "-", Some(limit as u64 + 1))
            .await
            .map_err(map_err)?;
        let mut found = entries(v)?;
        let more = found.len() > limit;
        found.truncate(limit);
        let messages = found
            .into_iter()
            .rev()
            .map(|e| inbox::conversation_message(a, b, e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((messages, more))
    }

    async fn clear_conversation(&self, a: &str, b: &str) -> Result<(), EngineError> {
        // Both keys share the conversation's hash tag: one DEL works on Cluster too.
        let _: i64 = self
            .cmd()
            .del(vec![keys::conv_msgs(a, b), keys::conv_meta(a, b)])
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn inbox_head(&self, user_id: &str) -> Result<StreamId, EngineError> {
        self.last_entry_id(keys::inbox(user_id)).await
    }

    async fn read_inbox(
        &self,
        user_id: &str,
        after: StreamId,
        count: usize,
    ) -> Result<Vec<InboxEvent>, EngineError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        // Entries hold no link to their predecessor: read `after` itself too. If it is
        // still there, every entry after it is (trimming removes the oldest first), so
        // the first event's `prev` is `after`; if it is gone, the first event's `prev`
        // is unknown and reported as [`UNKNOWN_PREV`], which proves nothing.
        let key = keys::inbox(user_id);
        let start = if after == StreamId::ZERO {
            "-".to_string()
        } else {
            after.to_string()
        };
        let v: Value = self
            .cmd()
            .xrange(&key, start, "+", Some(count as u64 + 1))
            .await
            .map_err(map_err)?;
        let mut found = entries(v)?.into_iter().peekable();
        let mut prev = match found.peek() {
            None => return Ok(Vec::new()),
            Some(first) if StreamId::parse(&first.id) == Some(after) => {
                found.next();
                after
            }
            Some(_) if after == StreamId::ZERO && !self.inbox_trimmed(&key).await? => after,
            Some(_) => UNKNOWN_PREV,
        };
        found
            .take(count)
            .map(|e| {
                let event = inbox::event(user_id, &e, prev)?;
                prev = event.id;
                Ok(event)
            })
            .collect()
    }

    async fn subscribe(&self, user_id: &str) -> Result<(), EngineError> {
        self.subscribers.subscribe(user_id).await
    }

    async fn unsubscribe(&self, user_id: &str) -> Result<(), EngineError> {
        self.subscribers.unsubscribe(user_id).await
    }

    async fn publish_ephemeral(&self, user_id: &str, frame: &str) -> Result<(), EngineError> {
        let _: i64 = self
            .pool
            .next_connected()
            .with_options(&self.opts)
            .spublish(keys::channel(user_id), format!("- - {frame}"))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn mark_read(
        &self,
        reader: &str,
        peer: &str,
        up_to: StreamId,
    ) -> Result<Option<ReadOutcome>, EngineError> {
        self.read_up_to(reader, peer, up_to).await
    }

    async fn conversations(
        &self,
        user_id: &str,
        limit: usize,
    ) -> Result<Vec<ConversationSummary>, EngineError> {
        self.conversation_list(user_id, limit).await
    }

    async fn connection_opened(&self, user_id: &str, node: &str) -> Result<u64, EngineError> {
        self.opened(user_id, node).await
    }

    async fn connection_closed(&self, user_id: &str, node: &str) -> Result<(), EngineError> {
        self.closed(user_id, node).await
    }

    async fn drop_presence(&self, user_id: &str, node: &str) -> Result<(), EngineError> {
        self.drop_node_presence(user_id, node).await
    }

    async fn heartbeat(&self, node: &str, ttl_secs: u64) -> Result<(), EngineError> {
        self.beat(node, ttl_secs).await
    }

    async fn reap_dead_nodes(&self) -> Result<usize, EngineError> {
        self.reap().await
    }

    async fn reset_node(&self, node: &str) -> Result<(), EngineError> {
        self.reap_node(node).await
    }

    async fn presence(&self, user_ids: &[String]) -> Result<Vec<PresenceInfo>, EngineError> {
        self.presence_of(user_ids).await
    }

    async fn search_users(&self, prefix: &str, limit: usize) -> Result<Vec<User>, EngineError> {
        self.search(prefix, limit).await
    }

    async fn disconnect_user(&self, user_id: &str) -> Result<(), EngineError> {
        self.disconnect(user_id).await
    }
}

/// The `prev` of the first event a read returns when the entry before it is gone
/// (trimmed): it matches no cursor, so it proves no recovery.
const UNKNOWN_PREV: StreamId = StreamId {
    ms: u64::MAX,
    seq: u64::MAX,
};

/// The sender's inbox entry of a send, for the sending node to deliver itself
/// ([`SendOutcome::sender_event`]), when it asked to (`local`) and one was appended.
fn sender_event(
    local: bool,
    entry: Option<(StreamId, StreamId)>,
    event: String,
) -> Option<InboxEvent> {
    let (id, prev) = entry.filter(|_| local)?;
    Some(InboxEvent {
        id,
        prev,
        json: bytes::Bytes::from(event),
        trace: None,
    })
}
