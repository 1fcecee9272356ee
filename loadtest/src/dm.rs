//! The `dm` engine (also behind `ramp` and `reconnect-storm`): users in pairs, each
//! sending to its peer on an open-loop schedule, and the bookkeeping that proves every
//! acked message reached the peer exactly once.
//!
//! Each send has an intended time fixed before the run starts; latency is measured from
//! it, so a stalled connection (or a stalled harness) shows up as latency instead of
//! silently sending less (coordinated omission). The body carries the sequence number
//! and the intended time. One task per user owns its socket: it sends when a send is
//! due, reads everything else, and on a drop (the storm, or an unexpected close)
//! reconnects with session + cursor and resends its unacked messages with the same
//! nonce, as a real client does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use chat_protocol::{ClientFrame, ServerFrame, StreamId};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::net::{self, SourceIps, Ws};
use crate::record::{self, now_us, Counters, Recorder, SharedRecorder};
use crate::stats::{Hist, Timeline};

/// Deadline of one connect + hello.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a dropped client keeps trying to reconnect.
const RECONNECT_FOR: Duration = Duration::from_secs(60);

/// What one harness process runs (the whole run, or one worker's share of it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DmPlan {
    pub targets: Vec<String>,
    /// Distinguishes this run's guest names and nonces from earlier runs'.
    pub run_id: String,
    /// Global index of this process's first user (even: pairs never straddle workers).
    pub first_user: u64,
    /// Users in this process (even).
    pub users: u64,
    /// Messages per second sent by this process's users together.
    pub rate: f64,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub drain_secs: f64,
    /// Seconds after the start at which every client drops its socket at once.
    pub storm_at_secs: Option<f64>,
    /// New connections per second while signing the users in.
    pub connect_rate: f64,
    pub source_ips: u32,
    pub body_bytes: usize,
    pub label: String,
}

/// What the users learnt while signing in, before any message is sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ready {
    pub connected: u64,
    pub connect_failures: u64,
}

/// Everything one process measured; outcomes of several workers merge exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DmOutcome {
    pub users: u64,
    pub connected: u64,
    pub connect_failures: u64,
    pub connect_errors: Vec<String>,
    /// `welcome.node` → users signed in there.
    pub nodes: BTreeMap<String, u64>,
    pub sent: u64,
    pub acked: u64,
    pub send_errors: BTreeMap<String, u64>,
    /// Sent, neither acked nor refused by the end of the drain.
    pub unacked: u64,
    /// Distinct messages the recipients received.
    pub received: u64,
    /// Acked but never received by the recipient.
    pub lost: u64,
    /// The same send stored twice (received, or acked, under two message ids).
    pub duplicated: u64,
    /// The same message id delivered again (allowed: delivery is at-least-once and
    /// clients drop these by id).
    pub redelivered: u64,
    /// Connections that ended without the harness asking.
    pub unexpected_disconnects: u64,
    pub latency: String,
    pub ack_latency: String,
    pub timeline: Vec<String>,
    /// From the first intended send to the end of the drain.
    pub elapsed_secs: f64,
    pub storm: Option<StormOutcome>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormOutcome {
    pub dropped: u64,
    pub reconnected: u64,
    /// Reconnected with `recovered: false` (the cursor was no longer retained).
    pub not_recovered: u64,
    pub reconnect_failures: u64,
    /// From the drop to the last client's `welcome`.
    pub all_recovered_ms: f64,
    pub recovery: String,
    /// Sends intended between the drop and the last client's recovery.
    pub sent_during: u64,
    pub acked_during: u64,
    pub received_during: u64,
    pub lost_during: u64,
}

/// One send of one user.
struct SendRecord {
    intended_us: u64,
    /// Message id from the ack.
    acked_id: Option<String>,
    error: Option<String>,
}

/// What one user task hands back.
#[derive(Default)]
struct UserOutcome {
    records: Vec<SendRecord>,
    /// Peer's seq → message id, as received.
    received: HashMap<u64, String>,
    duplicated: u64,
    redelivered: u64,
    unexpected_disconnects: u64,
    storm: Option<UserStorm>,
    node: Option<String>,
    connect_error: Option<String>,
}

struct UserStorm {
    /// µs from the drop to the welcome; `None` when it never came back.
    recovered_after_us: Option<u64>,
    recovered: bool,
}

/// Identity of one user task, fixed at start.
struct UserSpec {
    global: u64,
    targets: Arc<Vec<String>>,
    username: String,
    nonce_prefix: String,
    source: SourceIps,
    body_bytes: usize,
}

/// Sent to each user task once every user signed in.
struct Go {
    peer_id: Option<String>,
    start: Instant,
    start_us: u64,
    offset: Duration,
    interval: Duration,
    sends: u64,
    storm_at: Option<Duration>,
}

