//! Each scenario as the parent process runs it: split the load into jobs, start the
//! fleet, take the outside measurements (RSS, CPU, Redis commands) around the right
//! window, merge the outcomes and turn them into the report's `result` (typed, see
//! [`report`](crate::report)) and the readable summary.

use anyhow::{bail, Result};

use crate::cli::{DmArgs, Global};
use crate::connect::{self, ConnectOutcome, ConnectPlan};
use crate::dm::{self, DmOutcome, DmPlan};
use crate::fleet::{self, Fleet, Job, Outcome};
use crate::probe::{self, CpuFigures, CpuReport, CpuWindow, RedisSnapshot};
use crate::report::{
    ConnectResult, DmResult, Params, RampResult, RampStep, RssRow, StormResult, Throughput,
};
use crate::stats::{Hist, Timeline};

/// What a scenario hands back to `main`: its report `result` (`R`) and what goes
/// around it.
pub struct Done<R> {
    pub result: R,
    pub summary: String,
    /// For the plots: per-second timeline and the main latency histogram.
    pub timeline: Timeline,
    pub hist: Hist,
    /// Whether the correctness checks held (nothing lost, nothing stored twice).
    pub ok: bool,
}

impl<R> Done<R> {
    /// The same run with its result turned into `S` (the report's [`Run`](crate::report::Run)).
    pub fn map<S>(self, f: impl FnOnce(R) -> S) -> Done<S> {
        Done {
            result: f(self.result),
            summary: self.summary,
            timeline: self.timeline,
            hist: self.hist,
            ok: self.ok,
        }
    }
}

fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

pub async fn connect(
    g: &Global,
    connections: u64,
    rate: f64,
    hold_secs: f64,
) -> Result<Done<ConnectResult>> {
    let id = run_id();
    let parts = fleet::split(connections, g.workers);
    let k = parts.len() as f64;
    let mut first = 0;
    let jobs = parts
        .iter()
        .enumerate()
        .map(|(w, &n)| {
            let job = Job::Connect(ConnectPlan {
                targets: g.targets.clone(),
                run_id: id.clone(),
                first,
                connections: n,
                rate: rate / k,
                hold_secs,
                source_ips: g.source_ips,
                label: format!("[connect w{w}]"),
            });
            first += n;
            job
        })
        .collect();
    let rss_of = |pid: &u32| probe::rss_bytes(*pid);
    let before_pid: Vec<Option<u64>> = g.gateway_pids.iter().map(rss_of).collect();
    let before_metrics: Vec<Option<u64>> = if g.gateway_pids.is_empty() {
        g.targets.iter().map(|t| probe::metrics_rss(t)).collect()
    } else {
        Vec::new()
    };
    let mut fleet = Fleet::start(jobs)?;
    fleet.ready().await;
    // Let the nodes settle (allocations after welcome, first pings) before measuring.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after_pid: Vec<Option<u64>> = g.gateway_pids.iter().map(rss_of).collect();
    let after_metrics: Vec<Option<u64>> = if g.gateway_pids.is_empty() {
        g.targets.iter().map(|t| probe::metrics_rss(t)).collect()
    } else {
        Vec::new()
    };
    let mut out = ConnectOutcome::default();
    for o in fleet::collect(fleet.go()).await? {
        if let Outcome::Connect(c) = o {
            connect::merge(&mut out, c)?;
        }
    }
    // Connections per measured process: by target when PIDs are given in target order
    // and there is one per target, else all connections for a single PID.
    let conns_for = |i: usize, n: usize| -> u64 {
        if n == out.per_target.len() {
            out.per_target[i]
        } else if n == 1 {
            out.established
        } else {
            0
        }
    };
    let mut rss = Vec::new();
    for (i, pid) in g.gateway_pids.iter().enumerate() {
        if let (Some(b), Some(a)) = (before_pid[i], after_pid[i]) {
            let c = conns_for(i, g.gateway_pids.len());
            rss.push(RssRow {
                pid: Some(*pid),
                target: None,
                before_bytes: b,
                after_bytes: a,
                connections: c,
                bytes_per_connection: (c > 0).then(|| (a as f64 - b as f64) / c as f64),
            });
        }
    }
    for (i, t) in g.targets.iter().enumerate() {
        if let (Some(Some(b)), Some(Some(a))) = (before_metrics.get(i), after_metrics.get(i)) {
            let c = out.per_target.get(i).copied().unwrap_or(0);
            rss.push(RssRow {
                pid: None,
                target: Some(t.clone()),
                before_bytes: *b,
                after_bytes: *a,
                connections: c,
                bytes_per_connection: (c > 0).then(|| (*a as f64 - *b as f64) / c as f64),
            });
        }
    }
    let hist = Hist::decode(&out.latency)?;
    let lat = hist.summary();
    let mut summary = format!(
        "connect: {} of {} established ({} failed) in {:.1}s, {} dropped during the hold\n  connect+hello latency: {}\n  nodes: {:?}\n",
        out.established, out.attempted, out.failures, out.ramp_secs, out.dropped_during_hold, lat.line(), out.nodes
    );
    for r in &rss {
        summary += &format!(
            "  gateway {}: RSS {:.1} MiB -> {:.1} MiB for {} connections = {}\n",
            r.pid.map_or_else(
                || r.target.clone().unwrap_or_default(),
                |p| format!("pid {p}")
            ),
            r.before_bytes as f64 / 1048576.0,
            r.after_bytes as f64 / 1048576.0,
            r.connections,
            r.bytes_per_connection.map_or("-".into(), |b| format!(
                "{:.0} bytes ({:.2} KiB) per connection",
                b,
                b / 1024.0
            )),
        );
    }
    if rss.is_empty() {
        summary += "  gateway RSS: not measured (give --gateway-pid, or a node exporting process_resident_memory_bytes)\n";
    }
    for e in &out.errors {
        summary += &format!("  error: {e}\n");
    }
    let ok = out.failures == 0 && out.dropped_during_hold == 0;
    let result = ConnectResult {
        attempted: out.attempted,
        connections: out.established,
        failures: out.failures,
        errors: out.errors,
        dropped_during_hold: out.dropped_during_hold,
        ramp_secs: out.ramp_secs,
        nodes: out.nodes,
        per_target: out.per_target,
        latency: lat,
        gateway_rss: rss,
        ok,
    };
    Ok(Done {
        result,
        summary,
        timeline: Timeline::default(),
        hist,
        ok,
    })
}

