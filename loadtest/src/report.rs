//! The JSON report a run writes with `--out`, as typed structs: what `main` and
//! [`scenario`](crate::scenario) fill in, and what a later reader (the harness tests,
//! scripts comparing `loadtest/results/`) gets back with `serde_json::from_str`.
//!
//! The field names are the report's: reports written before these types existed
//! deserialize into them. The file is written through a `serde_json::Value`, whose
//! objects keep their keys sorted, so every object's keys come out in alphabetical
//! order as they always have (see [`Report::to_json`]).

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{AddrCounts, CommandCounts, Context, CpuFigures, CpuTotal, CpuUse};

    #[test]
    fn redis_cpu_above_idle_takes_off_the_idle_rate_over_the_window() {
        let idle = RedisIdle {
            secs: 5.0,
            cpu_seconds: 0.01,
            percent_of_core: 0.2,
        };
        let r = RedisCpu::new(0.5, 20.0, Some(idle), 2000);
        assert!((r.us_per_room_message.unwrap() - 250.0).abs() < 1e-9);
        // 0.5 s less 0.002 s/s × 20 s = 0.46 s over 2,000 messages.
        assert!((r.us_per_room_message_above_idle.unwrap() - 230.0).abs() < 1e-9);
        assert!((r.percent_of_core - 2.5).abs() < 1e-9);
        let none = RedisCpu::new(0.5, 20.0, None, 0);
        assert_eq!(none.us_per_room_message, None);
        assert_eq!(none.us_per_room_message_above_idle, None);
    }

    fn percentiles(count: u64) -> Percentiles {
        Percentiles {
            count,
            min_ms: 0.25,
            mean_ms: 1.5,
            p50_ms: 1.25,
            p90_ms: 2.5,
            p99_ms: 4.75,
            p999_ms: 9.5,
            max_ms: 12.0,
        }
    }

    fn params<S>(scenario: S) -> Params<S> {
        Params {
            targets: vec!["ws://127.0.0.1:8081/ws".into()],
            workers: 2,
            source_ips: 250,
            gateway_pids: vec![11],
            redis_pid: Some(12),
            redis_addr: Some("127.0.0.1:6380".into()),
            redis_pids: vec![12],
            redis_addrs: vec!["127.0.0.1:6380".into()],
            scenario,
        }
    }

    fn dm_params() -> DmParams {
        DmParams {
            users: 10,
            rate: 100.0,
            duration_secs: 5.0,
            warmup_secs: 1.0,
            drain_secs: 2.0,
            body_bytes: 0,
            connect_rate: 1000.0,
        }
    }

    fn dm_result(storm: Option<StormResult>) -> DmResult {
        let figures = CpuFigures::new(0.5, 6.0, 500);
        let counts = CommandCounts {
            calls: BTreeMap::from([("fcall".into(), 500)]),
            total_calls: 500,
            calls_per_message: Some(1.0),
            per_message: BTreeMap::from([("fcall".into(), 1.0)]),
        };
        DmResult {
            counts: DmCounts {
                users: 10,
                connected: 10,
                connect_failures: 0,
                connect_errors: vec![],
                nodes: BTreeMap::from([("gw-a".into(), 10)]),
                sent: 500,
                acked: 500,
                send_errors: BTreeMap::from([("rate_limited".into(), 1)]),
                unacked: 0,
                received: 500,
                lost: 0,
                duplicated: 0,
                redelivered: 1,
                unexpected_disconnects: 0,
            },
            target_rate: 100.0,
            window_secs: 6.0,
            throughput: Throughput {
                sent_per_sec: 83.5,
                delivered_per_sec: 83.25,
                elapsed_secs: 8.0,
            },
            latency: percentiles(500),
            ack_latency: percentiles(500),
            timeline: vec![TimelineRow {
                second: 0,
                count: 80,
                p50_ms: 1.0,
                p99_ms: 3.0,
                max_ms: 4.0,
            }],
            cpu: CpuReport {
                gateways: vec![CpuUse { pid: 11, figures }],
                redis: Some(CpuUse { pid: 12, figures }),
                redis_processes: vec![CpuUse { pid: 12, figures }],
                redis_total: Some(CpuTotal {
                    processes: 1,
                    figures,
                }),
                context: Context {
                    window_secs: 6.0,
                    harness_percent_of_core: None,
                    harness: None,
                    machine_busy_percent: Some(40.0),
                },
            },
            redis_commands: Some(RedisWork {
                total: counts.clone(),
                note: "a note".into(),
                per_address: vec![AddrCounts {
                    addr: "127.0.0.1:6380".into(),
                    counts,
                }],
                unread: vec![],
            }),
            storm,
            warnings: vec!["a warning".into()],
            ok: true,
        }
    }

    fn report(run: Run) -> Report {
        Report {
            tool: "chat-loadtest 0.1.0".into(),
            command_line: vec!["chat-loadtest".into(), "dm".into()],
            started_at_unix_ms: 1_764_800_000_000,
            finished_at_unix_ms: 1_764_800_010_000,
            environment: Environment {
                cpus: 2,
                loadavg_at_start: "0.10 0.20 0.30 1/100 4242".into(),
                loadavg_at_end: "1.10 0.40 0.35 2/101 4250".into(),
                nofile_limit: 1_048_576,
                loadavg: None,
            },
            plots: vec!["plots/latency-over-time.svg".into()],
            run,
        }
    }

    fn every_scenario() -> Vec<Report> {
        let storm = StormResult {
            counts: StormCounts {
                dropped: 10,
                reconnected: 10,
                not_recovered: 0,
                reconnect_failures: 0,
                all_recovered_ms: 350.5,
                sent_during: 40,
                acked_during: 40,
                received_during: 40,
                lost_during: 0,
            },
            recovery: percentiles(10),
        };
        vec![
            report(Run::Connect {
                params: params(ConnectParams {
                    connections: 20,
                    rate: 500.0,
                    hold_secs: 5.0,
                }),
                result: ConnectResult {
                    attempted: 20,
                    connections: 20,
                    failures: 0,
                    errors: vec![],
                    dropped_during_hold: 0,
                    ramp_secs: 0.5,
                    nodes: BTreeMap::from([("gw-a".into(), 20)]),
                    per_target: vec![20],
                    latency: percentiles(20),
                    gateway_rss: vec![RssRow {
                        pid: Some(11),
                        target: None,
                        before_bytes: 1000,
                        after_bytes: 3000,
                        connections: 20,
                        bytes_per_connection: Some(100.0),
                    }],
                    ok: true,
                },
            }),
            report(Run::Dm {
                params: params(dm_params()),
                result: dm_result(None),
            }),
            report(Run::Ramp {
                params: params(RampParams {
                    dm: dm_params(),
                    start: 100.0,
                    step: 100.0,
                    max: 300.0,
                    p99_ms: 50.0,
                }),
                result: RampResult {
                    p99_bound_ms: 50.0,
                    best_rate: Some(100.0),
                    steps: vec![RampStep {
                        rate: 100.0,
                        passed: true,
                        result: dm_result(None),
                    }],
                    ok: true,
                },
            }),
            report(Run::ReconnectStorm {
                params: params(StormParams {
                    dm: dm_params(),
                    storm_at_secs: 3.0,
                    kill_gateway_pid: None,
                }),
                result: dm_result(Some(storm)),
            }),
        ]
    }

    #[test]
    fn a_typed_report_round_trips() {
        for r in every_scenario() {
            let text = r.to_json().unwrap();
            let back: Report = serde_json::from_str(&text).unwrap();
            assert_eq!(back, r, "{text}");
            assert_eq!(back.to_json().unwrap(), text);
        }
    }

    #[test]
    fn the_report_keeps_its_field_names_and_key_order() {
        let reports = every_scenario();
        let v: serde_json::Value = serde_json::from_str(&reports[3].to_json().unwrap()).unwrap();
        assert_eq!(v["scenario"], "reconnect-storm");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "command_line",
                "environment",
                "finished_at_unix_ms",
                "params",
                "plots",
                "result",
                "scenario",
                "started_at_unix_ms",
                "tool"
            ]
        );
        // Scenario parameters sit next to the global ones, not in a sub-object.
        assert_eq!(v["params"]["users"], 10);
        assert_eq!(v["params"]["storm_at_secs"], 3.0);
        assert!(v["params"]["kill_gateway_pid"].is_null());
        assert_eq!(v["params"]["redis_pid"], 12);
        assert_eq!(v["result"]["storm"]["dropped"], 10);
        assert_eq!(v["result"]["cpu"]["redis_total"]["processes"], 1);
        assert_eq!(v["result"]["cpu"]["gateways"][0]["us_per_message"], 1000.0);
        assert_eq!(v["result"]["redis_commands"]["calls"]["fcall"], 500);
        assert_eq!(
            v["result"]["redis_commands"]["per_address"][0]["addr"],
            "127.0.0.1:6380"
        );
        // A dm report has no storm (null), a ramp nests dm results per step.
        let dm: serde_json::Value = serde_json::from_str(&reports[1].to_json().unwrap()).unwrap();
        assert!(dm["result"]["storm"].is_null());
        let ramp: serde_json::Value = serde_json::from_str(&reports[2].to_json().unwrap()).unwrap();
        assert_eq!(ramp["params"]["start"], 100.0);
        assert_eq!(ramp["result"]["steps"][0]["result"]["sent"], 500);
    }

    /// Reads a committed report and checks that the typed report holds every field it
    /// has, with the same values: parsing it as a `Value` and going through `Report`
    /// give the same JSON. (Not the same bytes: without serde_json's `float_roundtrip`
    /// a float may be read one ULP off, e.g. 10.620000000000001 as 10.62, the same way
    /// on both paths.)
    fn committed(path: &str) -> Report {
        let file = format!("{}/results/{path}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let report: Report = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let as_read: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_value(&report).unwrap(), as_read, "{file}");
        report
    }

    #[test]
    fn committed_reports_deserialize() {
        let dm = committed("2026-12-04/dm-5000-final-1.json");
        let Run::Dm { params, result } = &dm.run else {
            panic!("a dm report: {:?}", dm.run);
        };
        assert_eq!(params.scenario.users, 1000);
        assert_eq!(params.scenario.rate, 5000.0);
        assert!(result.ok && result.counts.lost == 0 && result.counts.duplicated == 0);
        assert!(result.cpu.redis.is_some() && result.redis_commands.is_some());
        let cluster = committed("2026-12-04/dm-5000-cluster3.json");
        let Run::Dm { params, result } = &cluster.run else {
            panic!("a dm report: {:?}", cluster.run);
        };
        assert_eq!(params.redis_pid, None);
        assert_eq!(params.redis_pids.len(), 3);
        assert_eq!(result.cpu.redis_processes.len(), 3);
        let ramp = committed("2026-12-04/ramp-final.json");
        let Run::Ramp { result, .. } = &ramp.run else {
            panic!("a ramp report: {:?}", ramp.run);
        };
        assert!(!result.steps.is_empty());
    }

    /// Every report under `results/` reads as a `Report`; those written since the
    /// report took its current shape (2026-12-04) with nothing left out or added.
    #[test]
    fn every_committed_report_deserializes() {
        fn json_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    json_files(&path, out);
                } else if path.extension().is_some_and(|e| e == "json") {
                    out.push(path);
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
        let mut files = Vec::new();
        json_files(&root, &mut files);
        assert!(files.len() > 50, "{files:?}");
        for path in files {
            let rel = path
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .to_string();
            if rel.starts_with("2026-12-04") {
                committed(&rel);
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                let report: Report =
                    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{rel}: {e}"));
                // Older reports lack fields added since (they read as defaults), but
                // every field they have is kept.
                let as_read: serde_json::Value = serde_json::from_str(&text).unwrap();
                let typed = serde_json::to_value(&report).unwrap();
                assert_keeps_every_field(&as_read, &typed, &rel);
            }
        }
    }

    /// Every object key in `old` is in `new`, with the same value where it is not an
    /// object or array of objects.
    fn assert_keeps_every_field(old: &serde_json::Value, new: &serde_json::Value, at: &str) {
        use serde_json::Value;
        match (old, new) {
            (Value::Object(o), Value::Object(n)) => {
                for (k, v) in o {
                    let nv = n.get(k).unwrap_or_else(|| panic!("{at}.{k} lost"));
                    assert_keeps_every_field(v, nv, &format!("{at}.{k}"));
                }
            }
            (Value::Array(o), Value::Array(n)) => {
                assert_eq!(o.len(), n.len(), "{at}");
                for (i, (a, b)) in o.iter().zip(n).enumerate() {
                    assert_keeps_every_field(a, b, &format!("{at}[{i}]"));
                }
            }
            (o, n) => assert_eq!(o, n, "{at}"),
        }
    }
}