/// Runs the plan: signs every user in, reports `ready`, waits for `go`, sends, drains.
pub async fn run(
    plan: DmPlan,
    ready: oneshot::Sender<Ready>,
    go: oneshot::Receiver<()>,
) -> Result<DmOutcome> {
    let users = plan.users - plan.users % 2;
    let counters = Arc::new(Counters::default());
    let targets = Arc::new(plan.targets.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let progress = record::spawn_progress(plan.label.clone(), counters.clone(), None);

    // Sign in at the connect rate; each task reports its user id and waits for `go`.
    let mut tasks = Vec::new();
    let mut id_rx = Vec::new();
    let mut go_tx = Vec::new();
    let recorder_slot: Arc<std::sync::OnceLock<SharedRecorder>> = Arc::default();
    let setup_start = Instant::now();
    for i in 0..users {
        let due = setup_start + Duration::from_secs_f64(i as f64 / plan.connect_rate.max(1.0));
        tokio::time::sleep_until(due).await;
        let global = plan.first_user + i;
        let spec = UserSpec {
            global,
            targets: targets.clone(),
            username: format!("lt-{}-{global}", plan.run_id),
            nonce_prefix: format!("{}-{global}", plan.run_id),
            source: SourceIps {
                count: plan.source_ips,
                offset: 0,
            },
            body_bytes: plan.body_bytes,
        };
        let (itx, irx) = oneshot::channel();
        let (gtx, grx) = oneshot::channel();
        id_rx.push(irx);
        go_tx.push(gtx);
        tasks.push(tokio::spawn(user_task(
            spec,
            itx,
            grx,
            counters.clone(),
            recorder_slot.clone(),
            stop_rx.clone(),
        )));
    }
    let mut ids = Vec::new();
    let mut send_limit = u32::MAX;
    for rx in id_rx {
        let signed_in = rx.await.ok().flatten();
        if let Some((_, limit)) = &signed_in {
            send_limit = send_limit.min(*limit);
        }
        ids.push(signed_in.map(|(id, _)| id));
    }
    let connected = ids.iter().filter(|i| i.is_some()).count() as u64;
    let _ = ready.send(Ready {
        connected,
        connect_failures: users - connected,
    });
    let _ = go.await;

    // The schedule: each user sends every `interval`, users offset evenly across it.
    let window = plan.warmup_secs + plan.duration_secs;
    let per_user = plan.rate / users.max(1) as f64;
    let interval = Duration::from_secs_f64(1.0 / per_user.max(1e-6));
    let lead = Duration::from_millis(200);
    let start = Instant::now() + lead;
    let start_us = now_us() + lead.as_micros() as u64;
    let recorder = Recorder::new(start_us, start_us + (plan.warmup_secs * 1e6) as u64);
    let _ = recorder_slot.set(recorder.clone());
    progress.abort();
    let progress = record::spawn_progress(plan.label.clone(), counters.clone(), Some(recorder.clone()));
    let mut active_senders = 0u64;
    for (i, gtx) in go_tx.into_iter().enumerate() {
        let peer = i ^ 1;
        let peer_id = if ids[i].is_some() { ids[peer].clone() } else { None };
        let offset = interval.mul_f64(i as f64 / users.max(1) as f64);
        let sends = if per_user > 0.0 && peer_id.is_some() {
            ((window - offset.as_secs_f64()) / interval.as_secs_f64()).ceil().max(0.0) as u64
        } else {
            0
        };
        if sends > 0 {
            active_senders += 1;
        }
        let _ = gtx.send(Go {
            peer_id,
            start,
            start_us,
            offset,
            interval,
            sends,
            storm_at: plan.storm_at_secs.map(Duration::from_secs_f64),
        });
    }

    // Drain: stop once every send is answered and every acked message arrived, or at
    // the drain deadline (what is missing then is lost).
    let window_end = start + Duration::from_secs_f64(window);
    tokio::time::sleep_until(window_end).await;
    let deadline = Instant::now() + Duration::from_secs_f64(plan.drain_secs);
    loop {
        let c = &counters;
        let sent = Counters::get(&c.sent);
        let answered = Counters::get(&c.acked) + Counters::get(&c.errors);
        let done = Counters::get(&c.senders_done) >= active_senders
            && answered >= sent
            && Counters::get(&c.received) >= Counters::get(&c.acked);
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap_or_default());
    }
    progress.abort();
    let storm_at_us = plan.storm_at_secs.map(|s| start_us + (s * 1e6) as u64);
    let mut out = combine(outcomes, storm_at_us);
    if per_user > f64::from(send_limit) {
        out.warnings.push(format!(
            "each user sends {per_user:.1} msg/s but the nodes allow {send_limit}/s per user: \
             raise CHAT_LIMITS__SEND_PER_SECOND / SEND_BURST or add users"
        ));
    }
    out.users = users;
    out.elapsed_secs = elapsed;
    if let Ok(r) = recorder.lock() {
        out.latency = r.latency.encode();
        out.ack_latency = r.ack.encode();
        out.timeline = r.timeline.encode();
    }
    Ok(out)
}

