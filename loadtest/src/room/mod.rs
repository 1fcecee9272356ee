//! The `room` scenario: R rooms of M guest members, members spread over the targets
//! round-robin, S messages per second per room sent by the members in turn, and the
//! bookkeeping that proves every connection of every member received every acked room
//! message exactly once and in the room's order.
//!
//! Runs in this process (one task per member, as `dm` does per user). Each room message
//! has an intended time fixed before the run; latency at every member is measured from
//! it (no coordinated omission). The body carries the room index, the message's number
//! in the room and the intended time.
//!
//! Files: this one plans and runs the whole thing (sign in, join, schedule, tally);
//! [`member`] is one member's task.

mod member;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::cli::{Global, RoomArgs};
use crate::net::SourceIps;
use crate::probe::{self, CpuReport, CpuWindow, RedisSnapshot};
use crate::record::{self, now_us, Counters, SharedRecorder};
use crate::report::{RedisCpu, RedisIdle, RoomResult, Throughput};
use crate::scenario::Done;

/// What one member task knows at start.
///
/// Joining is slow on purpose for big rooms: every join sends a `member` event to every
/// member already in, so M members joining at C/s cause up to C × M frames per second
/// during setup; a harness that cannot read them fast enough gets its connections closed
/// as slow consumers (lower `--connect-rate`).
struct MemberSpec {
    room: u64,
    room_id: String,
    target: String,
    username: String,
    nonce_prefix: String,
    source: Option<std::net::Ipv4Addr>,
}

/// The schedule handed to a member once every member joined.
struct Go {
    start: Instant,
    start_us: u64,
    /// The room's first message is due at `start + offset`, one every `interval`.
    offset: Duration,
    interval: Duration,
    /// Message numbers this member sends (k with k % M == its place in the room).
    sends: Vec<u64>,
}

/// One member's bookkeeping.
#[derive(Default)]
struct MemberOutcome {
    room: u64,
    connected: bool,
    connect_error: Option<String>,
    node: Option<String>,
    /// k → acked message id, for the messages this member sent.
    acked: BTreeMap<u64, String>,
    sent: u64,
    errors: BTreeMap<String, u64>,
    /// k → message id as received.
    received: BTreeMap<u64, String>,
    duplicated: u64,
    out_of_order: u64,
    disconnected: bool,
}

