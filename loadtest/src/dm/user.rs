//! One user's task: it owns its socket, sends on its schedule, reads everything else,
//! and after a drop resumes (session + cursor) on the next target, resending its
//! unacked sends with their nonce.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chat_protocol::{ClientFrame, ServerFrame};
use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::outcome::{SendRecord, UserOutcome, UserStorm};
use super::{Go, UserSpec};
use crate::net::{self, Ws};
use crate::record::{self, now_us, Counters, SharedRecorder};

/// Deadline of one connect + hello.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a dropped client keeps trying to reconnect.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// One user's whole life: sign in, report, wait for `go`, send and receive, drop and
/// resume when told, stop when the run stops.
pub(super) async fn user_task(
    spec: UserSpec,
    id_tx: oneshot::Sender<Option<(String, u32)>>,
    go_rx: oneshot::Receiver<Go>,
    counters: Arc<Counters>,
    recorder: Arc<std::sync::OnceLock<SharedRecorder>>,
    mut stop: watch::Receiver<bool>,
) -> UserOutcome {
    let mut out = UserOutcome::default();
    let n_targets = spec.targets.len().max(1);
    let mut target = (spec.global as usize) % n_targets;
    let source = spec.source.pick(spec.global);
    let signin = async {
        let mut ws = net::open(&spec.targets[target], source).await?;
        let w = net::hello(
            &mut ws,
            net::guest_hello(spec.username.clone()),
            CONNECT_TIMEOUT,
        )
        .await?;
        anyhow::Ok((ws, w))
    };
    let (ws, welcome) = match tokio::time::timeout(CONNECT_TIMEOUT, signin).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return failed(out, &counters, id_tx, format!("{e:#}")),
        Err(_) => return failed(out, &counters, id_tx, "connect + hello timed out".into()),
    };
    Counters::inc(&counters.connected);
    out.node = Some(welcome.node.clone());
    let _ = id_tx.send(Some((welcome.user_id.clone(), welcome.send_per_second)));
    let me = welcome.user_id.clone();
    let session = welcome.session.clone();
    let mut cursor = welcome.cursor.clone();
    let mut ws: Option<Ws> = Some(ws);
    let Ok(go) = go_rx.await else { return out };
    let Some(rec) = recorder.get().cloned() else {
        return out;
    };
    let peer = go.peer_id.clone().unwrap_or_default();

    let mut next_seq = 0u64;
    let mut inflight: BTreeSet<u64> = BTreeSet::new();
    let storm_instant = go.storm_at.map(|d| go.start + d);
    let mut storm_at = storm_instant.filter(|_| go.storm_drops_sockets);
    let mut dropped_at: Option<Instant> = None;
    // A node killed from outside: the first disconnect after the storm instant is the
    // storm for this user, and its recovery is timed from that instant.
    let lost_to_kill = |out: &UserOutcome, dropped_at: &mut Option<Instant>| {
        if !go.storm_drops_sockets && out.storm.is_none() && dropped_at.is_none() {
            if let Some(t) = storm_instant.filter(|t| Instant::now() >= *t) {
                *dropped_at = Some(t);
            }
        }
    };
    let mut reported_done = go.sends == 0;
    if reported_done {
        Counters::inc(&counters.senders_done);
    }
    let far = go.start + Duration::from_secs(86_400);

    loop {
        if ws.is_none() {
            // Dropped (storm or unexpected): resume on the next node with the cursor.
            target = (target + 1) % n_targets;
            match reconnect(&spec, target, source, &session, cursor.clone(), &mut stop).await {
                Some((new_ws, w)) => {
                    if let Some(d) = out.drops.last_mut().filter(|d| d.1.is_none()) {
                        d.1 = Some(now_us().saturating_sub(d.0));
                    }
                    if let Some(at) = dropped_at.take() {
                        out.storm = Some(UserStorm {
                            recovered_after_us: Some(at.elapsed().as_micros() as u64),
                            recovered: w.recovered,
                        });
                    }
                    if !w.recovered {
                        if let Some(c) = w.cursor {
                            chat_client::advance_cursor(&mut cursor, &c);
                        }
                    }
                    ws = Some(new_ws);
                    // Resend what was never acked, with its nonce: stored at most once.
                    for &seq in &inflight {
                        let body =
                            body(seq, out.records[seq as usize].intended_us, spec.body_bytes);
                        let frame = send_frame(&spec, &peer, seq, body);
                        if let Some(w) = ws.as_mut() {
                            if net::send(w, &frame).await.is_err() {
                                out.drops.push((now_us(), None));
                                ws = None;
                                break;
                            }
                        }
                    }
                    continue;
                }
                None => {
                    if dropped_at.take().is_some() {
                        out.storm = Some(UserStorm {
                            recovered_after_us: None,
                            recovered: false,
                        });
                    }
                    break;
                }
            }
        }
        let Some(socket) = ws.as_mut() else { break };
        let due = if next_seq < go.sends {
            go.start + go.offset + go.interval.mul_f64(next_seq as f64)
        } else {
            far
        };
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(storm_at.unwrap_or(far)), if storm_at.is_some() => {
                storm_at = None;
                dropped_at = Some(Instant::now());
                // Close the TCP socket without a close handshake: as a network drop.
                ws = None;
            }
            _ = tokio::time::sleep_until(due), if next_seq < go.sends => {
                let seq = next_seq;
                next_seq += 1;
                let intended_us = go.start_us + (go.offset + go.interval.mul_f64(seq as f64)).as_micros() as u64;
                out.records.push(SendRecord { intended_us, acked_id: None, error: None });
                inflight.insert(seq);
                Counters::inc(&counters.sent);
                let frame = send_frame(&spec, &peer, seq, body(seq, intended_us, spec.body_bytes));
                if net::send(socket, &frame).await.is_err() {
                    out.unexpected_disconnects += 1;
                    out.drops.push((now_us(), None));
                    lost_to_kill(&out, &mut dropped_at);
                    ws = None;
                }
            }
            msg = socket.next() => {
                let text = match msg {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => {
                        out.unexpected_disconnects += 1;
                        out.drops.push((now_us(), None));
                        lost_to_kill(&out, &mut dropped_at);
                        ws = None;
                        continue;
                    }
                    Some(Ok(_)) => continue,
                };
                let Ok(frame) = serde_json::from_str::<ServerFrame>(&text) else { continue };
                handle(frame, &me, &mut out, &mut inflight, &mut cursor, &counters, &rec);
            }
        }
        if !reported_done && next_seq >= go.sends && inflight.is_empty() {
            reported_done = true;
            Counters::inc(&counters.senders_done);
        }
    }
    if let Some(mut s) = ws {
        let _ = s.close(None).await;
    }
    out
}