/// Runs one `dm` step over the fleet and measures CPU and Redis around it.
async fn dm_step(
    g: &Global,
    a: &DmArgs,
    storm_at: Option<f64>,
    kill_pid: Option<u32>,
    label: &str,
) -> Result<(DmOutcome, DmResult)> {
    let id = run_id();
    let users = a.users + a.users % 2;
    if users < 2 {
        bail!("dm needs at least 2 users");
    }
    let parts = fleet::split_even(users, g.workers);
    let mut first = 0;
    let jobs = parts
        .iter()
        .enumerate()
        .map(|(w, &n)| {
            let job = Job::Dm(DmPlan {
                targets: g.targets.clone(),
                run_id: id.clone(),
                first_user: first,
                users: n,
                rate: a.rate * n as f64 / users as f64,
                warmup_secs: a.warmup_secs,
                duration_secs: a.duration_secs,
                drain_secs: a.drain_secs,
                storm_at_secs: storm_at,
                storm_drops_sockets: kill_pid.is_none(),
                connect_rate: a.connect_rate / parts.len() as f64,
                source_ips: g.source_ips,
                body_bytes: a.body_bytes,
                label: format!("[{label} w{w}]"),
                phases_secs: Vec::new(),
            });
            first += n;
            job
        })
        .collect();
    let mut fleet = Fleet::start(jobs)?;
    fleet.ready().await;
    let mut pids = g.gateway_pids.clone();
    pids.extend(&g.redis_pids);
    let cpu = CpuWindow::start(&pids);
    let redis_before = RedisSnapshot::take(&g.redis_addrs);
    let mut out = DmOutcome::default();
    let handles = fleet.go();
    if let (Some(pid), Some(at)) = (kill_pid, storm_at) {
        // The members start 200 ms after `go` (their lead); kill the node at the storm.
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs_f64(0.2 + at)).await;
            eprintln!("chat-loadtest: killing gateway pid {pid} (SIGKILL)");
            let _ = tokio::process::Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status()
                .await;
        });
    }
    for o in fleet::collect(handles).await? {
        if let Outcome::Dm(d) = o {
            dm::merge(&mut out, *d)?;
        }
    }
    let (uses, context) = cpu.finish(out.counts.received);
    let cpu = CpuReport::new(uses, &g.redis_pids, context, out.counts.received);
    let redis = probe::redis_work(
        &redis_before,
        &RedisSnapshot::take(&g.redis_addrs),
        out.counts.acked,
    );
    let window = a.warmup_secs + a.duration_secs;
    let latency = Hist::decode(&out.latency)?.summary();
    let ack = Hist::decode(&out.ack_latency)?.summary();
    let timeline = Timeline::decode(&out.timeline)?;
    let storm = out.storm.as_ref().map(|s| StormResult {
        counts: s.counts.clone(),
        recovery: Hist::decode(&s.recovery)
            .map(|h| h.summary())
            .unwrap_or_default(),
    });
    let ok = out.counts.lost == 0
        && out.counts.duplicated == 0
        && out.counts.unacked == 0
        && out.counts.connect_failures == 0
        && out.counts.sent == out.counts.acked
        && out
            .storm
            .as_ref()
            .is_none_or(|s| s.counts.reconnect_failures == 0 && s.counts.not_recovered == 0);
    let result = DmResult {
        counts: out.counts.clone(),
        target_rate: a.rate,
        window_secs: window,
        throughput: Throughput {
            sent_per_sec: out.counts.sent as f64 / window.max(1e-9),
            delivered_per_sec: out.counts.received as f64 / window.max(1e-9),
            elapsed_secs: out.elapsed_secs,
        },
        latency,
        ack_latency: ack,
        timeline: timeline.rows(),
        cpu,
        redis_commands: redis,
        storm,
        warnings: out.warnings.clone(),
        ok,
    };
    Ok((out, result))
}