/// Adds up the users' outcomes; lost messages are found pair by pair.
fn combine(users: Vec<UserOutcome>, storm_at_us: Option<u64>) -> DmOutcome {
    let mut out = DmOutcome::default();
    let mut recovery = Hist::default();
    let mut storm = storm_at_us.map(|_| StormOutcome::default());
    let mut storm_end_us = 0u64;
    for u in &users {
        if let (Some(s), Some(us)) = (storm.as_mut(), &u.storm) {
            s.dropped += 1;
            match us.recovered_after_us {
                Some(after) => {
                    s.reconnected += 1;
                    recovery.record_us(after);
                    storm_end_us = storm_end_us.max(after);
                    s.not_recovered += u64::from(!us.recovered);
                }
                None => s.reconnect_failures += 1,
            }
        }
    }
    for (i, u) in users.iter().enumerate() {
        match (&u.node, &u.connect_error) {
            (Some(node), _) => {
                out.connected += 1;
                *out.nodes.entry(node.clone()).or_default() += 1;
            }
            (None, err) => {
                out.connect_failures += 1;
                if out.connect_errors.len() < 5 {
                    out.connect_errors.push(err.clone().unwrap_or_default());
                }
            }
        }
        let peer = &users[i ^ 1];
        out.duplicated += u.duplicated;
        out.redelivered += u.redelivered;
        out.unexpected_disconnects += u.unexpected_disconnects;
        out.received += u.received.len() as u64;
        for (seq, r) in u.records.iter().enumerate() {
            let in_storm = storm_at_us.is_some_and(|at| {
                r.intended_us >= at && r.intended_us <= at + storm_end_us
            });
            out.sent += 1;
            match (&r.acked_id, &r.error) {
                (Some(_), _) => out.acked += 1,
                (None, Some(code)) => *out.send_errors.entry(code.clone()).or_default() += 1,
                (None, None) => out.unacked += 1,
            }
            let got = peer.received.get(&(seq as u64));
            if r.acked_id.is_some() && got.is_none() {
                out.lost += 1;
            }
            if let (Some(a), Some(g)) = (&r.acked_id, got) {
                // Received under another id than the ack's: stored twice.
                out.duplicated += u64::from(a != g);
            }
            if let Some(s) = storm.as_mut().filter(|_| in_storm) {
                s.sent_during += 1;
                s.acked_during += u64::from(r.acked_id.is_some());
                s.received_during += u64::from(got.is_some());
                s.lost_during += u64::from(r.acked_id.is_some() && got.is_none());
            }
        }
    }
    if let Some(s) = storm.as_mut() {
        s.all_recovered_ms = storm_end_us as f64 / 1000.0;
        s.recovery = recovery.encode();
    }
    out.storm = storm;
    out
}