fn failed(
    mut out: UserOutcome,
    counters: &Counters,
    id_tx: oneshot::Sender<Option<(String, u32)>>,
    error: String,
) -> UserOutcome {
    Counters::inc(&counters.connect_failures);
    out.connect_error = Some(error);
    let _ = id_tx.send(None);
    out
}

/// Resumes the session on `targets[target]`, retrying with a short randomized backoff.
async fn reconnect(
    spec: &UserSpec,
    target: usize,
    source: Option<std::net::Ipv4Addr>,
    session: &str,
    cursor: Option<String>,
    stop: &mut watch::Receiver<bool>,
) -> Option<(Ws, net::Welcome)> {
    let give_up = Instant::now() + RECONNECT_FOR;
    let mut attempt = 0u32;
    while Instant::now() < give_up && !*stop.borrow() {
        let url = &spec.targets[(target + attempt as usize) % spec.targets.len()];
        let hello = net::resume_hello(session.to_string(), cursor.clone());
        let attempt_fut = async {
            let mut ws = net::open(url, source).await?;
            let w = net::hello(&mut ws, hello, CONNECT_TIMEOUT).await?;
            anyhow::Ok((ws, w))
        };
        if let Ok(Ok(v)) = tokio::time::timeout(CONNECT_TIMEOUT, attempt_fut).await {
            return Some(v);
        }
        attempt += 1;
        let jitter = spec.global % 100;
        tokio::time::sleep(Duration::from_millis(
            100 * u64::from(attempt.min(10)) + jitter,
        ))
        .await;
    }
    None
}