/// JSON text of a value, as earlier summaries printed maps and quoted strings.
fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn dm_summary(name: &str, v: &DmResult) -> String {
    let mut s = format!(
        "{name}: {} users ({} failed to connect) on nodes {}\n  sent {} acked {} received {} | lost {} duplicated {} unacked {} redelivered {} errors {}\n  throughput: {:.0} msg/s delivered (target {:.0})\n  send->receive: {}\n  ack:           {}\n",
        v.counts.users, v.counts.connect_failures, json_text(&v.counts.nodes), v.counts.sent, v.counts.acked, v.counts.received,
        v.counts.lost, v.counts.duplicated, v.counts.unacked, v.counts.redelivered, json_text(&v.counts.send_errors),
        v.throughput.delivered_per_sec,
        v.target_rate,
        v.latency.line(), v.ack_latency.line(),
    );
    let cpu = &v.cpu;
    for c in &cpu.gateways {
        s += &cpu_line(&format!("gateway pid {}", c.pid), Some(&c.figures));
    }
    for c in &cpu.redis_processes {
        s += &cpu_line(&format!("redis pid {}", c.pid), Some(&c.figures));
    }
    if cpu.redis_processes.len() > 1 {
        if let Some(total) = &cpu.redis_total {
            s += &cpu_line(
                &format!("redis, all {} processes", total.processes),
                Some(&total.figures),
            );
        }
    }
    let ctx = &cpu.context;
    s += &format!(
        "{}; whole machine busy: {:.0}% (over {:.1}s)\n",
        cpu_line("harness (and its workers)", ctx.harness.as_ref()).trim_end(),
        ctx.machine_busy_percent.unwrap_or(0.0),
        ctx.window_secs
    );
    if let Some(r) = &v.redis_commands {
        s += &format!(
            "  redis: {} (counts include commands run inside functions), {}\n",
            commands_line(&r.total),
            json_text(&r.total.calls)
        );
        if r.per_address.len() > 1 {
            for a in &r.per_address {
                s += &format!("  redis {}: {}\n", a.addr, commands_line(&a.counts));
            }
        }
        for a in &r.unread {
            s += &format!(
                "  warning: redis {a} did not answer INFO commandstats: left out of the counts\n"
            );
        }
    }
    if let Some(st) = &v.storm {
        s += &format!(
            "  storm: {} dropped, {} reconnected ({} not recovered, {} failed), all back after {:.0} ms\n  during the storm: sent {} acked {} received {} lost {}\n",
            st.counts.dropped, st.counts.reconnected, st.counts.not_recovered, st.counts.reconnect_failures,
            st.counts.all_recovered_ms, st.counts.sent_during, st.counts.acked_during,
            st.counts.received_during, st.counts.lost_during
        );
    }
    for e in &v.counts.connect_errors {
        s += &format!("  connect error: {}\n", json_text(e));
    }
    for w in &v.warnings {
        s += &format!("  warning: {w}\n");
    }
    s += &format!("  correctness: {}\n", if v.ok { "OK" } else { "FAILED" });
    s
}

