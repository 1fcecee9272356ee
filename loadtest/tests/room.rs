//! The `room` scenario against a real two-node cluster (Redis + two chat-gateway
//! processes), tiny: 2 rooms of 5 members, 5 messages per second per room, 3 s.
//! Asserts the report's counts are consistent and nothing was lost or duplicated —
//! never how fast anything was.

use std::process::Command;

use chat_testkit::{Cluster, Engine};
use serde_json::Value;

#[test]
fn room_scenario_delivers_every_room_message_to_every_member_once() {
    let cluster = Cluster::start(
        Engine::Redis,
        2,
        &[
            ("CHAT_SERVER__ALLOWED_ORIGINS", "*"),
            ("CHAT_LIMITS__SEND_PER_SECOND", "1000"),
            ("CHAT_LIMITS__SEND_BURST", "1000"),
        ],
    );
    let redis = cluster.redis.as_ref().expect("own redis-server");
    let info = redis.command(&["INFO", "server"]).expect("INFO server");
    let redis_pid: u32 = info
        .lines()
        .find_map(|l| l.trim().strip_prefix("process_id:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("redis process_id");
    let dir = tempfile::tempdir().expect("temp dir");
    let out_path = dir.path().join("room.json");
    let join = |v: Vec<String>| v.join(",");
    let out = Command::new(env!("CARGO_BIN_EXE_chat-loadtest"))
        .arg("--target")
        .arg(join(cluster.urls()))
        .arg("--gateway-pid")
        .arg(join(cluster.pids().iter().map(|p| p.to_string()).collect()))
        .arg("--redis-pid")
        .arg(redis_pid.to_string())
        .arg("--redis-addr")
        .arg(format!("127.0.0.1:{}", redis.port))
        .arg("--out")
        .arg(&out_path)
        .args([
            "room",
            "--rooms",
            "2",
            "--members",
            "5",
            "--rate",
            "5",
            "--duration-secs",
            "3",
            "--drain-secs",
            "10",
            "--idle-secs",
            "1",
        ])
        .output()
        .expect("run chat-loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "room run failed ({:?})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("room: 2 rooms x 5 members"), "{stdout}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).expect("report")).expect("JSON");
    assert_eq!(report["scenario"], "room");
    assert_eq!(report["params"]["rooms"], 2);
    assert_eq!(report["params"]["members"], 5);
    let r = &report["result"];
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {r}"))
    };
    assert_eq!(n("members"), 10, "{r}");
    assert_eq!(n("connected"), 10, "{r}");
    assert_eq!(n("connect_failures"), 0, "{r}");
    // 2 rooms × 5 msg/s × 3 s.
    assert_eq!(n("sent"), 30, "{r}");
    assert_eq!(n("acked"), n("sent"), "every send acked: {r}");
    assert_eq!(n("expected_deliveries"), n("acked") * 5, "{r}");
    assert_eq!(n("received"), n("expected_deliveries"), "{r}");
    assert_eq!(n("lost"), 0, "{r}");
    assert_eq!(n("duplicated"), 0, "{r}");
    assert_eq!(n("out_of_order"), 0, "{r}");
    assert_eq!(n("mismatched_ids"), 0, "{r}");
    assert_eq!(r["ok"], true, "{r}");
    // Both nodes got members (round-robin).
    let nodes = r["nodes"].as_object().expect("nodes");
    assert_eq!(nodes.len(), 2, "{r}");
    assert!(nodes.values().all(|v| v.as_u64() == Some(5)), "{r}");
    // Latency at every member: one sample per delivery, ordered percentiles.
    let lat = &r["latency"];
    assert_eq!(lat["count"].as_u64(), Some(n("received")), "{lat}");
    let f = |k: &str| lat[k].as_f64().unwrap_or_else(|| panic!("{k} in {lat}"));
    assert!(
        f("p50_ms") <= f("p99_ms") && f("p99_ms") <= f("p999_ms") && f("p999_ms") <= f("max_ms")
    );
    // Redis CPU per room message is measured and is the report's per-message figure.
    let redis_us = r["redis_cpu_us_per_room_message"]
        .as_f64()
        .expect("redis µs");
    assert!(redis_us > 0.0, "{r}");
    assert_eq!(
        r["cpu"]["redis_total"]["us_per_message"].as_f64(),
        Some(redis_us),
        "{r}"
    );
    assert_eq!(
        r["cpu"]["gateways"].as_array().map(Vec::len),
        Some(2),
        "{r}"
    );
    // Redis CPU from INFO cpu over the send window, with the idle rate measured first
    // and taken off.
    let rc = &r["redis_cpu"];
    let g = |v: &Value, k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
    assert!(g(&rc["idle"], "secs") >= 0.9, "{rc}");
    assert!(g(&rc["idle"], "cpu_seconds") >= 0.0, "{rc}");
    assert!(g(rc, "us_per_room_message") > 0.0, "{rc}");
    assert!(
        g(rc, "us_per_room_message_above_idle") <= g(rc, "us_per_room_message"),
        "{rc}"
    );
    // The command window holds the room messages and nothing per member (sign-outs
    // come after it): each message stored once and published once.
    let calls = &r["redis_commands"]["calls"];
    assert_eq!(calls["xadd"].as_u64(), Some(n("acked")), "{calls}");
    assert_eq!(calls["spublish"].as_u64(), Some(n("acked")), "{calls}");
}