/// Applies one server frame to a user's bookkeeping.
fn handle(
    frame: ServerFrame,
    me: &str,
    out: &mut UserOutcome,
    inflight: &mut BTreeSet<u64>,
    cursor: &mut Option<String>,
    counters: &Counters,
    rec: &SharedRecorder,
) {
    let now = now_us();
    match frame {
        ServerFrame::Ack { reference, message } => {
            let Some(seq) = parse_ref(reference.as_deref()) else {
                return;
            };
            let Some(r) = out.records.get_mut(seq as usize) else {
                return;
            };
            match &r.acked_id {
                Some(id) if *id != message.id => out.duplicated += 1,
                Some(_) => {}
                None => {
                    if r.error.is_none() {
                        Counters::inc(&counters.acked);
                    }
                    r.acked_id = Some(message.id);
                    record::record_ack(rec, r.intended_us, now);
                }
            }
            inflight.remove(&seq);
        }
        ServerFrame::Error {
            reference, code, ..
        } => {
            let Some(seq) = parse_ref(reference.as_deref()) else {
                return;
            };
            if let Some(r) = out.records.get_mut(seq as usize) {
                if r.acked_id.is_none() && r.error.is_none() {
                    r.error = Some(format!("{code:?}"));
                    Counters::inc(&counters.errors);
                }
            }
            inflight.remove(&seq);
        }
        ServerFrame::Message { message, cursor: c } => {
            chat_client::advance_cursor(cursor, &c);
            if message.from == me {
                return;
            }
            let Some((seq, intended_us)) = parse_body(&message.body) else {
                return;
            };
            match out.received.get(&seq) {
                Some(id) if *id == message.id => out.redelivered += 1,
                Some(_) => {
                    out.duplicated += 1;
                    out.dup_seqs.push(seq);
                }
                None => {
                    // The peer sends in sequence order, so a new message with a lower
                    // sequence number than one already delivered arrived out of order.
                    if out.last_seq.is_some_and(|last| seq < last) {
                        out.ooo_seqs.push(seq);
                    }
                    out.last_seq = Some(out.last_seq.map_or(seq, |l| l.max(seq)));
                    out.delivered_at.insert(seq, now);
                    out.received.insert(seq, message.id);
                    Counters::inc(&counters.received);
                    record::record_delivery(rec, intended_us, now);
                }
            }
        }
        ServerFrame::Read {
            cursor: Some(c), ..
        } => chat_client::advance_cursor(cursor, &c),
        _ => {}
    }
}

fn send_frame(spec: &UserSpec, peer: &str, seq: u64, body: String) -> ClientFrame {
    ClientFrame::Send {
        reference: Some(format!("s{seq}")),
        to: peer.to_string(),
        body,
        nonce: Some(format!("{}-{seq}", spec.nonce_prefix)),
    }
}

/// `lt <seq> <intended µs>` and optional padding up to `bytes`.
fn body(seq: u64, intended_us: u64, bytes: usize) -> String {
    let mut b = format!("lt {seq} {intended_us}");
    if b.len() + 1 < bytes {
        b.push(' ');
        b.extend(std::iter::repeat_n('x', bytes - b.len()));
    }
    b
}

fn parse_body(body: &str) -> Option<(u64, u64)> {
    let mut parts = body.split(' ');
    (parts.next()? == "lt").then_some(())?;
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn parse_ref(reference: Option<&str>) -> Option<u64> {
    reference?.strip_prefix('s')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trips_and_pads() {
        let b = body(7, 123456, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(parse_body(&b), Some((7, 123456)));
        assert_eq!(parse_body(&body(1, 2, 0)), Some((1, 2)));
        assert_eq!(parse_body("hello"), None);
        assert_eq!(parse_ref(Some("s42")), Some(42));
    }
}