/// `  <who> CPU: x% of a core, y µs per message` from a report's CPU figures.
fn cpu_line(who: &str, c: Option<&CpuFigures>) -> String {
    format!(
        "  {who} CPU: {:.1}% of a core, {} per message\n",
        c.map_or(0.0, |c| c.percent_of_core),
        c.and_then(|c| c.us_per_message)
            .map_or_else(|| "- µs".to_string(), |us| format!("{us:.1} µs"))
    )
}

/// Commands per acked message, in total and for the top-level calls.
fn commands_line(r: &probe::CommandCounts) -> String {
    let per = |c: &str| r.per_message.get(c).copied().unwrap_or(0.0);
    format!(
        "{:.2} commands per acked message (fcall {:.2}, evalsha {:.2})",
        r.calls_per_message.unwrap_or(0.0),
        per("fcall"),
        per("evalsha")
    )
}

pub async fn dm(g: &Global, a: &DmArgs) -> Result<Done<DmResult>> {
    let (out, result) = dm_step(g, a, None, None, "dm").await?;
    Ok(Done {
        summary: dm_summary("dm", &result),
        ok: result.ok,
        result,
        timeline: Timeline::decode(&out.timeline)?,
        hist: Hist::decode(&out.latency)?,
    })
}

/// Every client drops its socket at `storm_at`, or, with `kill_pid`, that node is
/// killed then and its clients resume elsewhere.
pub async fn storm(
    g: &Global,
    a: &DmArgs,
    storm_at: f64,
    kill_pid: Option<u32>,
) -> Result<Done<DmResult>> {
    let (out, result) = dm_step(g, a, Some(storm_at), kill_pid, "storm").await?;
    Ok(Done {
        summary: dm_summary("reconnect-storm", &result),
        ok: result.ok,
        result,
        timeline: Timeline::decode(&out.timeline)?,
        hist: Hist::decode(&out.latency)?,
    })
}

pub struct RampArgs {
    pub base: DmArgs,
    pub start: f64,
    pub step: f64,
    pub max: f64,
    pub p99_ms: f64,
}

pub async fn ramp(g: &Global, r: RampArgs) -> Result<Done<RampResult>> {
    let mut steps = Vec::new();
    let mut best: Option<f64> = None;
    let mut summary = String::from("ramp:\n");
    let mut last = (Timeline::default(), Hist::default());
    let mut rate = r.start;
    while rate <= r.max + 1e-9 {
        let a = DmArgs {
            rate,
            ..r.base.clone()
        };
        let (out, value) = dm_step(g, &a, None, None, &format!("ramp {rate:.0}/s")).await?;
        let p99 = value.latency.p99_ms;
        let passed = value.ok && p99 <= r.p99_ms;
        summary += &format!(
            "  {:>8.0} msg/s: delivered {:>8.0}/s p99 {:>8.2} ms lost {} duplicated {} -> {}\n",
            rate,
            value.throughput.delivered_per_sec,
            p99,
            value.counts.lost,
            value.counts.duplicated,
            if passed { "pass" } else { "FAIL" }
        );
        steps.push(RampStep {
            rate,
            passed,
            result: value,
        });
        last = (
            Timeline::decode(&out.timeline)?,
            Hist::decode(&out.latency)?,
        );
        if !passed {
            break;
        }
        best = Some(rate);
        rate += r.step;
    }
    summary += &match best {
        Some(b) => format!(
            "  highest rate with p99 <= {} ms and nothing lost: {b:.0} msg/s\n",
            r.p99_ms
        ),
        None => format!("  no rate kept p99 <= {} ms with nothing lost\n", r.p99_ms),
    };
    let result = RampResult {
        p99_bound_ms: r.p99_ms,
        best_rate: best,
        steps,
        ok: best.is_some(),
    };
    Ok(Done {
        result,
        summary,
        ok: best.is_some(),
        timeline: last.0,
        hist: last.1,
    })
}

/// Parameters echoed into the report: the global ones and the scenario's own.
pub fn params<S>(g: &Global, scenario: S) -> Params<S> {
    // The singular fields, as in earlier reports, when exactly one was given; the lists
    // always.
    let only = |n: usize| n == 1;
    Params {
        targets: g.targets.clone(),
        workers: g.workers,
        source_ips: g.source_ips,
        gateway_pids: g.gateway_pids.clone(),
        redis_pid: g
            .redis_pids
            .first()
            .copied()
            .filter(|_| only(g.redis_pids.len())),
        redis_addr: g
            .redis_addrs
            .first()
            .cloned()
            .filter(|_| only(g.redis_addrs.len())),
        redis_pids: g.redis_pids.clone(),
        redis_addrs: g.redis_addrs.clone(),
        scenario,
    }
}
