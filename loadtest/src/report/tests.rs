//! The report's unit tests: figures computed from what a run measured, and old
//! reports that still deserialize with every field kept.

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
