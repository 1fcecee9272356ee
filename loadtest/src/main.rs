//! `chat-loadtest`: the load-test harness of the chat cluster.
//!
//! Map of the crate:
//! - [`cli`]: options and one subcommand per scenario.
//! - [`scenario`]: each scenario as the parent runs it (split, measure, merge, report).
//! - [`fleet`]: the load in this process or in worker processes (JSON lines).
//! - [`connect`] and [`dm`]: what one process does (`dm` also runs `ramp`,
//!   `reconnect-storm` and `chaos`).
//! - [`room`]: the `room` scenario (rooms of members, every delivery checked).
//! - [`chaos`]: the fault schedule and injector of the `chaos` scenario, its verdicts.
//! - [`net`]: sockets from spread 127.0.0.0/8 source addresses, `hello` / `welcome`.
//! - [`record`], [`stats`]: counters, HDR histograms, progress lines.
//! - [`report`]: the JSON report (`--out`) as typed structs.
//! - [`probe`]: RSS and CPU from `/proc`, `/metrics`, Redis `INFO commandstats`.
//! - [`plot`]: SVG plots.
//!
//! The harness only talks to the targets it is given and stops by itself: every phase
//! has a deadline.

mod chaos;
mod cli;
mod connect;
mod dm;
mod fleet;
mod net;
mod plot;
mod probe;
mod record;
mod report;
mod room;
mod scenario;
mod stats;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, DmArgs, Scenario};
use report::{
    ChaosParams, ConnectParams, DmParams, Environment, RampParams, Report, RoomParams, Run,
    StormParams,
};

