//! Batching of sends on a single Redis: one `FCALL chat_send` carries every send that
//! arrived while the previous calls were in flight.
//!
//! A send is queued with a reply channel; one task per engine takes the first queued
//! send, everything queued behind it (up to [`MAX_BATCH`]), and issues them as one
//! call, with at most [`IN_FLIGHT`] calls in flight. It never waits for more: an idle
//! node sends a lone message at once, and under load the batch grows by itself with
//! the round trip, so the function entry, the
//! argument and reply conversions, and the socket reads and writes of Redis (its
//! replies and the pub/sub deliveries to each subscribed node) are paid once per batch
//! instead of once per message. The sends of one batch run in queue order, atomically,
//! inside the function. [`send_batch`] is that call.

use std::sync::{Arc, Weak};

use tokio::sync::{mpsc, oneshot, Semaphore};

use chat_protocol::Event;

use super::functions::send;
use super::shape::Sent;
use super::Core;
use crate::events::now_ms;
use crate::{EngineError, InboxEvent, SendOutcome, SendRequest};

/// The most sends one call carries.
pub(crate) const MAX_BATCH: usize = 64;
/// Calls in flight at once, one per pooled connection: below that a send starts at
/// once (a single call in flight made a send arriving just after it wait a whole round
/// trip, and raised p99); once that many are out, the sends queue and go as batches.
/// Measured (BENCHMARKS.md, 2026-12-04): with 4 the ramp reached 12,000 msg/s, with 2
/// 8,000–9,000, with 1 8,000.
pub(crate) const IN_FLIGHT: usize = 4;
/// Sends that may wait for a call (callers wait for room beyond that).
const QUEUE: usize = 4096;

/// A queued send and where its outcome goes.
struct Pending {
    request: SendRequest,
    /// The sender is subscribed on this node (see [`super::shape::Shape::send`]).
    local: bool,
    reply: oneshot::Sender<Result<Sent, EngineError>>,
}

/// The queue in front of the batching task.
pub(crate) struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the batching task for `engine` (it ends when the engine is dropped).
    pub(crate) fn start(engine: Weak<Core>) -> Batcher {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(engine, rx));
        Batcher { queue }
    }

    /// Sends `request` in the next call and waits for its outcome.
    pub(crate) async fn send(
        &self,
        request: SendRequest,
        local: bool,
    ) -> Result<Sent, EngineError> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || EngineError::Unavailable("the engine is shutting down".into());
        self.queue
            .send(Pending {
                request,
                local,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// The batching loop: at most [`IN_FLIGHT`] calls at a time.
async fn run(engine: Weak<Core>, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let Some(first) = rx.recv().await else {
            break;
        };
        let mut batch = Vec::with_capacity(MAX_BATCH);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let Some(engine) = engine.upgrade() else {
            break;
        };
        tokio::spawn(async move {
            let requests: Vec<(&SendRequest, bool)> =
                batch.iter().map(|p| (&p.request, p.local)).collect();
            let outcomes = send_batch(&engine, &requests, now_ms()).await;
            drop(requests);
            drop(engine);
            drop(slot);
            match outcomes {
                Ok(outcomes) => {
                    for (pending, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = pending.reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    for pending in batch {
                        let _ = pending.reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// One `chat_send` call storing and delivering `requests` in order; each request with
/// whether its sender is subscribed on this node.
/// `now_ms`: this node's clock, for the history age limit.
async fn send_batch(
    core: &Core,
    requests: &[(&SendRequest, bool)],
    now_ms: u64,
) -> Result<Vec<Sent>, EngineError> {
    let (keys, args) = send::send_call(
        requests.iter().copied(),
        &core.node_id,
        &core.retention,
        now_ms,
    );
    // With nonces a retried call is harmless; without one, never write it twice.
    let opts = if requests.iter().all(|(r, _)| r.nonce.is_some()) {
        &core.opts
    } else {
        &core.once
    };
    let reply = core.fcall(send::SEND, &keys, &args, opts).await?;
    let replies = send::parse_send_reply(reply, requests)?;
    Ok(requests
        .iter()
        .zip(replies)
        .map(|((_, local), reply)| {
            let send::SendReply {
                duplicate,
                message,
                sender_entry,
            } = reply;
            let own = sender_entry
                .filter(|_| *local && !duplicate)
                .map(|(id, prev)| InboxEvent {
                    id,
                    prev,
                    json: bytes::Bytes::from(Event::Message { message: &message }.to_json()),
                    trace: None,
                });
            Sent {
                outcome: SendOutcome { message, duplicate },
                own,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_copied_with_their_kind() {
        assert!(matches!(
            EngineError::Unavailable("x".into()).clone(),
            EngineError::Unavailable(w) if w == "x"
        ));
        assert!(matches!(
            EngineError::Refused { refusal: crate::WriteRefusal::OutOfMemory, reason: "z".into() }.clone(),
            EngineError::Refused { refusal: crate::WriteRefusal::OutOfMemory, reason } if reason == "z"
        ));
        assert!(matches!(
            EngineError::Internal("y".into()).clone(),
            EngineError::Internal(w) if w == "y"
        ));
    }

    // Every key and argument of a full batch, well under Redis's and Lua's limits.
    const _: () = assert!(MAX_BATCH * (send::SEND_KEYS + send::SEND_ARGS) < 8000);
}
