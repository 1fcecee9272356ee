//! The `chaos` scenario: `dm` load on a real local cluster while faults are injected
//! on a fixed schedule, and the proof that every acked message still reached its
//! recipient exactly once, in order, and that every client recovered.
//!
//! The cluster is one started by `scripts/cluster up --aof --run-dir DIR` (Redis with
//! `appendfsync always`, N nodes, nginx). The harness injects each fault by running
//! `<cluster-script> <subcommand> --run-dir DIR`, which returns once the fault is done
//! (a restarted process is ready again):
//!
//! | fault           | subcommand        | what it does                                 |
//! |-----------------|-------------------|----------------------------------------------|
//! | `node-kill`     | `restart-node N`  | SIGKILL gw-N, start it again (N cycles)      |
//! | `pubsub-kill`   | `kill-pubsub`     | `CLIENT KILL TYPE pubsub` on Redis           |
//! | `write-pause`   | `pause-writes MS` | `CLIENT PAUSE MS WRITE` on Redis             |
//! | `redis-restart` | `restart-redis`   | SIGKILL Redis, start it again (AOF reload)   |
//!
//! Injection k happens `first_at + k × every` seconds after the sends start, kinds in
//! the given order round-robin, while that time is inside the send window. The run is
//! cut into phases at the injections; each message belongs to the phase its intended
//! send time fell in and each disconnect to the phase it happened in, so the figures
//! of a fault kind are those of the phases its injections opened.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cli::{ChaosArgs, Fault, Global};
use crate::dm::{self, DmOutcome, DmPlan, PhaseTally};
use crate::fleet::{self, Fleet, Job, Outcome};
use crate::report::{ChaosResult, FaultResult, Injection, PhaseResult};
use crate::scenario::Done;
use crate::stats::{Hist, Timeline};

/// One planned injection.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub fault: Fault,
    pub node: Option<u32>,
    pub at_secs: f64,
}

/// The injections of a run: every `every` seconds from `first_at`, inside `duration`.
pub fn schedule(
    faults: &[Fault],
    first_at: f64,
    every: f64,
    duration: f64,
    nodes: u32,
) -> Vec<Planned> {
    let mut out = Vec::new();
    let mut node_kills = 0u32;
    if faults.is_empty() || every <= 0.0 {
        return out;
    }
    let mut k = 0usize;
    loop {
        let at = first_at + every * k as f64;
        if at >= duration {
            break;
        }
        let fault = faults[k % faults.len()];
        let node = (fault == Fault::NodeKill).then(|| {
            node_kills += 1;
            (node_kills - 1) % nodes.max(1) + 1
        });
        out.push(Planned {
            fault,
            node,
            at_secs: at,
        });
        k += 1;
    }
    out
}

/// The nodes a node-kill cycles through: `--nodes`, else as many as
/// `<run_dir>/cluster.env` lists in GATEWAY_PIDS.
pub fn nodes(a: &ChaosArgs) -> Result<u32> {
    match a.nodes {
        Some(n) => Ok(n),
        None => nodes_in(&a.run_dir),
    }
}

fn nodes_in(run_dir: &str) -> Result<u32> {
    let path = std::path::Path::new(run_dir).join("cluster.env");
    let env = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (scripts/cluster up first)", path.display()))?;
    let pids = env
        .lines()
        .find_map(|l| l.strip_prefix("GATEWAY_PIDS="))
        .unwrap_or("");
    Ok(pids.split(',').filter(|p| !p.is_empty()).count() as u32)
}

fn command_args(p: &Planned, pause_ms: u64) -> Vec<String> {
    match p.fault {
        Fault::NodeKill => vec!["restart-node".into(), p.node.unwrap_or(1).to_string()],
        Fault::PubsubKill => vec!["kill-pubsub".into()],
        Fault::WritePause => vec!["pause-writes".into(), pause_ms.to_string()],
        Fault::RedisRestart => vec!["restart-redis".into()],
    }
}

/// Runs the schedule from `go` (the sends start 200 ms after it, the members' lead).
async fn inject(plan: Vec<Planned>, a: ChaosArgs, go: Instant) -> Vec<Injection> {
    let start = go + Duration::from_millis(200);
    let mut done = Vec::new();
    for p in plan {
        tokio::time::sleep_until((start + Duration::from_secs_f64(p.at_secs)).into()).await;
        let args = command_args(&p, a.pause_ms);
        let began = Instant::now();
        eprintln!(
            "chat-loadtest: chaos: {} ({} {})",
            p.fault.name(),
            a.cluster_script,
            args.join(" ")
        );
        let run = tokio::process::Command::new(&a.cluster_script)
            .args(&args)
            .arg("--run-dir")
            .arg(&a.run_dir)
            .stdin(std::process::Stdio::null())
            .output();
        let (ok, output) = match tokio::time::timeout(Duration::from_secs(120), run).await {
            Ok(Ok(o)) => {
                let text = String::from_utf8_lossy(&o.stderr).to_string()
                    + &String::from_utf8_lossy(&o.stdout);
                let last = text.lines().rev().find(|l| !l.trim().is_empty());
                (o.status.success(), last.unwrap_or("").trim().to_string())
            }
            Ok(Err(e)) => (false, format!("cannot run {}: {e}", a.cluster_script)),
            Err(_) => (false, "timed out after 120 s".into()),
        };
        if !ok {
            eprintln!("chat-loadtest: chaos: {} FAILED: {output}", p.fault.name());
        }
        done.push(Injection {
            fault: p.fault.name().into(),
            node: p.node,
            at_secs: p.at_secs,
            started_secs: began.saturating_duration_since(start).as_secs_f64(),
            command_ms: began.elapsed().as_secs_f64() * 1000.0,
            ok,
            output,
        });
    }
    done
}