/// Runs the scenario and measures CPU and Redis around the sending window.
pub async fn room(g: &Global, a: &RoomArgs) -> Result<Done<RoomResult>> {
    if a.rooms == 0 || a.members == 0 {
        bail!("room needs at least one room of at least one member");
    }
    if g.workers > 1 {
        eprintln!("chat-loadtest: room runs in this process; --workers is ignored");
    }
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let total = a.rooms * a.members;
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let label = "[room]".to_string();
    let progress = record::spawn_progress(label.clone(), counters.clone(), None);
    let recorder_slot: Arc<std::sync::OnceLock<SharedRecorder>> = Arc::default();
    let room_acked: Arc<Vec<AtomicU64>> =
        Arc::new((0..a.rooms).map(|_| AtomicU64::new(0)).collect());
    let source = SourceIps {
        count: g.source_ips,
        offset: 0,
    };
    let n_targets = g.targets.len().max(1);
    let mut tasks = Vec::new();
    let mut ready_rx = Vec::new();
    let mut go_tx = Vec::new();
    let setup = Instant::now();
    // Member i is in room i / M, at place i % M, on target i % targets.
    for i in 0..total {
        let due = setup + Duration::from_secs_f64(i as f64 / a.connect_rate.max(1.0));
        tokio::time::sleep_until(due).await;
        let room = i / a.members;
        let spec = MemberSpec {
            room,
            room_id: format!("lt-{run_id}-{room}"),
            target: g.targets[(i as usize) % n_targets].clone(),
            username: format!("lr-{run_id}-{i}"),
            nonce_prefix: format!("{run_id}-{i}"),
            source: source.pick(i),
        };
        let (rtx, rrx) = oneshot::channel();
        let (gtx, grx) = oneshot::channel();
        ready_rx.push(rrx);
        go_tx.push(gtx);
        tasks.push(tokio::spawn(member::member_task(
            spec,
            rtx,
            grx,
            counters.clone(),
            room_acked.clone(),
            recorder_slot.clone(),
            stop_rx.clone(),
        )));
    }
    let mut joined = Vec::new();
    let mut send_limit = u32::MAX;
    for rx in ready_rx {
        let r = rx.await.ok().flatten();
        if let Some(l) = r {
            send_limit = send_limit.min(l);
        }
        joined.push(r.is_some());
    }
    // Let the last joins' member events settle before the window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = RedisIdle::measure(&g.redis_addrs, a.idle_secs).await;

    let window = a.warmup_secs + a.duration_secs;
    let interval = Duration::from_secs_f64(1.0 / a.rate.max(1e-6));
    let per_room = (window / interval.as_secs_f64()).floor() as u64;
    let lead = Duration::from_millis(200);
    let start = Instant::now() + lead;
    let start_us = now_us() + lead.as_micros() as u64;
    let recorder = record::Recorder::new(start_us, start_us + (a.warmup_secs * 1e6) as u64);
    let _ = recorder_slot.set(recorder.clone());
    progress.abort();
    let progress = record::spawn_progress(label, counters.clone(), Some(recorder.clone()));

    let mut pids = g.gateway_pids.clone();
    pids.extend(&g.redis_pids);
    let cpu = CpuWindow::start(&pids);
    let redis_before = RedisSnapshot::take(&g.redis_addrs);
    let redis_cpu_before = probe::redis_cpu_total(&g.redis_addrs);
    let window_clock = Instant::now();
    let mut active = 0u64;
    for (i, gtx) in go_tx.into_iter().enumerate() {
        let i = i as u64;
        let room = i / a.members;
        let place = i % a.members;
        // Rooms are offset evenly across one interval, so sends do not all coincide.
        let offset = interval.mul_f64(room as f64 / a.rooms as f64);
        let sends: Vec<u64> = if joined[i as usize] {
            (0..per_room).filter(|k| k % a.members == place).collect()
        } else {
            Vec::new()
        };
        if !sends.is_empty() {
            active += 1;
        }
        let _ = gtx.send(Go {
            start,
            start_us,
            offset,
            interval,
            sends,
        });
    }
    // Drain: until every send is answered and every acked message reached every
    // member, or the deadline.
    tokio::time::sleep_until(start + Duration::from_secs_f64(window)).await;
    let deadline = Instant::now() + Duration::from_secs_f64(a.drain_secs);
    // Deliveries due so far: each room's acked messages × its connected members.
    let mut in_room = vec![0u64; a.rooms as usize];
    for (i, j) in joined.iter().enumerate() {
        in_room[i / a.members as usize] += u64::from(*j);
    }
    loop {
        let c = &counters;
        let due: u64 = room_acked
            .iter()
            .zip(&in_room)
            .map(|(n, m)| Counters::get(n) * m)
            .sum();
        let done = Counters::get(&c.senders_done) >= active && Counters::get(&c.received) >= due;
        if done || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // The CPU and command windows end here, before the members sign out (sign-out is
    // work per member, not per room message).
    // Every per-message figure of the window divides by the messages acked in it.
    let acked_in_window: u64 = room_acked.iter().map(Counters::get).sum();
    let (uses, context) = cpu.finish(acked_in_window);
    let redis_after = RedisSnapshot::take(&g.redis_addrs);
    let redis_cpu_window = probe::redis_cpu_total(&g.redis_addrs)
        .zip(redis_cpu_before)
        .map(|(after, before)| (after - before, window_clock.elapsed().as_secs_f64()));
    let _ = stop_tx.send(true);
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await.unwrap_or_default());
    }
    progress.abort();

    // Per room: the acked messages; then every connected member must hold each once.
    let mut acked: Vec<BTreeMap<u64, String>> = vec![BTreeMap::new(); a.rooms as usize];
    let mut sent = 0;
    let mut send_errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut nodes: BTreeMap<String, u64> = BTreeMap::new();
    let mut connect_errors: BTreeMap<String, u64> = BTreeMap::new();
    for o in &outs {
        sent += o.sent;
        acked[o.room as usize].extend(o.acked.iter().map(|(k, v)| (*k, v.clone())));
        for (e, n) in &o.errors {
            *send_errors.entry(e.clone()).or_default() += n;
        }
        if let Some(n) = &o.node {
            *nodes.entry(n.clone()).or_default() += 1;
        }
        if let Some(e) = &o.connect_error {
            *connect_errors.entry(e.clone()).or_default() += 1;
        }
    }
    let acked_total: u64 = acked.iter().map(|r| r.len() as u64).sum();
    let (mut expected, mut received, mut lost, mut duplicated, mut out_of_order, mut mismatched) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut disconnected = 0u64;
    let connected = outs.iter().filter(|o| o.connected).count() as u64;
    for o in outs.iter().filter(|o| o.connected) {
        let room_acked = &acked[o.room as usize];
        expected += room_acked.len() as u64;
        received += o.received.len() as u64;
        duplicated += o.duplicated;
        out_of_order += o.out_of_order;
        disconnected += u64::from(o.disconnected);
        for (k, id) in room_acked {
            match o.received.get(k) {
                None => lost += 1,
                Some(got) if got != id => mismatched += 1,
                Some(_) => {}
            }
        }
    }
    let cpu = CpuReport::new(uses, &g.redis_pids, context, acked_in_window);
    let redis = probe::redis_work(&redis_before, &redis_after, acked_in_window);
    let redis_cpu =
        redis_cpu_window.map(|(used, secs)| RedisCpu::new(used, secs, idle, acked_in_window));
    let (latency, ack, timeline, hist) = {
        let r = recorder
            .lock()
            .map_err(|_| anyhow::anyhow!("recorder poisoned"))?;
        (
            r.latency.summary(),
            r.ack.summary(),
            r.timeline.clone(),
            r.latency.clone(),
        )
    };
    let mut warnings = Vec::new();
    let per_member = a.rate / a.members as f64;
    if per_member > f64::from(send_limit) {
        warnings.push(format!(
            "each member sends {per_member:.1} msg/s but the nodes allow {send_limit}/s per connection: raise CHAT_LIMITS__SEND_PER_SECOND / SEND_BURST"
        ));
    }
    let ok = lost == 0
        && duplicated == 0
        && mismatched == 0
        && out_of_order == 0
        && connected == total
        && acked_total == sent
        && disconnected == 0;
    let redis_us = cpu
        .redis_total
        .as_ref()
        .and_then(|t| t.figures.us_per_message);
    let result = RoomResult {
        rooms: a.rooms,
        members_per_room: a.members,
        members: total,
        connected,
        connect_failures: total - connected,
        connect_errors,
        nodes,
        target_rate_per_room: a.rate,
        window_secs: window,
        sent,
        acked: acked_total,
        send_errors,
        expected_deliveries: expected,
        received,
        lost,
        duplicated,
        mismatched_ids: mismatched,
        out_of_order,
        disconnected,
        throughput: Throughput {
            sent_per_sec: sent as f64 / window.max(1e-9),
            delivered_per_sec: received as f64 / window.max(1e-9),
            elapsed_secs: elapsed,
        },
        latency,
        ack_latency: ack,
        timeline: timeline.rows(),
        redis_cpu_us_per_room_message: redis_us,
        redis_cpu,
        cpu,
        redis_commands: redis,
        warnings,
        ok,
    };
    let summary = summary(&result);
    Ok(Done {
        result,
        summary,
        timeline,
        hist,
        ok,
    })
}