/// jemalloc: the harness shares the machine with what it measures; glibc's malloc
/// cost it noticeably more CPU per message.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Past the default soft limit: as many sockets as the hard limit allows.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if cli.global.threads > 0 {
        builder.worker_threads(cli.global.threads);
        // Worker processes (started with only `worker`) read it through tokio's own
        // variable; no other thread runs yet.
        std::env::set_var("TOKIO_WORKER_THREADS", cli.global.threads.to_string());
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chat-loadtest: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, nofile)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        // The run finished but its correctness checks failed (lost, duplicated, …).
        Ok(false) => std::process::ExitCode::from(2),
        Err(e) => {
            eprintln!("chat-loadtest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, nofile: u64) -> Result<bool> {
    let g = &cli.global;
    if matches!(cli.scenario, Scenario::Worker) {
        fleet::worker_main().await?;
        return Ok(true);
    }
    eprintln!(
        "chat-loadtest: targets {:?}, {} worker(s), open-file limit {nofile}",
        g.targets, g.workers
    );
    let started_at = record::now_us() / 1000;
    let loadavg_at_start = loadavg();
    let (name, done) = match &cli.scenario {
        Scenario::Connect {
            connections,
            rate,
            hold_secs,
        } => {
            let params = scenario::params(
                g,
                ConnectParams {
                    connections: *connections,
                    rate: *rate,
                    hold_secs: *hold_secs,
                },
            );
            let done = scenario::connect(g, *connections, *rate, *hold_secs).await?;
            (
                "connect",
                done.map(|result| Run::Connect { params, result }),
            )
        }
        Scenario::Dm(a) => {
            let params = scenario::params(g, dm_params(a));
            let done = scenario::dm(g, a).await?;
            ("dm", done.map(|result| Run::Dm { params, result }))
        }
        Scenario::Ramp {
            users,
            start,
            step,
            max,
            step_secs,
            p99_ms,
            warmup_secs,
            drain_secs,
        } => {
            let base = DmArgs {
                users: *users,
                rate: *start,
                duration_secs: *step_secs,
                warmup_secs: *warmup_secs,
                drain_secs: *drain_secs,
                body_bytes: 0,
                connect_rate: 1000.0,
            };
            let params = scenario::params(
                g,
                RampParams {
                    dm: dm_params(&base),
                    start: *start,
                    step: *step,
                    max: *max,
                    p99_ms: *p99_ms,
                },
            );
            let r = scenario::RampArgs {
                base,
                start: *start,
                step: *step,
                max: *max,
                p99_ms: *p99_ms,
            };
            let done = scenario::ramp(g, r).await?;
            ("ramp", done.map(|result| Run::Ramp { params, result }))
        }
        Scenario::ReconnectStorm {
            users,
            rate,
            duration_secs,
            storm_at_secs,
            drain_secs,
            connect_rate,
            kill_gateway_pid,
        } => {
            let a = DmArgs {
                users: *users,
                rate: rate.unwrap_or(*users as f64),
                duration_secs: *duration_secs,
                warmup_secs: 0.0,
                drain_secs: *drain_secs,
                body_bytes: 0,
                connect_rate: *connect_rate,
            };
            let at = storm_at_secs.unwrap_or(duration_secs / 3.0);
            let params = scenario::params(
                g,
                StormParams {
                    dm: dm_params(&a),
                    storm_at_secs: at,
                    kill_gateway_pid: *kill_gateway_pid,
                },
            );
            let done = scenario::storm(g, &a, at, *kill_gateway_pid).await?;
            (
                "reconnect-storm",
                done.map(|result| Run::ReconnectStorm { params, result }),
            )
        }
        Scenario::Chaos(a) => {
            let params = scenario::params(
                g,
                ChaosParams {
                    dm: DmParams {
                        users: a.users,
                        rate: a.rate,
                        duration_secs: a.duration_secs,
                        warmup_secs: 0.0,
                        drain_secs: a.drain_secs,
                        body_bytes: 0,
                        connect_rate: a.connect_rate,
                    },
                    faults: a.faults.iter().map(|f| f.name().to_string()).collect(),
                    first_at_secs: a.first_at_secs,
                    every_secs: a.every_secs,
                    pause_ms: a.pause_ms,
                    nodes: chaos::nodes(a).unwrap_or(0),
                    cluster_script: a.cluster_script.clone(),
                    run_dir: a.run_dir.clone(),
                },
            );
            let done = chaos::chaos(g, a).await?;
            ("chaos", done.map(|result| Run::Chaos { params, result }))
        }
        Scenario::Room(a) => {
            let params = scenario::params(
                g,
                RoomParams {
                    rooms: a.rooms,
                    members: a.members,
                    rate: a.rate,
                    duration_secs: a.duration_secs,
                    warmup_secs: a.warmup_secs,
                    drain_secs: a.drain_secs,
                    connect_rate: a.connect_rate,
                },
            );
            let done = room::room(g, a).await?;
            ("room", done.map(|result| Run::Room { params, result }))
        }
        Scenario::Worker => unreachable!("handled above"),
    };
    let mut plots = Vec::new();
    if let Some(dir) = &g.plot_dir {
        plots = plot::write(
            std::path::Path::new(dir),
            name,
            &done.timeline.rows(),
            &done.hist,
        )?;
    }
    let report = Report {
        tool: concat!("chat-loadtest ", env!("CARGO_PKG_VERSION")).to_string(),
        command_line: std::env::args().collect(),
        started_at_unix_ms: started_at,
        finished_at_unix_ms: record::now_us() / 1000,
        environment: environment(nofile, loadavg_at_start),
        plots,
        run: done.result,
    };
    println!("{}", done.summary.trim_end());
    for p in &report.plots {
        println!("  plot: {p}");
    }
    if let Some(path) = &g.out {
        std::fs::write(path, report.to_json()?).with_context(|| format!("writing {path}"))?;
        println!("  report: {path}");
    }
    Ok(done.ok)
}

fn dm_params(a: &DmArgs) -> DmParams {
    DmParams {
        users: a.users,
        rate: a.rate,
        duration_secs: a.duration_secs,
        warmup_secs: a.warmup_secs,
        drain_secs: a.drain_secs,
        body_bytes: a.body_bytes,
        connect_rate: a.connect_rate,
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// What the numbers depend on: cores, the machine's load around the run, the fd limit.
fn environment(nofile: u64, loadavg_at_start: String) -> Environment {
    Environment {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg_at_start,
        loadavg_at_end: loadavg(),
        nofile_limit: nofile,
        loadavg: None,
    }
}
