//! Live delivery: sharded pub/sub on a few `SubscriberClient` connections.
//!
//! Each user is assigned to one of `n` subscriber connections by a stable hash of the
//! id. `subscribe` sends `SSUBSCRIBE`, which returns only after Redis confirmed the
//! subscription. Every connection has its own task reading `message_rx()` (fred's
//! `on_message` listeners die silently when they lag; here a lag calls
//! `sink.resync()`), and a task watching `reconnect_rx()`: after a reconnect it
//! re-subscribes the connection's users in batches, grouped by hash slot, and then calls
//! `sink.resync()` so the node catches up on what it missed while disconnected.
//!
//! The payloads' forms are [`super::payload`]'s, which parses them here.
//!
//! On Redis Cluster fred's subscriber keeps a connection to every primary and sends
//! each `SSUBSCRIBE` to the node owning the channel's slot (batches are grouped by
//! slot); a failover or a changed slot map reconnects a node, which lands here as a
//! reconnect event like any other: everything is re-subscribed (an `SSUBSCRIBE` of a
//! channel already held is harmless) and the sink resyncs. Behind Sentinel the client
//! follows the primary the same way.
//!
//! Rooms ride the same connections: a room's channel ([`keys::room_channel`]) is
//! assigned to a shard by the room id, re-subscribed with the users' channels, and
//! its payloads go to `sink.deliver_room`.
//!
//! The first connection also subscribes (plain `SUBSCRIBE`) to the global presence
//! channel, at start and after every reconnect; its payloads go to `sink.presence`.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::Options;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::conn::{self, map_err};
use super::{keys, payload};
use crate::{EngineError, EventSink};

/// Channels per `SSUBSCRIBE` when re-subscribing: keeps each batch of confirmations
/// well inside Redis's pub/sub output buffer.
const RESUBSCRIBE_BATCH: usize = 500;

/// The subscriber connections of one engine.
pub(crate) struct Subscribers {
    shards: Vec<Arc<Shard>>,
    tasks: Vec<JoinHandle<()>>,
}

/// One subscriber connection and the users assigned to it.
struct Shard {
    client: SubscriberClient,
    users: Mutex<HashSet<String>>,
    /// Rooms whose channels this connection holds.
    rooms: Mutex<HashSet<String>>,
    options: Options,
    sink: Arc<dyn EventSink>,
    /// Whether this connection listens to the global presence channel.
    presence: bool,
}

impl Shard {
    fn users(&self) -> MutexGuard<'_, HashSet<String>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn rooms(&self) -> MutexGuard<'_, HashSet<String>> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes again to every channel of this connection's users and rooms.
    async fn resubscribe(&self) -> Result<(), EngineError> {
        let mut channels: Vec<String> = self.users().iter().map(|u| keys::channel(u)).collect();
        channels.extend(self.rooms().iter().map(|r| keys::room_channel(r)));
        let groups = fred::util::group_by_hash_slot(channels).map_err(map_err)?;
        // No fail_fast: right after the reconnect event the client is not yet marked
        // connected, and the command must wait for the router instead of failing.
        let opts = Options {
            fail_fast: false,
            ..self.options.clone()
        };
        for (_, group) in groups {
            let group: Vec<Key> = group.into_iter().collect();
            for batch in group.chunks(RESUBSCRIBE_BATCH) {
                self.client
                    .with_options(&opts)
                    .ssubscribe(batch.to_vec())
                    .await
                    .map_err(map_err)?;
            }
        }
        if self.presence {
            self.client
                .with_options(&opts)
                .subscribe(keys::PRESENCE_CHANNEL)
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }

    fn handle(&self, message: fred::types::Message) {
        if message.channel == keys::PRESENCE_CHANNEL {
            let parsed = message.value.into_bytes().and_then(payload::parse_presence);
            match parsed {
                Some((user, frame)) => self.sink.presence(&user, frame),
                None => tracing::warn!("unparsable presence payload"),
            }
            return;
        }
        if let Some(room) = keys::channel_room(&message.channel) {
            if !self.rooms().contains(room) {
                return;
            }
            let parsed = message
                .value
                .into_bytes()
                .and_then(|p| payload::parse_room(room, p));
            match parsed {
                Some(event) => self.sink.deliver_room(Arc::new(event)),
                None => tracing::warn!(channel = %message.channel, "unparsable room payload"),
            }
            return;
        }
        let Some(user) = keys::channel_user(&message.channel) else {
            return;
        };
        // fred can confirm SUNSUBSCRIBE before Redis stops sending: after
        // `unsubscribe` returns, nothing more reaches the sink for that user.
        if !self.users().contains(user) {
            return;
        }
        let Some(payload) = message.value.into_bytes() else {
            return;
        };
        match payload::parse(payload) {
            Some(event) => self.sink.deliver(user, event),
            None => tracing::warn!(channel = %message.channel, "unparsable live payload"),
        }
    }
}

/// A stable shard index for a user.
fn shard_of(user: &str, n: usize) -> usize {
    let mut h = DefaultHasher::new();
    user.hash(&mut h);
    (h.finish() % n as u64) as usize
}

impl Subscribers {
    /// Connects `n` subscriber connections and starts their tasks.
    pub(crate) async fn start(
        builder: &Builder,
        n: usize,
        timeout: Duration,
        sink: Arc<dyn EventSink>,
    ) -> Result<Subscribers, EngineError> {
        let mut shards = Vec::new();
        let mut tasks = Vec::new();
        for i in 0..n.max(1) {
            let client = builder.build_subscriber_client().map_err(map_err)?;
            // Both receivers exist before the first connect, so nothing is missed; the
            // first reconnect event is the initial connection.
            let messages = client.message_rx();
            let mut reconnects = client.reconnect_rx();
            client.init().await.map_err(map_err)?;
            // The events of the first connection (one per node on a cluster) are not
            // reconnects. Those already sent are drained here; if none was yet, the
            // watcher skips the first one it sees.
            let mut drained = 0;
            while reconnects.try_recv().is_ok() {
                drained += 1;
            }
            let shard = Arc::new(Shard {
                client,
                users: Mutex::new(HashSet::new()),
                rooms: Mutex::new(HashSet::new()),
                options: conn::options(timeout, 2),
                sink: sink.clone(),
                presence: i == 0,
            });
            if shard.presence {
                shard
                    .client
                    .with_options(&shard.options)
                    .subscribe(keys::PRESENCE_CHANNEL)
                    .await
                    .map_err(map_err)?;
            }
            tasks.push(tokio::spawn(read_messages(shard.clone(), messages)));
            tasks.push(tokio::spawn(watch_reconnects(
                shard.clone(),
                reconnects,
                drained == 0,
            )));
            shards.push(shard);
        }
        Ok(Subscribers { shards, tasks })
    }

