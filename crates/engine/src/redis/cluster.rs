//! Redis Cluster: every `FCALL` touches the keys of one slot, so the writes of
//! [`Shape`] are split into slot-local calls and the cross-slot rest is done from here.
//!
//! - A send is `chat_conv_append` in the conversation's slot, then the two
//!   `chat_inbox_append` in the users' slots, concurrently (two round trips). A
//!   duplicate (nonce retry) still runs the inbox appends, in case the first attempt
//!   died between the two steps; they skip an inbox that already holds the message.
//! - A read receipt is `chat_read_marker`, then two `chat_inbox_append`.
//! - A presence transition is decided in the user's slot (`chat_pres_open` /
//!   `chat_pres_close` / `chat_pres_drop`); the node's set, the user hash's `seen` and
//!   the publishes (`SPUBLISH` to each partner, `PUBLISH` on the global channel)
//!   follow from here.

use std::sync::Arc;

use async_trait::async_trait;
use chat_protocol::{dm_conversation, Event, StreamId};
use fred::prelude::*;
use fred::types::config::Options;
use fred::types::Expiration;

use super::conn::{all_ok, map_err, number, strings, text};
use super::functions;
use super::functions::send::{InboxAppend, Stored};
use super::payload::Transition;
use super::shape::{Sent, Shape, REAP_BATCH};
use super::{keys, Core};
use crate::events::{now_ms, now_rfc3339};
use crate::{EngineError, InboxEvent, ReadOutcome, SendOutcome, SendRequest};

/// The cluster writes.
pub(crate) struct Cluster {
    core: Arc<Core>,
}

impl Cluster {
    pub(crate) fn new(core: Arc<Core>) -> Cluster {
        Cluster { core }
    }

    /// The most recent partners a presence transition is announced to (an argument
    /// of `chat_pres_open` / `_close` / `_drop`).
    fn fanout(&self) -> String {
        self.core.retention.presence_fanout_max.to_string()
    }

