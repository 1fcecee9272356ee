//! The JSON report a run writes with `--out`, as typed structs: what `main` and
//! [`scenario`](crate::scenario) fill in, and what a later reader (the harness tests,
//! scripts comparing `loadtest/results/`) gets back with `serde_json::from_str`.
//!
//! The field names are the report's: reports written before these types existed
//! deserialize into them. The file is written through a `serde_json::Value`, whose
//! objects keep their keys sorted, so every object's keys come out in alphabetical
//! order as they always have (see [`Report::to_json`]).
//!
//! This file holds the report's frame and the `connect`, `dm`, `ramp` and `storm`
//! runs; [`chaos`] and [`room`] hold those runs' parameters and results.

mod chaos;
mod room;

pub use chaos::{ChaosParams, ChaosResult, FaultResult, Injection, PhaseCounts, PhaseResult};
pub use room::{RedisCpu, RedisIdle, RoomParams, RoomResult};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::probe::{CpuReport, RedisWork};
use crate::stats::{Percentiles, TimelineRow};

/// One run of one scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `chat-loadtest <version>`.
    pub tool: String,
    pub command_line: Vec<String>,
    pub started_at_unix_ms: u64,
    pub finished_at_unix_ms: u64,
    pub environment: Environment,
    /// The SVG plots written (`--plot-dir`), by path.
    pub plots: Vec<String>,
    /// `scenario`, and the `params` and `result` of that scenario.
    #[serde(flatten)]
    pub run: Run,
}

/// The scenario that ran, named by the report's `scenario` field, with its parameters
/// and result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scenario")]
pub enum Run {
    #[serde(rename = "connect")]
    Connect {
        params: Params<ConnectParams>,
        result: ConnectResult,
    },
    #[serde(rename = "dm")]
    Dm {
        params: Params<DmParams>,
        result: DmResult,
    },
    #[serde(rename = "ramp")]
    Ramp {
        params: Params<RampParams>,
        result: RampResult,
    },
    #[serde(rename = "reconnect-storm")]
    ReconnectStorm {
        params: Params<StormParams>,
        result: DmResult,
    },
    #[serde(rename = "chaos")]
    Chaos {
        params: Params<ChaosParams>,
        result: ChaosResult,
    },
    #[serde(rename = "room")]
    Room {
        params: Params<RoomParams>,
        result: RoomResult,
    },
}

impl Report {
    /// The report as written to `--out`: pretty-printed, every object's keys sorted.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&serde_json::to_value(self)?)
    }
}

/// What the numbers depend on: cores, the machine's load around the run, the fd limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub cpus: usize,
    /// `/proc/loadavg` as read (empty in reports from before it was recorded).
    #[serde(default)]
    pub loadavg_at_start: String,
    #[serde(default)]
    pub loadavg_at_end: String,
    pub nofile_limit: u64,
    /// The one `/proc/loadavg` reading of the first reports (2026-11-24), at the end;
    /// never written now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loadavg: Option<String>,
}

/// The global options echoed into the report, and the scenario's own (`S`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Params<S> {
    pub targets: Vec<String>,
    pub workers: u64,
    pub source_ips: u32,
    pub gateway_pids: Vec<u32>,
    /// The one Redis process when exactly one was given (the shape of earlier reports);
    /// null otherwise. `redis_pids` always lists them all.
    pub redis_pid: Option<u32>,
    /// Likewise for `redis_addrs`.
    pub redis_addr: Option<String>,
    #[serde(default)]
    pub redis_pids: Vec<u32>,
    #[serde(default)]
    pub redis_addrs: Vec<String>,
    #[serde(flatten)]
    pub scenario: S,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectParams {
    pub connections: u64,
    pub rate: f64,
    pub hold_secs: f64,
}

/// The parameters of one `dm` run (also the base of `ramp` and `reconnect-storm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DmParams {
    pub users: u64,
    pub rate: f64,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub drain_secs: f64,
    pub body_bytes: usize,
    pub connect_rate: f64,
}