    fn shard(&self, user: &str) -> &Arc<Shard> {
        &self.shards[shard_of(user, self.shards.len())]
    }

    /// Subscribes to the user's channel; returns once Redis confirmed it.
    pub(crate) async fn subscribe(&self, user: &str) -> Result<(), EngineError> {
        let shard = self.shard(user);
        // Recorded first, so a reconnect racing with this call re-subscribes it too.
        let added = shard.users().insert(user.to_string());
        let result = shard
            .client
            .with_options(&shard.options)
            .ssubscribe(keys::channel(user))
            .await
            .map_err(map_err);
        if result.is_err() && added {
            shard.users().remove(user);
        }
        result
    }

    /// Whether the user's channel is subscribed on this node (or being subscribed).
    pub(crate) fn is_subscribed(&self, user: &str) -> bool {
        self.shard(user).users().contains(user)
    }

    /// Unsubscribes from the user's channel.
    pub(crate) async fn unsubscribe(&self, user: &str) -> Result<(), EngineError> {
        let shard = self.shard(user);
        if !shard.users().remove(user) {
            return Ok(());
        }
        shard
            .client
            .with_options(&shard.options)
            .sunsubscribe(keys::channel(user))
            .await
            .map_err(map_err)
    }

    /// Subscribes to the room's channel; returns once Redis confirmed it.
    pub(crate) async fn subscribe_room(&self, room: &str) -> Result<(), EngineError> {
        let shard = self.shard(room);
        let added = shard.rooms().insert(room.to_string());
        let result = shard
            .client
            .with_options(&shard.options)
            .ssubscribe(keys::room_channel(room))
            .await
            .map_err(map_err);
        if result.is_err() && added {
            shard.rooms().remove(room);
        }
        result
    }

    /// Unsubscribes from the room's channel.
    pub(crate) async fn unsubscribe_room(&self, room: &str) -> Result<(), EngineError> {
        let shard = self.shard(room);
        if !shard.rooms().remove(room) {
            return Ok(());
        }
        shard
            .client
            .with_options(&shard.options)
            .sunsubscribe(keys::room_channel(room))
            .await
            .map_err(map_err)
    }

    /// Whether every subscriber connection is up.
    pub(crate) fn connected(&self) -> bool {
        self.shards.iter().all(|s| s.client.is_connected())
    }

    /// Stops the tasks and closes the connections.
    pub(crate) async fn close(&self) {
        for task in &self.tasks {
            task.abort();
        }
        for shard in &self.shards {
            let _ = shard.client.quit().await;
        }
    }
}

impl Drop for Subscribers {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            for shard in &self.shards {
                let client = shard.client.clone();
                handle.spawn(async move {
                    let _ = client.quit().await;
                });
            }
        }
    }
}

async fn read_messages(
    shard: Arc<Shard>,
    mut rx: tokio::sync::broadcast::Receiver<fred::types::Message>,
) {
    loop {
        match rx.recv().await {
            Ok(message) => shard.handle(message),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(missed = n, "redis subscriber lagged; resync");
                shard.sink.resync();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

async fn watch_reconnects(
    shard: Arc<Shard>,
    mut rx: tokio::sync::broadcast::Receiver<Server>,
    mut initial: bool,
) {
    loop {
        match rx.recv().await {
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
        if initial {
            initial = false;
            continue;
        }
        tracing::info!("redis subscriber reconnected; re-subscribing");
        loop {
            match shard.resubscribe().await {
                Ok(()) => {
                    shard.sink.resync();
                    // During a failover the new primary may still be settling when we
                    // re-subscribe: catch up again a little later so nothing published
                    // in that window waits for the next event to be noticed.
                    let sink = shard.sink.clone();
                    tokio::spawn(async move {
                        for delay in [3, 10] {
                            tokio::time::sleep(Duration::from_secs(delay)).await;
                            sink.resync();
                        }
                    });
                    break;
                }
                Err(e) if shard.client.is_connected() => {
                    tracing::warn!(error = %e, "re-subscribing failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // Down again: the next reconnect event retries.
                Err(e) => {
                    tracing::warn!(error = %e, "re-subscribing failed while disconnected");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable() {
        assert_eq!(shard_of("alice", 4), shard_of("alice", 4));
        assert!(shard_of("bob", 3) < 3);
    }
}