/// Adds phase figures up (a fault kind's injections, or the baseline).
fn sum(phases: &[&PhaseTally]) -> Result<PhaseResult> {
    let mut r = PhaseResult::default();
    let mut hist = Hist::default();
    let mut max_us = 0;
    for p in phases {
        r.counts.add(&p.counts);
        max_us = max_us.max(p.max_delivery_us);
        if !p.reconnect.is_empty() {
            hist.add(&Hist::decode(&p.reconnect)?);
        }
    }
    r.max_delivery_ms = max_us as f64 / 1000.0;
    r.reconnect = hist.summary();
    Ok(r)
}

/// The report's result from the merged outcome and the injections.
pub fn result(
    a: &ChaosArgs,
    out: &DmOutcome,
    injections: Vec<Injection>,
    faults: &[Fault],
) -> Result<ChaosResult> {
    let phases = out
        .chaos
        .as_ref()
        .map(|c| c.phases.clone())
        .unwrap_or_default();
    if phases.len() != injections.len() + 1 {
        bail!(
            "{} phases for {} injections",
            phases.len(),
            injections.len()
        );
    }
    let baseline = sum(&[&phases[0]])?;
    let mut per_fault = Vec::new();
    for f in faults {
        if per_fault.iter().any(|r: &FaultResult| r.fault == f.name()) {
            continue;
        }
        let mine: Vec<usize> = injections
            .iter()
            .enumerate()
            .filter(|(_, i)| i.fault == f.name())
            .map(|(k, _)| k)
            .collect();
        let figures = sum(&mine.iter().map(|&k| &phases[k + 1]).collect::<Vec<_>>())?;
        per_fault.push(FaultResult {
            fault: f.name().into(),
            injected: mine.len() as u64,
            failed: mine.iter().filter(|&&k| !injections[k].ok).count() as u64,
            command_ms_max: mine
                .iter()
                .map(|&k| injections[k].command_ms)
                .fold(0.0, f64::max),
            figures,
        });
    }
    let all = sum(&phases.iter().collect::<Vec<_>>())?;
    let exactly_once =
        out.counts.lost == 0 && out.counts.duplicated == 0 && all.counts.out_of_order == 0;
    let all_recovered = out.counts.connect_failures == 0
        && all.counts.reconnect_failures == 0
        && out.counts.unacked == 0;
    let mut warnings = out.warnings.clone();
    if injections.iter().any(|i| !i.ok) {
        warnings.push("an injection command failed (see injections[].output)".into());
    }
    let ok = exactly_once && all_recovered && injections.iter().all(|i| i.ok);
    Ok(ChaosResult {
        users: a.users + a.users % 2,
        connected: out.counts.connected,
        connect_failures: out.counts.connect_failures,
        sent: out.counts.sent,
        acked: out.counts.acked,
        send_errors: out.counts.send_errors.clone(),
        unacked: out.counts.unacked,
        delivered: out.counts.received,
        lost: out.counts.lost,
        duplicated: out.counts.duplicated,
        out_of_order: all.counts.out_of_order,
        delivered_unacked: all.counts.delivered_unacked,
        redelivered: out.counts.redelivered,
        unexpected_disconnects: out.counts.unexpected_disconnects,
        clients_not_recovered: all.counts.reconnect_failures,
        latency: Hist::decode(&out.latency)?.summary(),
        ack_latency: Hist::decode(&out.ack_latency)?.summary(),
        baseline,
        faults: per_fault,
        injections,
        exactly_once,
        all_recovered,
        ok,
        warnings,
    })
}