impl RedisIdle {
    /// Redis CPU over `secs` of quiet (none when `secs` is 0 or Redis is unreadable).
    async fn measure(addrs: &[String], secs: f64) -> Option<RedisIdle> {
        if secs <= 0.0 {
            return None;
        }
        let before = probe::redis_cpu_total(addrs)?;
        let clock = Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        let used = probe::redis_cpu_total(addrs)? - before;
        let secs = clock.elapsed().as_secs_f64();
        Some(RedisIdle {
            secs,
            cpu_seconds: used,
            percent_of_core: used / secs * 100.0,
        })
    }
}

fn summary(v: &RoomResult) -> String {
    let mut s = format!(
        "room: {} rooms x {} members = {} members ({} failed to connect) on nodes {}\n  room messages sent {} acked {} | deliveries expected {} received {} | lost {} duplicated {} out-of-order {} wrong-id {} disconnected {} errors {}\n  throughput: {:.0} room msg/s, {:.0} deliveries/s (target {:.0} room msg/s)\n  send->receive (every member): {}\n  ack: {}\n",
        v.rooms, v.members_per_room, v.members, v.connect_failures,
        serde_json::to_string(&v.nodes).unwrap_or_default(),
        v.sent, v.acked, v.expected_deliveries, v.received, v.lost, v.duplicated,
        v.out_of_order, v.mismatched_ids, v.disconnected,
        serde_json::to_string(&v.send_errors).unwrap_or_default(),
        v.throughput.sent_per_sec, v.throughput.delivered_per_sec,
        v.target_rate_per_room * v.rooms as f64,
        v.latency.line(), v.ack_latency.line(),
    );
    for g in &v.cpu.gateways {
        s += &format!(
            "  gateway pid {}: {:.0}% of a core\n",
            g.pid, g.figures.percent_of_core
        );
    }
    if let Some(t) = &v.cpu.redis_total {
        s += &format!(
            "  redis: {:.0}% of a core, {} CPU per room message\n",
            t.figures.percent_of_core,
            t.figures
                .us_per_message
                .map_or("-".into(), |u| format!("{u:.1} us"))
        );
    }
    if let Some(r) = &v.redis_cpu {
        let us = |u: Option<f64>| u.map_or("-".into(), |u| format!("{u:.1} us"));
        s += &format!(
            "  redis (INFO cpu): {:.2}% of a core, {} per room message; idle {}, above idle {} per room message\n",
            r.percent_of_core,
            us(r.us_per_room_message),
            r.idle.map_or("-".into(), |i| format!("{:.2}% over {:.1} s", i.percent_of_core, i.secs)),
            us(r.us_per_room_message_above_idle),
        );
    }
    if let Some(h) = &v.cpu.context.harness {
        s += &format!("  harness: {:.0}% of a core", h.percent_of_core);
        if let Some(m) = v.cpu.context.machine_busy_percent {
            s += &format!(", machine {m:.0}% busy");
        }
        s += "\n";
    }
    for w in &v.warnings {
        s += &format!("  warning: {w}\n");
    }
    s
}