/// `chaos`: `dm` load on a real cluster while faults are injected on a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosParams {
    #[serde(flatten)]
    pub dm: DmParams,
    /// The fault kinds, injected in this order, round-robin.
    pub faults: Vec<String>,
    pub first_at_secs: f64,
    pub every_secs: f64,
    pub pause_ms: u64,
    /// Nodes a `node-kill` cycles through (gw-1 … gw-N).
    pub nodes: u32,
    /// The command that injects faults (`<script> <fault> … --run-dir <run_dir>`).
    pub cluster_script: String,
    pub run_dir: String,
}

/// `chaos`: the whole run's figures, the verdicts, and the figures per fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosResult {
    pub users: u64,
    pub connected: u64,
    pub connect_failures: u64,
    pub sent: u64,
    pub acked: u64,
    pub send_errors: BTreeMap<String, u64>,
    pub unacked: u64,
    pub delivered: u64,
    /// Acked, never delivered to the recipient's connection.
    pub lost: u64,
    /// Delivered twice under two ids, or under another id than the ack's.
    pub duplicated: u64,
    /// Delivered after a later message of the same sender.
    pub out_of_order: u64,
    /// Delivered although the sender was told the send failed.
    pub delivered_unacked: u64,
    /// Second copies under the same id (a resume replaying what was seen: harmless).
    pub redelivered: u64,
    pub unexpected_disconnects: u64,
    /// Clients that lost their connection and never resumed.
    pub clients_not_recovered: u64,
    pub latency: Percentiles,
    pub ack_latency: Percentiles,
    /// Messages intended before the first fault.
    pub baseline: PhaseResult,
    /// One entry per fault kind, in the order of `params.faults`.
    pub faults: Vec<FaultResult>,
    /// Every injection, in order.
    pub injections: Vec<Injection>,
    /// Every acked message delivered exactly once, in order: lost, duplicated and
    /// out_of_order all zero.
    pub exactly_once: bool,
    /// Every client signed in and every one that lost its connection resumed; every
    /// send was answered.
    pub all_recovered: bool,
    /// exactly_once, all_recovered, and every injection succeeded.
    pub ok: bool,
    pub warnings: Vec<String>,
}

