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
//!
//! Files: this one plans and runs the whole thing (sign in, schedule, drain);
//! [`user`] is one user's task; [`outcome`] adds the users' bookkeeping up and merges
//! worker processes' outcomes.

mod outcome;
mod user;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::net::SourceIps;
use crate::record::{self, now_us, Counters, Recorder, SharedRecorder};

pub use outcome::{merge, DmOutcome, PhaseTally};

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
    /// Seconds after the start at which every client drops its socket at once (or, with
    /// `storm_drops_sockets` false, at which the parent kills a node).
    pub storm_at_secs: Option<f64>,
    /// False when the storm is a node killed from outside: the clients then only
    /// notice their connection ending and resume like any client would.
    #[serde(default = "yes")]
    pub storm_drops_sockets: bool,
    /// New connections per second while signing the users in.
    pub connect_rate: f64,
    pub source_ips: u32,
    pub body_bytes: usize,
    pub label: String,
    /// Chaos runs: seconds after the start at which each fault is injected; the
    /// outcome then carries per-phase figures ([`DmOutcome::chaos`]).
    #[serde(default)]
    pub phases_secs: Vec<f64>,
}

fn yes() -> bool {
    true
}

/// What the users learnt while signing in, before any message is sent.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ready {
    pub connected: u64,
    pub connect_failures: u64,
}

/// Identity of one user task, fixed at start.
pub(crate) struct UserSpec {
    pub(crate) global: u64,
    pub(crate) targets: Arc<Vec<String>>,
    pub(crate) username: String,
    pub(crate) nonce_prefix: String,
    pub(crate) source: SourceIps,
    pub(crate) body_bytes: usize,
}

/// Sent to each user task once every user signed in.
pub(crate) struct Go {
    pub(crate) peer_id: Option<String>,
    pub(crate) start: Instant,
    pub(crate) start_us: u64,
    pub(crate) offset: Duration,
    pub(crate) interval: Duration,
    pub(crate) sends: u64,
    pub(crate) storm_at: Option<Duration>,
    pub(crate) storm_drops_sockets: bool,
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
        tasks.push(tokio::spawn(user::user_task(
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
    let progress =
        record::spawn_progress(plan.label.clone(), counters.clone(), Some(recorder.clone()));
    let mut active_senders = 0u64;
    for (i, gtx) in go_tx.into_iter().enumerate() {
        let peer = i ^ 1;
        let peer_id = if ids[i].is_some() {
            ids[peer].clone()
        } else {
            None
        };
        let offset = interval.mul_f64(i as f64 / users.max(1) as f64);
        let sends = if per_user > 0.0 && peer_id.is_some() {
            ((window - offset.as_secs_f64()) / interval.as_secs_f64())
                .ceil()
                .max(0.0) as u64
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
            storm_drops_sockets: plan.storm_drops_sockets,
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
    let chaos = (!plan.phases_secs.is_empty()).then(|| {
        let starts: Vec<u64> = plan
            .phases_secs
            .iter()
            .map(|s| start_us + (s * 1e6) as u64)
            .collect();
        outcome::chaos_tally(&outcomes, &starts)
    });
    let mut out = outcome::combine(outcomes, storm_at_us);
    out.chaos = chaos;
    if per_user > f64::from(send_limit) {
        out.warnings.push(format!(
            "each user sends {per_user:.1} msg/s on its one connection but the nodes allow {send_limit}/s per connection: \
             raise CHAT_LIMITS__SEND_PER_SECOND / SEND_BURST or add users"
        ));
    }
    out.counts.users = users;
    out.elapsed_secs = elapsed;
    if let Ok(r) = recorder.lock() {
        out.latency = r.latency.encode();
        out.ack_latency = r.ack.encode();
        out.timeline = r.timeline.encode();
    }
    Ok(out)
}