/// One user's whole life: sign in, report, wait for `go`, send and receive, drop and
/// resume when told, stop when the run stops.
async fn user_task(
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
        let w = net::hello(&mut ws, net::guest_hello(spec.username.clone()), CONNECT_TIMEOUT).await?;
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
    let Some(rec) = recorder.get().cloned() else { return out };
    let peer = go.peer_id.clone().unwrap_or_default();

    let mut next_seq = 0u64;
    let mut inflight: BTreeSet<u64> = BTreeSet::new();
    let mut storm_at = go.storm_at.map(|d| go.start + d);
    let mut dropped_at: Option<Instant> = None;
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
                    if let Some(at) = dropped_at.take() {
                        out.storm = Some(UserStorm {
                            recovered_after_us: Some(at.elapsed().as_micros() as u64),
                            recovered: w.recovered,
                        });
                    }
                    if !w.recovered {
                        if let Some(c) = w.cursor {
                            advance(&mut cursor, &c);
                        }
                    }
                    ws = Some(new_ws);
                    // Resend what was never acked, with its nonce: stored at most once.
                    for &seq in &inflight {
                        let body = body(seq, out.records[seq as usize].intended_us, spec.body_bytes);
                        let frame = send_frame(&spec, &peer, seq, body);
                        if let Some(w) = ws.as_mut() {
                            if net::send(w, &frame).await.is_err() {
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
                    ws = None;
                }
            }
            msg = socket.next() => {
                let text = match msg {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => {
                        out.unexpected_disconnects += 1;
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
        let jitter = (spec.global % 100) as u64;
        tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt.min(10)) + jitter)).await;
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
            let Some(seq) = parse_ref(reference.as_deref()) else { return };
            let Some(r) = out.records.get_mut(seq as usize) else { return };
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
        ServerFrame::Error { reference, code, .. } => {
            let Some(seq) = parse_ref(reference.as_deref()) else { return };
            if let Some(r) = out.records.get_mut(seq as usize) {
                if r.acked_id.is_none() && r.error.is_none() {
                    r.error = Some(format!("{code:?}"));
                    Counters::inc(&counters.errors);
                }
            }
            inflight.remove(&seq);
        }
        ServerFrame::Message { message, cursor: c } => {
            advance(cursor, &c);
            if message.from == me {
                return;
            }
            let Some((seq, intended_us)) = parse_body(&message.body) else { return };
            match out.received.get(&seq) {
                Some(id) if *id == message.id => out.redelivered += 1,
                Some(_) => out.duplicated += 1,
                None => {
                    out.received.insert(seq, message.id);
                    Counters::inc(&counters.received);
                    record::record_delivery(rec, intended_us, now);
                }
            }
        }
        ServerFrame::Read { cursor: Some(c), .. } => advance(cursor, &c),
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

/// Moves the cursor forward only (stream ids compare numerically).
fn advance(current: &mut Option<String>, new: &str) {
    let newer = match (current.as_deref().and_then(StreamId::parse), StreamId::parse(new)) {
        (Some(old), Some(new)) => new > old,
        _ => true,
    };
    if newer {
        *current = Some(new.to_string());
    }
}

/// Adds `other` (another worker's outcome) into `into`.
pub fn merge(into: &mut DmOutcome, other: DmOutcome) -> Result<()> {
    let add_hist = |a: &mut String, b: &str| -> Result<()> {
        let mut h = if a.is_empty() { Hist::default() } else { Hist::decode(a)? };
        if !b.is_empty() {
            h.add(&Hist::decode(b)?);
        }
        *a = h.encode();
        Ok(())
    };
    into.users += other.users;
    into.connected += other.connected;
    into.connect_failures += other.connect_failures;
    into.connect_errors.extend(other.connect_errors);
    into.connect_errors.truncate(10);
    for (k, v) in other.nodes {
        *into.nodes.entry(k).or_default() += v;
    }
    into.sent += other.sent;
    into.acked += other.acked;
    for (k, v) in other.send_errors {
        *into.send_errors.entry(k).or_default() += v;
    }
    into.unacked += other.unacked;
    into.received += other.received;
    into.lost += other.lost;
    into.duplicated += other.duplicated;
    into.redelivered += other.redelivered;
    into.unexpected_disconnects += other.unexpected_disconnects;
    add_hist(&mut into.latency, &other.latency)?;
    add_hist(&mut into.ack_latency, &other.ack_latency)?;
    let mut tl = Timeline::decode(&into.timeline)?;
    tl.add(&Timeline::decode(&other.timeline)?);
    into.timeline = tl.encode();
    into.elapsed_secs = into.elapsed_secs.max(other.elapsed_secs);
    into.warnings.extend(other.warnings);
    match (&mut into.storm, other.storm) {
        (Some(a), Some(b)) => {
            a.dropped += b.dropped;
            a.reconnected += b.reconnected;
            a.not_recovered += b.not_recovered;
            a.reconnect_failures += b.reconnect_failures;
            a.all_recovered_ms = a.all_recovered_ms.max(b.all_recovered_ms);
            add_hist(&mut a.recovery, &b.recovery)?;
            a.sent_during += b.sent_during;
            a.acked_during += b.acked_during;
            a.received_during += b.received_during;
            a.lost_during += b.lost_during;
        }
        (a @ None, b) => *a = b,
        _ => {}
    }
    Ok(())
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

    fn user(records: Vec<Option<&str>>, received: &[(u64, &str)]) -> UserOutcome {
        UserOutcome {
            records: records
                .into_iter()
                .map(|id| SendRecord {
                    intended_us: 0,
                    acked_id: id.map(str::to_string),
                    error: None,
                })
                .collect(),
            received: received.iter().map(|(s, id)| (*s, id.to_string())).collect(),
            node: Some("n".into()),
            ..Default::default()
        }
    }

    #[test]
    fn lost_and_duplicated_are_found_per_pair() {
        // User 0 sent 3 (all acked); user 1 got seq 0 and seq 1 under another id.
        let a = user(vec![Some("1-0"), Some("2-0"), Some("3-0")], &[]);
        let b = user(vec![], &[(0, "1-0"), (1, "9-9")]);
        let out = combine(vec![a, b], None);
        assert_eq!(out.sent, 3);
        assert_eq!(out.acked, 3);
        assert_eq!(out.received, 2);
        assert_eq!(out.lost, 1);
        assert_eq!(out.duplicated, 1);
    }
}