/// What a chaos run counted in one phase, or in a set of phases added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseCounts {
    pub sent: u64,
    pub acked: u64,
    /// Refused with an error frame (e.g. `unavailable`), not acked.
    pub errors: u64,
    /// Neither acked nor refused by the end of the drain.
    pub unacked: u64,
    /// Delivered to the recipient's connection (first copy).
    pub delivered: u64,
    /// Acked but never delivered.
    pub lost: u64,
    /// Delivered under a second id (stored twice), or acked under one id and
    /// delivered under another.
    pub duplicated: u64,
    /// Delivered after a later message of the same sender.
    pub out_of_order: u64,
    /// Delivered although the send was answered with an error (the error lied).
    pub delivered_unacked: u64,
    /// Connections that ended unexpectedly in the phase, resumed, never resumed.
    pub disconnects: u64,
    pub reconnected: u64,
    pub reconnect_failures: u64,
}

impl PhaseCounts {
    /// Adds `other` in (phases of several workers, or several phases).
    pub fn add(&mut self, other: &PhaseCounts) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.errors += other.errors;
        self.unacked += other.unacked;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.delivered_unacked += other.delivered_unacked;
        self.disconnects += other.disconnects;
        self.reconnected += other.reconnected;
        self.reconnect_failures += other.reconnect_failures;
    }
}

