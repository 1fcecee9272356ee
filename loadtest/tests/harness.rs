//! The harness binary against a real two-node cluster (Redis + two chat-gateway
//! processes): briefly, with small N. Asserts only that its reports are correct —
//! counts match what was sent, nothing lost or stored twice, percentiles present and
//! ordered — never how fast anything was.

use std::path::Path;
use std::process::Command;

use chat_testkit::{Cluster, Engine};
use serde_json::Value;

/// Two nodes on one fresh Redis, taking any origin and sends as fast as the
/// scenarios make them.
fn start_cluster() -> Cluster {
    Cluster::start(
        Engine::Redis,
        2,
        &[
            ("CHAT_SERVER__ALLOWED_ORIGINS", "*"),
            ("CHAT_LIMITS__SEND_PER_SECOND", "1000"),
            ("CHAT_LIMITS__SEND_BURST", "1000"),
        ],
    )
}

/// The redis-server's PID, from `INFO server` (the test kit does not expose it).
fn redis_pid(cluster: &Cluster) -> u32 {
    let info = redis(cluster)
        .command(&["INFO", "server"])
        .expect("INFO server");
    info.lines()
        .find_map(|l| l.trim().strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no process_id in {info}"))
}

fn redis_addr(cluster: &Cluster) -> String {
    format!("127.0.0.1:{}", redis(cluster).port)
}

fn redis(cluster: &Cluster) -> &chat_testkit::RedisServer {
    cluster
        .redis
        .as_ref()
        .expect("the cluster runs its own redis-server")
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs the harness and returns its JSON report and printed summary (the run must
/// succeed: exit 0).
fn harness(cluster: &Cluster, dir: &Path, name: &str, args: &[&str]) -> (Value, String) {
    let out_path = dir.join(format!("{name}.json"));
    let plots = dir.join(format!("{name}-plots"));
    let out = Command::new(env!("CARGO_BIN_EXE_chat-loadtest"))
        .arg("--target")
        .arg(join(&cluster.urls()))
        .arg("--gateway-pid")
        .arg(join(&cluster.pids()))
        .arg("--out")
        .arg(&out_path)
        .arg("--plot-dir")
        .arg(&plots)
        .args(args)
        .output()
        .expect("run chat-loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chat-loadtest {args:?} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status.code()
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).expect("report written"))
            .expect("report is JSON");
    assert!(
        report["command_line"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == args[0])),
        "the report holds the exact command line"
    );
    (report, stdout.into_owned())
}

/// A CPU entry of the report with its µs per message (a number, above zero).
fn assert_us_per_message(c: &Value, what: &str) -> f64 {
    let us = c["us_per_message"]
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: no us_per_message in {c}"));
    assert!(us > 0.0, "{what}: {c}");
    assert_eq!(
        c["cpu_ms_per_1000_messages"].as_f64(),
        Some(us),
        "{what}: the earlier field is kept: {c}"
    );
    us
}

fn assert_percentiles(p: &Value, what: &str) {
    let f = |k: &str| {
        p[k].as_f64()
            .unwrap_or_else(|| panic!("{what}: {k} missing in {p}"))
    };
    assert!(
        p["count"].as_u64().unwrap_or(0) > 0,
        "{what}: no samples: {p}"
    );
    assert!(f("p50_ms") <= f("p90_ms"), "{what}: {p}");
    assert!(f("p90_ms") <= f("p99_ms"), "{what}: {p}");
    assert!(f("p99_ms") <= f("p999_ms"), "{what}: {p}");
    assert!(f("p999_ms") <= f("max_ms"), "{what}: {p}");
}

/// Every acked message received exactly once, counts consistent.
fn assert_exactly_once(r: &Value) {
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {r}"))
    };
    assert_eq!(n("connect_failures"), 0, "{r}");
    assert!(n("sent") > 0, "{r}");
    assert_eq!(n("sent"), n("acked"), "every send acked: {r}");
    assert_eq!(
        n("acked"),
        n("received"),
        "every acked message received: {r}"
    );
    assert_eq!(n("lost"), 0, "{r}");
    assert_eq!(n("duplicated"), 0, "{r}");
    assert_eq!(n("unacked"), 0, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    assert_percentiles(&r["latency"], "send->receive");
    assert_percentiles(&r["ack_latency"], "ack");
    assert_eq!(r["latency"]["count"].as_u64(), Some(n("received")));
}

#[test]
fn dm_storm_connect_and_node_kill_reports_are_correct() {
    let cluster = start_cluster();
    let dir = tempfile::tempdir().expect("temp dir");

    // dm: 10 users in pairs across both nodes, 50 msg/s for 3 s, Redis watched too.
    let redis_pid = redis_pid(&cluster).to_string();
    let redis_addr = redis_addr(&cluster);
    let (report, summary) = harness(
        &cluster,
        dir.path(),
        "dm",
        &[
            "dm",
            "--users",
            "10",
            "--rate",
            "50",
            "--duration-secs",
            "3",
            "--drain-secs",
            "10",
            "--redis-pid",
            &redis_pid,
            "--redis-addr",
            &redis_addr,
        ],
    );
    assert_eq!(report["scenario"], "dm");
    let r = &report["result"];
    assert_exactly_once(r);
    assert_eq!(r["users"], 10);
    assert_eq!(
        r["nodes"]["gw-a"], 5,
        "users spread over both nodes: {}",
        r["nodes"]
    );
    assert_eq!(
        r["nodes"]["gw-b"], 5,
        "users spread over both nodes: {}",
        r["nodes"]
    );
    assert!(r["timeline"].as_array().is_some_and(|t| !t.is_empty()));
    // CPU per message of every process: each node, Redis (one: the earlier shape, and
    // the sum), the harness itself; each printed as µs per message.
    let cpu = &r["cpu"];
    let gateways = cpu["gateways"].as_array().expect("gateways");
    assert_eq!(gateways.len(), 2, "{cpu}");
    for g in gateways {
        assert_us_per_message(g, "gateway");
        assert!(
            summary.contains(&format!("gateway pid {} CPU:", g["pid"])),
            "{summary}"
        );
    }
    assert_eq!(cpu["redis"]["pid"].to_string(), redis_pid, "{cpu}");
    let us = assert_us_per_message(&cpu["redis"], "redis");
    assert_eq!(cpu["redis_processes"].as_array().map(Vec::len), Some(1));
    assert_eq!(cpu["redis_total"]["processes"], 1, "{cpu}");
    assert_eq!(cpu["redis_total"]["us_per_message"].as_f64(), Some(us));
    assert_us_per_message(&cpu["context"]["harness"], "harness");
    assert!(
        cpu["context"]["harness_percent_of_core"].as_f64().is_some(),
        "{cpu}"
    );
    for who in [
        format!("redis pid {redis_pid} CPU:"),
        "harness (and its workers) CPU:".to_string(),
    ] {
        assert!(summary.contains(&who), "{who} missing in:\n{summary}");
    }
    assert_eq!(
        summary.matches(" µs per message").count(),
        4,
        "two nodes, Redis and the harness:\n{summary}"
    );
    // FCALLs counted per message (a node may batch sends into one chat_send call, and
    // sign-in and presence run in the same window: only that there are some).
    let cmds = &r["redis_commands"];
    assert!(
        cmds["per_message"]["fcall"].as_f64().unwrap_or(0.0) > 0.0,
        "{cmds}"
    );
    assert_eq!(
        cmds["per_address"][0]["addr"],
        redis_addr.as_str(),
        "{cmds}"
    );
    assert_eq!(cmds["per_address"][0]["calls"], cmds["calls"], "{cmds}");
    let params = &report["params"];
    assert_eq!(params["redis_pid"].to_string(), redis_pid, "{params}");
    assert_eq!(params["redis_addr"], redis_addr.as_str(), "{params}");
    assert_eq!(params["redis_addrs"], serde_json::json!([redis_addr]));
    for plot in ["latency-over-time.svg", "latency-distribution.svg"] {
        let svg = std::fs::read_to_string(dir.path().join("dm-plots").join(plot)).expect("plot");
        assert!(svg.starts_with("<svg"), "{plot} is an SVG");
    }

    // reconnect-storm over two worker processes: everyone drops at once and resumes.
    let (report, _) = harness(
        &cluster,
        dir.path(),
        "storm",
        &[
            "reconnect-storm",
            "--users",
            "10",
            "--rate",
            "40",
            "--duration-secs",
            "3",
            "--storm-at-secs",
            "1",
            "--workers",
            "2",
        ],
    );
    let r = &report["result"];
    assert_exactly_once(r);
    let s = &r["storm"];
    assert_eq!(s["dropped"], 10, "{s}");
    assert_eq!(s["reconnected"], 10, "{s}");
    assert_eq!(s["reconnect_failures"], 0, "{s}");
    assert_eq!(s["not_recovered"], 0, "{s}");
    assert_eq!(s["lost_during"], 0, "{s}");
    assert!(s["all_recovered_ms"].as_f64().is_some(), "{s}");

    // connect: 20 signed-in connections held briefly, RSS read for both nodes.
    let (report, _) = harness(
        &cluster,
        dir.path(),
        "connect",
        &[
            "connect",
            "--connections",
            "20",
            "--rate",
            "100",
            "--hold-secs",
            "1",
        ],
    );
    let r = &report["result"];
    assert_eq!(r["connections"], 20, "{r}");
    assert_eq!(r["failures"], 0, "{r}");
    assert_eq!(r["dropped_during_hold"], 0, "{r}");
    assert_percentiles(&r["latency"], "connect");
    let rss = r["gateway_rss"].as_array().expect("gateway_rss");
    assert_eq!(rss.len(), 2, "{r}");
    assert!(rss.iter().all(|g| g["connections"] == 10), "{r}");

    // Last, as it ends the second node: the storm is gw-b killed; its clients resume on
    // gw-a with their cursor, and nothing acked is lost.
    let gw_b = cluster.nodes[1].pid().expect("gw-b pid").to_string();
    let (report, _) = harness(
        &cluster,
        dir.path(),
        "kill",
        &[
            "reconnect-storm",
            "--users",
            "10",
            "--rate",
            "40",
            "--duration-secs",
            "3",
            "--storm-at-secs",
            "1",
            "--kill-gateway-pid",
            &gw_b,
        ],
    );
    let r = &report["result"];
    assert_exactly_once(r);
    let s = &r["storm"];
    assert_eq!(s["dropped"], 5, "gw-b's users dropped: {s}");
    assert_eq!(s["reconnected"], 5, "{s}");
    assert_eq!(s["not_recovered"], 0, "{s}");
}
