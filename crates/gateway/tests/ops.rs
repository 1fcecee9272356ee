//! Operating a node: metrics that move with real traffic, a drain on SIGTERM that
//! moves clients to another node losing nothing, and configuration errors that stop
//! the node with a message naming the setting.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use chat_protocol::ServerFrame;
use common::*;

async fn scrape(addr: std::net::SocketAddr) -> String {
    let (status, body) = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "/metrics answers");
    body
}

/// Every counter and gauge a node exports (`crates/gateway/src/metric.rs`).
const COUNTERS_AND_GAUGES: [&str; 13] = [
    "chat_hello_total",
    "chat_sign_ins_total",
    "chat_messages_received_total",
    "chat_messages_delivered_total",
    "chat_recovery_replays_total",
    "chat_gap_reads_total",
    "chat_presence_repairs_total",
    "chat_rate_limited_total",
    "chat_slow_consumer_closes_total",
    "chat_origin_refusals_total",
    "chat_redis_errors_total",
    "chat_connections_open",
    "chat_pubsub_subscriptions",
];

/// A fresh node's first scrape lists every counter and gauge, described and at zero
/// (and the latency histograms, empty), before anything happened on it.
async fn fresh_node_lists_every_metric(engine: Engine) {
    let cluster = Cluster::single(engine, &[]);
    let text = scrape(cluster.addr(0)).await;
    for name in COUNTERS_AND_GAUGES {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} described on a fresh node:\n{text}"
        );
        assert_eq!(metric(&text, name), Some(0.0), "{name} at 0:\n{text}");
    }
    for name in ["chat_send_ack_seconds", "chat_redis_command_seconds"] {
        assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
        assert_eq!(metric(&text, &format!("{name}_count")), Some(0.0), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_node_lists_every_metric_memory() {
    fresh_node_lists_every_metric(Engine::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_node_lists_every_metric_redis() {
    fresh_node_lists_every_metric(Engine::Redis).await;
}

async fn metrics_move(engine: Engine) {
    let cluster = Cluster::single(engine, &[]);
    let addr = cluster.addr(0);
    let before = scrape(addr).await;
    let base = |name: &str| metric(&before, name).unwrap_or(0.0);
    let (received0, delivered0, guests0, acks0) = (
        base("chat_messages_received_total"),
        base("chat_messages_delivered_total"),
        base("chat_sign_ins_total"),
        base("chat_send_ack_seconds_count"),
    );

    let mut alice = guest(&cluster.url(0), "alice").await;
    let mut bob = guest(&cluster.url(0), "bob").await;
    let bob_id = bob.user_id().to_string();
    for i in 0..3 {
        alice.send(&bob_id, &format!("m{i}")).await.expect("send");
        expect_message(&mut bob, "message").await;
    }
    let after = eventually("metrics reflect the chat", WAIT, || async {
        let text = scrape(addr).await;
        let value = |name: &str| metric(&text, name).unwrap_or(0.0);
        // 3 messages, each delivered to bob and echoed to alice.
        (value("chat_messages_delivered_total") >= delivered0 + 6.0).then_some(text)
    })
    .await;
    let value = |name: &str| metric(&after, name).unwrap_or(0.0);
    assert_eq!(value("chat_messages_received_total"), received0 + 3.0);
    assert_eq!(value("chat_sign_ins_total"), guests0 + 2.0);
    assert_eq!(value("chat_send_ack_seconds_count"), acks0 + 3.0);
    assert_eq!(value("chat_connections_open"), 2.0);
    assert!(value("chat_pubsub_subscriptions") >= 2.0);
    assert!(
        after.contains("# TYPE chat_send_ack_seconds"),
        "latency histogram exported"
    );
}

both_engines!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    metrics_move
);

/// SIGTERM with a grace period: `/readyz` fails first while sockets stay open, then
/// every socket is closed with 1001; the clients resume on the other node and get
/// every message sent meanwhile exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_clients_without_loss() {
    let env = [
        ("CHAT_SERVER__SHUTDOWN_GRACE_SECS", "2"),
        ("CHAT_SERVER__DRAIN_SPREAD_SECS", "1"),
        ("CHAT_LIMITS__SEND_PER_SECOND", "1000"),
        ("CHAT_LIMITS__SEND_BURST", "1000"),
    ];
    let mut cluster = Cluster::start(Engine::Redis, 2, &env);
    let draining = cluster.addr(0);
    let mut alice = guest(&cluster.url(1), "alice").await;
    let mut bobs = Vec::new();
    for i in 0..4 {
        bobs.push(guest(&cluster.url(0), &format!("bob{i}")).await);
    }
    let ids: Vec<String> = bobs.iter().map(|b| b.user_id().to_string()).collect();

    cluster.nodes[0].signal(15);
    eventually("/readyz 503 while draining", WAIT, || async move {
        (get_status(draining, "/readyz").await == 503).then_some(())
    })
    .await;
    // Still serving during the grace period.
    bobs[0]
        .ping()
        .await
        .expect("socket still open during the grace period");

    // Alice keeps sending to every bob throughout the drain.
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); bobs.len()];
    let mut live: Vec<HashSet<String>> = vec![HashSet::new(); bobs.len()];
    let mut states = Vec::new();
    for (b, bob) in bobs.iter_mut().enumerate() {
        loop {
            match bob.next_event_timeout(Duration::from_millis(50)).await {
                Ok(Some(ServerFrame::Message { message, .. })) => {
                    live[b].insert(message.id.clone());
                }
                Ok(_) => {}
                Err(_) => break,
            }
            let i = ids.iter().position(|id| id == bob.user_id()).expect("bob");
            let m = alice
                .send(&ids[i], &format!("during drain {}", sent[i].len()))
                .await
                .expect("send");
            sent[i].push(m.id);
        }
        states.push(bob.resume_state());
    }
    let status = tokio::task::block_in_place(|| cluster.nodes[0].wait(Duration::from_secs(15)));
    assert_eq!(
        status,
        Some(Some(0)),
        "drained node exits 0\n{}",
        cluster.logs()
    );

    // A few more after the node is gone; then every bob resumes on node 1.
    for (i, id) in ids.iter().enumerate() {
        let m = alice.send(id, "after drain").await.expect("send");
        sent[i].push(m.id);
    }
    for (i, state) in states.into_iter().enumerate() {
        let mut bob = Client::resume(&cluster.url(1), state)
            .await
            .expect("resume on node 1");
        assert!(
            bob.welcome().recovered,
            "cursor recovered on the other node"
        );
        // Everything not received before the close is replayed, in order, once.
        let want: Vec<String> = sent[i]
            .iter()
            .filter(|id| !live[i].contains(*id))
            .cloned()
            .collect();
        assert!(
            !want.is_empty(),
            "at least the message sent after the drain"
        );
        let mut got = Vec::new();
        while got.len() < want.len() {
            got.push(expect_message(&mut bob, "replayed message").await.id);
        }
        assert_eq!(
            got, want,
            "bob{i}: missed messages replayed exactly, in order"
        );
        assert!(
            !matches!(
                bob.next_event_timeout(Duration::from_millis(200)).await,
                Ok(Some(ServerFrame::Message { .. }))
            ),
            "nothing extra"
        );
    }
}