/// Figures of the messages intended in a set of phases (see `dm::PhaseTally`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    #[serde(flatten)]
    pub counts: PhaseCounts,
    /// Worst intended-send-to-delivery time of a message of these phases.
    pub max_delivery_ms: f64,
    /// Drop-to-resumed times of the disconnects.
    pub reconnect: Percentiles,
}

/// One fault kind: how often it was injected and what the messages intended after
/// each injection (until the next one) went through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultResult {
    pub fault: String,
    pub injected: u64,
    /// Injections whose command failed.
    pub failed: u64,
    /// Longest injection command (a restart: until the process is ready again).
    pub command_ms_max: f64,
    #[serde(flatten)]
    pub figures: PhaseResult,
}

/// One injection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Injection {
    pub fault: String,
    /// The node, for `node-kill`.
    pub node: Option<u32>,
    /// Planned time, seconds after the start of the sends.
    pub at_secs: f64,
    /// When the command started, seconds after the start of the sends.
    pub started_secs: f64,
    pub command_ms: f64,
    pub ok: bool,
    /// The command's last output line (its error when it failed).
    pub output: String,
}

/// The parameters of one `room` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomParams {
    pub rooms: u64,
    pub members: u64,
    /// Messages per second per room.
    pub rate: f64,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub drain_secs: f64,
    pub connect_rate: f64,
}