/// `ramp`: each step is a `dm` run (`rate` is the first step's, `duration_secs` a
/// step's length).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampParams {
    #[serde(flatten)]
    pub dm: DmParams,
    pub start: f64,
    pub step: f64,
    pub max: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StormParams {
    #[serde(flatten)]
    pub dm: DmParams,
    pub storm_at_secs: f64,
    /// The node killed at the storm; null when every client dropped its socket instead.
    pub kill_gateway_pid: Option<u32>,
}

/// `connect`: connections opened and held, and what they cost the nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectResult {
    pub attempted: u64,
    /// Established (signed in).
    pub connections: u64,
    pub failures: u64,
    /// The first few connect errors.
    pub errors: Vec<String>,
    pub dropped_during_hold: u64,
    pub ramp_secs: f64,
    /// `welcome.node` → connections signed in there.
    pub nodes: BTreeMap<String, u64>,
    /// Target index → connections established through it.
    pub per_target: Vec<u64>,
    /// Connect + hello → welcome.
    pub latency: Percentiles,
    pub gateway_rss: Vec<RssRow>,
    pub ok: bool,
}

/// One gateway's resident memory before and after the connections opened: by PID
/// (`--gateway-pid`), else by target from the node's `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RssRow {
    pub pid: Option<u32>,
    pub target: Option<String>,
    pub before_bytes: u64,
    pub after_bytes: u64,
    pub connections: u64,
    pub bytes_per_connection: Option<f64>,
}

/// What a `dm` run counted: the same fields in a worker's outcome (merged exactly
/// across workers) and in the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DmCounts {
    pub users: u64,
    pub connected: u64,
    pub connect_failures: u64,
    pub connect_errors: Vec<String>,
    /// `welcome.node` → users signed in there.
    pub nodes: BTreeMap<String, u64>,
    pub sent: u64,
    pub acked: u64,
    /// Error code → sends refused with it.
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
}

/// `dm` and `reconnect-storm` (and each `ramp` step): sends, deliveries, what was lost
/// or duplicated, latencies, and the CPU and Redis work around the window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DmResult {
    #[serde(flatten)]
    pub counts: DmCounts,
    pub target_rate: f64,
    /// Warm-up plus measured duration: what the rates are divided by.
    pub window_secs: f64,
    pub throughput: Throughput,
    /// Intended send → receipt by the peer.
    pub latency: Percentiles,
    /// Intended send → ack.
    pub ack_latency: Percentiles,
    pub timeline: Vec<TimelineRow>,
    pub cpu: CpuReport,
    /// Null when no `--redis-addr` could be read.
    pub redis_commands: Option<RedisWork>,
    /// Null unless the scenario was `reconnect-storm`.
    pub storm: Option<StormResult>,
    pub warnings: Vec<String>,
    /// Nothing lost, duplicated or unacked, every user connected (and recovered).
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub sent_per_sec: f64,
    pub delivered_per_sec: f64,
    /// From the first intended send to the end of the drain.
    pub elapsed_secs: f64,
}

/// What a `reconnect-storm` counted around its drop (or node kill), in a worker's
/// outcome and in the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StormCounts {
    pub dropped: u64,
    pub reconnected: u64,
    /// Reconnected with `recovered: false` (the cursor was no longer retained).
    pub not_recovered: u64,
    pub reconnect_failures: u64,
    /// From the drop to the last client's `welcome`.
    pub all_recovered_ms: f64,
    /// Sends intended between the drop and the last client's recovery.
    pub sent_during: u64,
    pub acked_during: u64,
    pub received_during: u64,
    pub lost_during: u64,
}

/// What happened around a `reconnect-storm`'s drop (or node kill).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StormResult {
    #[serde(flatten)]
    pub counts: StormCounts,
    /// Drop → welcome, per client.
    pub recovery: Percentiles,
}

/// `ramp`: the highest rate that kept p99 under the bound with nothing lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampResult {
    pub p99_bound_ms: f64,
    /// Null when no step passed.
    pub best_rate: Option<f64>,
    pub steps: Vec<RampStep>,
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampStep {
    pub rate: f64,
    pub passed: bool,
    pub result: DmResult,
}
