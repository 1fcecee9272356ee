//! Getting inbox events to the client exactly in order: live events checked against
//! the `prev` chain, with a catch-up read from the inbox whenever a gap shows (the
//! recovery replay after `hello.last_seen` is `welcome.rs`; it leaves `last_sent` where
//! live delivery starts).
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
use tokio::time::Instant;

use super::{Conn, Socket, Stop, TRY_AGAIN};
use crate::router::{Out, Routed};

/// Inbox entries read per round trip during replay and catch-up.
pub(super) const PAGE: usize = 200;
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
    /// Handles one item from the outbox.
    pub(super) async fn deliver(&mut self, out: Out) -> Result<(), Stop> {
        match out {
            Out::Frame(frame) => self.write_bytes(Bytes::clone(&frame)).await,
            Out::CatchUp => {
                self.catch_up().await?;
                self.catch_up_rooms().await
            }
            Out::Room(room) => self.deliver_room(room).await,
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
            metrics::counter!(crate::metric::GAP_READS).increment(1);
            self.catch_up().await?;
            if event.id <= self.last_sent {
                return Ok(());
            }
            if event.prev != self.last_sent {
                // The gap could not be read (the backend failed) and no more can be
                // held: writing this event would move `last_sent` past events the
                // client never got. Close instead; the client resumes from its
                // cursor and the recovery replay fills the gap.
                metrics::counter!(crate::metric::GAP_CLOSES).increment(1);
                tracing::warn!("closing: a gap in the live events could not be filled");
                return Err(Stop::Close(TRY_AGAIN, "delivery gap: resume"));
            }
        }
        self.last_sent = event.id;
        metrics::counter!(crate::metric::MESSAGES_DELIVERED).increment(1);
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
            metrics::counter!(crate::metric::MESSAGES_DELIVERED).increment(1);
            self.write_bytes(next.frame.clone()).await?;
        }
        Ok(())
    }

    /// The held events waited long enough: read the gap from the inbox.
    pub(super) async fn release_held(&mut self) -> Result<(), Stop> {
        metrics::counter!(crate::metric::GAP_READS).increment(1);
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
                    metrics::counter!(crate::metric::MESSAGES_DELIVERED).increment(1);
                    self.write_bytes(event.frame()).await?;
                }
            }
            if !full {
                return self.write_held_in_order().await;
            }
        }
    }
}

#[cfg(test)]
mod tests;