/// The result of a `room` run. A delivery is one room message reaching one member's
/// connection; every connected member must receive every acked message of its room
/// exactly once, in the room's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomResult {
    pub rooms: u64,
    pub members_per_room: u64,
    pub members: u64,
    pub connected: u64,
    pub connect_failures: u64,
    pub connect_errors: BTreeMap<String, u64>,
    /// Node name → members signed in there.
    pub nodes: BTreeMap<String, u64>,
    pub target_rate_per_room: f64,
    pub window_secs: f64,
    /// Room messages sent and acked (all rooms).
    pub sent: u64,
    pub acked: u64,
    pub send_errors: BTreeMap<String, u64>,
    /// Acked messages × connected members of their room.
    pub expected_deliveries: u64,
    /// Distinct deliveries (room message, member).
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Deliveries whose message id differs from the id the sender was acked.
    pub mismatched_ids: u64,
    /// Deliveries whose id was not above the member's previous one.
    pub out_of_order: u64,
    /// Members whose connection ended during the run.
    pub disconnected: u64,
    /// `sent_per_sec`: room messages; `delivered_per_sec`: deliveries.
    pub throughput: Throughput,
    /// Intended send time → receipt, at every member (the sender's own copy included).
    pub latency: Percentiles,
    pub ack_latency: Percentiles,
    pub timeline: Vec<TimelineRow>,
    /// Redis CPU (all `--redis-pid`s, from `/proc`) / room messages acked, in µs.
    pub redis_cpu_us_per_room_message: Option<f64>,
    /// Redis CPU over the send window from `INFO cpu`, and above the idle rate measured
    /// just before with every member connected (absent from earlier reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_cpu: Option<RedisCpu>,
    /// Per-process CPU; its per-message figures are per room message acked.
    pub cpu: CpuReport,
    /// Redis commands per room message acked.
    pub redis_commands: Option<RedisWork>,
    pub warnings: Vec<String>,
    pub ok: bool,
}

/// Redis CPU with nothing sent: what it costs to hold the members (presence refreshes,
/// timers), to be taken off the send window's figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RedisIdle {
    pub secs: f64,
    pub cpu_seconds: f64,
    pub percent_of_core: f64,
}

/// Redis CPU (`INFO cpu`, summed over every address) over a send window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RedisCpu {
    pub window_secs: f64,
    pub cpu_seconds: f64,
    pub percent_of_core: f64,
    /// CPU microseconds per room message acked, all of it.
    pub us_per_room_message: Option<f64>,
    pub idle: Option<RedisIdle>,
    /// The window's CPU less the idle rate over the same time, per room message acked:
    /// the work the messages themselves cost.
    pub us_per_room_message_above_idle: Option<f64>,
}

impl RedisCpu {
    pub fn new(used: f64, secs: f64, idle: Option<RedisIdle>, messages: u64) -> RedisCpu {
        let per = |cpu: f64| (messages > 0).then(|| cpu * 1e6 / messages as f64);
        let above = idle.and_then(|i| per(used - i.cpu_seconds / i.secs.max(1e-9) * secs));
        RedisCpu {
            window_secs: secs,
            cpu_seconds: used,
            percent_of_core: used / secs.max(1e-9) * 100.0,
            us_per_room_message: per(used),
            idle,
            us_per_room_message_above_idle: above,
        }
    }
}