    /// Appends an event to a user's inbox and publishes it (`chat_inbox_append`, in
    /// the user's slot). Returns the new entry's id and the one before it.
    async fn inbox_append(
        &self,
        append: InboxAppend<'_>,
    ) -> Result<Option<(StreamId, StreamId)>, EngineError> {
        let message = matches!(append.stored, Stored::Message { .. });
        let (keys, args) = append.call(&self.core.retention);
        // With a search window a resent message is caught by the Lua, and a read event
        // written twice is a harmless duplicate (same content, clients drop it); a
        // message's first attempt searches nothing, so it is never written twice.
        let opts = if append.window == 0 && message {
            &self.core.once
        } else {
            &self.core.opts
        };
        let reply = self
            .core
            .fcall(functions::send::INBOX_APPEND, &keys, &args, opts)
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

    /// Records `seen` and announces the offline transition.
    async fn went_offline(&self, user: &str, partners: &[String]) -> Result<(), EngineError> {
        let now = now_rfc3339();
        let _: i64 = self
            .core
            .cmd()
            .hset(keys::user(user), ("seen", now.as_str()))
            .await
            .map_err(map_err)?;
        self.announce(&Transition::new(user, false, Some(&now)), partners)
            .await
    }

    /// Publishes a presence frame to each partner's channel (`SPUBLISH`, each to its
    /// shard) and on the global channel (plain `PUBLISH`, which a cluster copies to
    /// every node: meant for a channel every node listens to). One pipeline.
    async fn announce(
        &self,
        transition: &Transition,
        partners: &[String],
    ) -> Result<(), EngineError> {
        let pipeline = self.core.pool.next_connected().pipeline();
        for peer in partners {
            let _: () = pipeline
                .spublish(keys::channel(peer), transition.partner.as_str())
                .await
                .map_err(map_err)?;
        }
        let _: () = pipeline
            .publish(keys::PRESENCE_CHANNEL, transition.global.as_str())
            .await
            .map_err(map_err)?;
        all_ok(pipeline.try_all::<Value>().await)?;
        Ok(())
    }

    /// Calls a presence function (`chat_pres_open` / `_close` / `_drop`) in the user's
    /// slot: all three take the user's presence hash and conversation list, the node
    /// and the fan-out.
    async fn pres_call(
        &self,
        function: &'static str,
        user: &str,
        node: &str,
        opts: &Options,
    ) -> Result<Value, EngineError> {
        let keys = [keys::presence(user), keys::convs(user)];
        let args = [node.to_string(), self.fanout()];
        self.core.fcall(function, &keys, &args, opts).await
    }

    /// `chat_pres_drop` in the user's slot: the node's connections of the user are
    /// gone. Returns the partners to tell when that took the user offline.
    async fn pres_drop(&self, user: &str, node: &str) -> Result<Option<Vec<String>>, EngineError> {
        let reply = self
            .pres_call(functions::presence::PRES_DROP, user, node, &self.core.opts)
            .await?;
        // {offline, partners}
        Ok(match reply {
            Value::Array(mut parts) if parts.len() == 2 && number(&parts[0]) == 1 => {
                Some(strings(parts.pop().unwrap_or(Value::Null)))
            }
            _ => None,
        })
    }
}

#[async_trait]
impl Shape for Cluster {
    async fn send(&self, request: SendRequest, local: bool) -> Result<Sent, EngineError> {
        let core = &self.core;
        let (keys, args) = functions::send::conv_append_call(&request, &core.retention, now_ms());
        let opts = if request.nonce.is_some() {
            &core.opts
        } else {
            &core.once
        };
        let reply = core
            .fcall(functions::send::CONV_APPEND, &keys, &args, opts)
            .await?;
        let functions::send::SendReply {
            duplicate, message, ..
        } = functions::send::parse_conv_append_reply(reply, &request)?;
        let event = Event::Message { message: &message }.to_json();
        let window = if duplicate {
            functions::send::RETRY_DEDUPE_WINDOW
        } else {
            0
        };
        let (from, to) = (request.from.as_str(), request.to.as_str());
        // A retry may follow an attempt that never published: publish as usual then.
        let node = (local && !duplicate).then_some(core.node_id.as_str());
        let trace = request.trace.as_deref();
        let (a, b) = tokio::join!(
            self.inbox_append(InboxAppend {
                user: from,
                other: to,
                event: &event,
                stored: Stored::Message {
                    message: &message,
                    sent: true,
                },
                window,
                trace,
                node,
            }),
            self.inbox_append(InboxAppend {
                user: to,
                other: from,
                event: &event,
                stored: Stored::Message {
                    message: &message,
                    sent: false,
                },
                window,
                trace,
                node: None,
            }),
        );
        let sender_entry = a?;
        b?;
        let own = sender_entry
            .filter(|_| node.is_some())
            .map(|(id, prev)| InboxEvent {
                id,
                prev,
                json: bytes::Bytes::from(event),
                trace: None,
            });
        Ok(Sent {
            outcome: SendOutcome { message, duplicate },
            own,
        })
    }

    async fn mark_read(
        &self,
        reader: &str,
        peer: &str,
        up_to: StreamId,
    ) -> Result<Option<ReadOutcome>, EngineError> {
        let conversation = dm_conversation(reader, peer);
        let keys = vec![keys::conv_msgs(reader, peer), keys::conv_meta(reader, peer)];
        let args = vec![reader.to_string(), up_to.to_string()];
        let reply = self
            .core
            .fcall(
                functions::receipts::READ_MARKER,
                &keys,
                &args,
                &self.core.opts,
            )
            .await?;
        let Some(id) = functions::receipts::parse_read_reply(reply)? else {
            return Ok(None); // nothing moved
        };
        let event = Event::Read {
            conversation: &conversation,
            by: reader,
            up_to: &id,
        }
        .to_json();
        let append = |user, other, read| InboxAppend {
            user,
            other,
            event: &event,
            stored: Stored::Read { up_to: &id, read },
            window: 0,
            trace: None,
            node: None,
        };
        let (a, b) = tokio::join!(
            self.inbox_append(append(reader, peer, true)),
            self.inbox_append(append(peer, reader, false)),
        );
        a?;
        b?;
        Ok(Some(ReadOutcome {
            conversation,
            up_to: id,
        }))
    }

