//! Getting inbox events to the client exactly in order: the recovery replay after
//! `hello.last_seen`, then live events checked against the `prev` chain, with a
//! catch-up read from the inbox whenever a gap shows.
//!
//! Invariant: `last_sent` only moves forward, and an event is written only if its id
//! is greater than `last_sent`, so nothing is written twice or out of order.
//!
//! A live event can arrive just ahead of its predecessor: the sender's own event
//! comes back with the reply to its send while the peer's next one comes through
//! pub/sub, and the two race. Such an event is held for up to [`HOLD`]; when the
//! predecessor arrives both are written in order, and only if it does not is the
//! gap read from the inbox.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_protocol::{ServerFrame, StreamId};
use tokio::time::Instant;

use super::hello::SignedIn;
use super::{Conn, Socket, Stop};
use crate::router::{Out, Routed};

/// Inbox entries read per round trip during replay and catch-up.
const PAGE: usize = 200;
/// How long an event that arrived before its predecessor waits for it.
const HOLD: Duration = Duration::from_millis(50);
/// Events held at most; one more and the gap is read from the inbox at once.
const MAX_HELD: usize = 32;

/// Events waiting for their predecessor, in id order, and since when.
pub(crate) struct Held {
    events: Vec<Arc<Routed>>,
    since: Instant,
}

/// Resolves when the oldest held event has waited long enough; never without any.
pub(super) fn held_deadline(held: &Option<Box<Held>>) -> impl Future<Output = ()> {
    let deadline = held.as_ref().map(|h| h.since + HOLD);
    async move {
        match deadline {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

impl<S: Socket> Conn<S> {
    /// Sends `welcome`, then replays what the client missed since `last_seen`.
    pub(super) async fn welcome(&mut self, signed: &SignedIn) -> Result<(), Stop> {
        let engine = self.state.engine.clone();
        let user = self.user.id.clone();
        let cursor = signed.last_seen.as_deref().and_then(StreamId::parse);
        let mut first_page = Vec::new();
        let mut recovered = false;
        let start = match cursor {
            Some(cursor) => {
                let mut proven = None;
                // An empty page proves nothing if an event landed between the read
                // and the head check: look again.
                for _ in 0..3 {
                    let page = engine
                        .read_inbox(&user, cursor, PAGE)
                        .await
                        .map_err(unavailable)?;
                    if let Some(first) = page.first() {
                        proven = Some(first.prev == cursor);
                        first_page = page;
                        break;
                    }
                    let head = engine.inbox_head(&user).await.map_err(unavailable)?;
                    if head <= cursor {
                        proven = Some(head == cursor);
                        break;
                    }
                }
                recovered = proven == Some(true);
                if recovered {
                    cursor
                } else {
                    first_page.clear();
                    engine.inbox_head(&user).await.map_err(unavailable)?
                }
            }
            None => engine.inbox_head(&user).await.map_err(unavailable)?,
        };
        self.last_sent = start;
        let unread = super::social::unread_summary(&self.state, &user)
            .await
            .map_err(unavailable)?;
        let welcome = ServerFrame::Welcome {
            session: signed.session.clone(),
            user: self.user.clone(),
            resumed: signed.resumed,
            recovered,
            node: self.state.node_id.clone(),
            limits: self.state.limits.clone(),
            unread,
            cursor: Some(start.to_string()),
        };
        self.write_frame(&welcome).await?;
        if recovered {
            metrics::counter!("chat_recovery_replays_total").increment(1);
            let full = first_page.len() == PAGE;
            for event in first_page {
                self.last_sent = event.id;
                metrics::counter!("chat_messages_delivered_total").increment(1);
                self.write_bytes(event.frame()).await?;
            }
            if full {
                self.catch_up().await?;
            }
        }
        Ok(())
    }

    /// Handles one item from the outbox.
    pub(super) async fn deliver(&mut self, out: Out) -> Result<(), Stop> {
        match out {
            Out::Frame(frame) => self.write_bytes(Bytes::clone(&frame)).await,
            Out::CatchUp => self.catch_up().await,
            Out::Event(event) => self.deliver_event(&event).await,
        }
    }

    async fn deliver_event(&mut self, event: &Arc<Routed>) -> Result<(), Stop> {
        if event.id <= self.last_sent {
            return Ok(());
        }
        if event.prev != self.last_sent {
            // Its predecessor is not here yet: wait a little for it before reading
            // the gap from the inbox (a reconnect, a publish that raced the
            // subscription, or just the other path being slower).
            let held = self.held.get_or_insert_with(|| {
                Box::new(Held {
                    events: Vec::new(),
                    since: Instant::now(),
                })
            });
            if held.events.len() < MAX_HELD {
                if let Err(at) = held.events.binary_search_by_key(&event.id, |e| e.id) {
                    held.events.insert(at, event.clone());
                }
                return Ok(());
            }
            metrics::counter!("chat_gap_reads_total").increment(1);
            self.catch_up().await?;
            if event.id <= self.last_sent {
                return Ok(());
            }
        }
        self.last_sent = event.id;
        metrics::counter!("chat_messages_delivered_total").increment(1);
        self.write_bytes(event.frame.clone()).await?;
        self.write_held_in_order().await
    }

    /// Writes the held events that now follow `last_sent`; drops those at or before it.
    async fn write_held_in_order(&mut self) -> Result<(), Stop> {
        while let Some(held) = self.held.as_mut() {
            held.events.retain(|e| e.id > self.last_sent);
            let next = match held.events.first() {
                Some(first) if first.prev == self.last_sent => held.events.remove(0),
                Some(_) => return Ok(()),
                None => {
                    self.held = None;
                    return Ok(());
                }
            };
            self.last_sent = next.id;
            metrics::counter!("chat_messages_delivered_total").increment(1);
            self.write_bytes(next.frame.clone()).await?;
        }
        Ok(())
    }

    /// The held events waited long enough: read the gap from the inbox.
    pub(super) async fn release_held(&mut self) -> Result<(), Stop> {
        metrics::counter!("chat_gap_reads_total").increment(1);
        self.catch_up().await?;
        self.write_held_in_order().await?;
        if let Some(held) = self.held.as_mut() {
            // Still not contiguous (the read failed): try again after another wait.
            held.since = Instant::now();
        }
        Ok(())
    }

    /// Reads and writes every inbox event after `last_sent`. A backend failure is
    /// logged and left for the next event or resync to retry.
    pub(super) async fn catch_up(&mut self) -> Result<(), Stop> {
        let engine = self.state.engine.clone();
        loop {
            let page = match engine.read_inbox(&self.user.id, self.last_sent, PAGE).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "catch-up read failed; will retry on the next event");
                    return Ok(());
                }
            };
            let full = page.len() == PAGE;
            for event in page {
                if event.id > self.last_sent {
                    self.last_sent = event.id;
                    metrics::counter!("chat_messages_delivered_total").increment(1);
                    self.write_bytes(event.frame()).await?;
                }
            }
            if !full {
                return self.write_held_in_order().await;
            }
        }
    }
}

fn unavailable(e: chat_engine::EngineError) -> Stop {
    tracing::warn!(error = %e, "recovery read failed");
    Stop::Close(chat_protocol::close::INTERNAL, "backend unavailable")
}