fn summary(r: &ChaosResult) -> String {
    let mut s = format!(
        "chaos: {} users ({} failed to connect), {} injections\n  sent {} acked {} delivered {} | lost {} duplicated {} out-of-order {} unacked {} errors {} delivered-after-error {}\n  clients not recovered {} | exactly once: {} | all recovered: {}\n  send->receive: {}\n",
        r.users,
        r.connect_failures,
        r.injections.len(),
        r.sent,
        r.acked,
        r.delivered,
        r.lost,
        r.duplicated,
        r.out_of_order,
        r.unacked,
        serde_json::to_string(&r.send_errors).unwrap_or_default(),
        r.delivered_unacked,
        r.clients_not_recovered,
        if r.exactly_once { "yes" } else { "NO" },
        if r.all_recovered { "yes" } else { "NO" },
        r.latency.line(),
    );
    s += "  fault          n  sent  acked  err  deliv  lost  dup  ooo  disc  reconn p50/max ms  worst delivery ms  command ms\n";
    let row = |name: &str, n: u64, cmd: f64, f: &PhaseResult| {
        format!(
            "  {name:<13} {n:>2} {:>5} {:>6} {:>4} {:>6} {:>5} {:>4} {:>4} {:>5}  {:>8.0}/{:<8.0}  {:>17.0}  {:>10.0}\n",
            f.counts.sent,
            f.counts.acked,
            f.counts.errors,
            f.counts.delivered,
            f.counts.lost,
            f.counts.duplicated,
            f.counts.out_of_order,
            f.counts.disconnects,
            f.reconnect.p50_ms,
            f.reconnect.max_ms,
            f.max_delivery_ms,
            cmd
        )
    };
    s += &row("(before)", 0, 0.0, &r.baseline);
    for f in &r.faults {
        s += &row(&f.fault, f.injected, f.command_ms_max, &f.figures);
    }
    for w in &r.warnings {
        s += &format!("  warning: {w}\n");
    }
    s
}

pub async fn chaos(g: &Global, a: &ChaosArgs) -> Result<Done<ChaosResult>> {
    let users = a.users + a.users % 2;
    if users < 2 {
        bail!("chaos needs at least 2 users");
    }
    let nodes = nodes(a)?;
    if a.faults.contains(&Fault::NodeKill) && nodes == 0 {
        bail!("node-kill needs the number of nodes (--nodes, or a cluster.env in --run-dir)");
    }
    let plan = schedule(
        &a.faults,
        a.first_at_secs,
        a.every_secs,
        a.duration_secs,
        nodes,
    );
    if plan.is_empty() {
        bail!("no injection fits: --first-at-secs must be below --duration-secs");
    }
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    // One process: the injector and the users share the clock the phases are cut by.
    let job = Job::Dm(DmPlan {
        targets: g.targets.clone(),
        run_id: id,
        first_user: 0,
        users,
        rate: a.rate,
        warmup_secs: 0.0,
        duration_secs: a.duration_secs,
        drain_secs: a.drain_secs,
        storm_at_secs: None,
        storm_drops_sockets: false,
        connect_rate: a.connect_rate,
        source_ips: g.source_ips,
        body_bytes: 0,
        label: "[chaos]".into(),
        phases_secs: plan.iter().map(|p| p.at_secs).collect(),
    });
    let mut fleet = Fleet::start(vec![job])?;
    fleet.ready().await;
    let handles = fleet.go();
    let injector = tokio::spawn(inject(plan, a.clone(), Instant::now()));
    let mut out = DmOutcome::default();
    for o in fleet::collect(handles).await? {
        if let Outcome::Dm(d) = o {
            dm::merge(&mut out, *d)?;
        }
    }
    let injections = injector.await.context("the fault injector")?;
    let result = result(a, &out, injections, &a.faults)?;
    Ok(Done {
        summary: summary(&result),
        ok: result.ok,
        result,
        timeline: Timeline::decode(&out.timeline)?,
        hist: Hist::decode(&out.latency)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_cycles_faults_and_nodes_inside_the_window() {
        let all = [
            Fault::NodeKill,
            Fault::PubsubKill,
            Fault::WritePause,
            Fault::RedisRestart,
        ];
        let s = schedule(&all, 2.0, 3.0, 26.0, 2);
        let at: Vec<f64> = s.iter().map(|p| p.at_secs).collect();
        assert_eq!(at, [2.0, 5.0, 8.0, 11.0, 14.0, 17.0, 20.0, 23.0]);
        assert_eq!(s[0].fault, Fault::NodeKill);
        assert_eq!(s[3].fault, Fault::RedisRestart);
        assert_eq!(s[4].fault, Fault::NodeKill);
        assert_eq!((s[0].node, s[4].node), (Some(1), Some(2)));
        assert_eq!(s[1].node, None);
        assert!(schedule(&all, 30.0, 3.0, 26.0, 2).is_empty());
    }

    #[test]
    fn commands_name_the_cluster_subcommands() {
        let p = |fault, node| Planned {
            fault,
            node,
            at_secs: 0.0,
        };
        assert_eq!(
            command_args(&p(Fault::NodeKill, Some(3)), 2000),
            ["restart-node", "3"]
        );
        assert_eq!(
            command_args(&p(Fault::WritePause, None), 2000),
            ["pause-writes", "2000"]
        );
        assert_eq!(
            command_args(&p(Fault::PubsubKill, None), 0),
            ["kill-pubsub"]
        );
        assert_eq!(
            command_args(&p(Fault::RedisRestart, None), 0),
            ["restart-redis"]
        );
    }
}