    async fn connection_opened(&self, user: &str, node: &str) -> Result<u64, EngineError> {
        let reply = self
            .pres_call(functions::presence::PRES_OPEN, user, node, &self.core.once)
            .await?;
        let (n, partners) = match reply {
            Value::Array(mut parts) if parts.len() == 2 => {
                let partners = strings(parts.pop().unwrap_or(Value::Null));
                (number(&parts[0]), partners)
            }
            _ => {
                return Err(EngineError::Internal(
                    "unexpected chat_pres_open reply".into(),
                ))
            }
        };
        let node_set = keys::node_users(node);
        let cmd = self.core.cmd();
        let (added, announced) = tokio::join!(cmd.sadd::<i64, _, _>(&node_set, user), async {
            if n == 1 {
                self.announce(&Transition::new(user, true, None), &partners)
                    .await
            } else {
                Ok(())
            }
        });
        added.map_err(map_err)?;
        announced?;
        Ok(n)
    }

    async fn connection_closed(&self, user: &str, node: &str) -> Result<(), EngineError> {
        let reply = self
            .pres_call(functions::presence::PRES_CLOSE, user, node, &self.core.once)
            .await?;
        let (left, offline, partners) = match reply {
            Value::Array(mut parts) if parts.len() == 3 => {
                let partners = strings(parts.pop().unwrap_or(Value::Null));
                (number(&parts[0]) == 1, number(&parts[1]) == 1, partners)
            }
            _ => {
                return Err(EngineError::Internal(
                    "unexpected chat_pres_close reply".into(),
                ))
            }
        };
        let node_set = keys::node_users(node);
        let cmd = self.core.cmd();
        let (removed, announced) = tokio::join!(
            async {
                if left {
                    cmd.srem::<i64, _, _>(&node_set, user).await.map(|_| ())
                } else {
                    Ok(())
                }
            },
            async {
                if offline {
                    self.went_offline(user, &partners).await
                } else {
                    Ok(())
                }
            }
        );
        removed.map_err(map_err)?;
        announced?;
        Ok(())
    }

    async fn drop_presence(&self, user: &str, node: &str) -> Result<(), EngineError> {
        // Presence before the node's set: should the drop fail, the user stays in the
        // set, where the reaper of a dead node still finds them.
        let offline = self.pres_drop(user, node).await?;
        let _: i64 = self
            .core
            .cmd()
            .srem(keys::node_users(node), user)
            .await
            .map_err(map_err)?;
        if let Some(partners) = offline {
            self.went_offline(user, &partners).await?;
        }
        Ok(())
    }

    async fn heartbeat(&self, node: &str, ttl_secs: u64) -> Result<(), EngineError> {
        // Two keys in two slots: two commands (one pipeline).
        let pipeline = self.core.pool.next_connected().pipeline();
        let now = now_ms();
        let _: () = pipeline
            .set(
                keys::node_alive(node),
                now,
                Some(Expiration::EX(ttl_secs.max(1) as i64)),
                None,
                false,
            )
            .await
            .map_err(map_err)?;
        let _: () = pipeline
            .zadd(keys::NODES, None, None, false, false, (now as f64, node))
            .await
            .map_err(map_err)?;
        all_ok(pipeline.try_all::<Value>().await)?;
        Ok(())
    }

    /// Pops the dead node's users in batches and drops the node's connections of each
    /// in the user's slot (`chat_pres_drop`), announcing those who went offline. A
    /// reaper dying half-way loses the announcements of the batch it held (presence
    /// frames are ephemeral; the stored state is right).
    async fn drop_node_users(&self, node: &str) -> Result<(), EngineError> {
        let set = keys::node_users(node);
        loop {
            let users: Vec<String> = self
                .core
                .cmd()
                .spop(&set, Some(REAP_BATCH))
                .await
                .map_err(map_err)?;
            if users.is_empty() {
                return Ok(());
            }
            for user in &users {
                if let Some(partners) = self.pres_drop(user, node).await? {
                    self.went_offline(user, &partners).await?;
                }
            }
        }
    }
}