#[test]
fn invalid_configuration_names_the_setting() {
    let bin = env!("CARGO_BIN_EXE_chat-gateway");
    for (var, value, needle) in [
        ("CHAT_SERVER__MAX_BODY", "lots", "max_body"),
        ("CHAT_SERVER__LISTNE", "127.0.0.1:1", "listne"),
        ("CHAT_REDIS__URL", "http://example", "redis.url"),
        ("CHAT_LOG__FORMAT", "xml", "log.format"),
        // Protocol 1.1: secrets too short to be secrets stop the node.
        (
            "CHAT_AUTH__JWT_SECRET",
            "0123456789abcdef0123456789abcde",
            "auth.jwt_secret: must be at least 32 bytes",
        ),
        (
            "CHAT_API__KEY",
            "0123456789abcde",
            "api.key: must be at least 16 characters",
        ),
    ] {
        let out = std::process::Command::new(bin)
            .env(var, value)
            .env("CHAT_SERVER__LISTEN", "127.0.0.1:0")
            .output()
            .expect("run chat-gateway");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{var}={value} must stop the node"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(needle),
            "{var}: message names the setting: {stderr}"
        );
    }
    // Unrelated CHAT_* variables (tools, tests) are not settings.
    let out = std::process::Command::new(bin)
        .env("CHAT_SOMETHING_ELSE", "x")
        .args(["token", "--user", "u1", "--name", "U"])
        .env("CHAT_AUTH__JWT_SECRET", JWT_SECRET)
        .output()
        .expect("run chat-gateway token");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
