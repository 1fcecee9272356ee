//! `scripts/cluster`: `up` starts Redis, two nodes and nginx in front of them under a
//! run folder; two guests chat through nginx (WebSocket upgrade through the proxy);
//! connections land on both nodes; `down` stops exactly the recorded processes. With
//! `--redis-cluster 3` Redis is a Cluster of three primaries, and a message crosses
//! from one node to the other through it.
//!
//! Needs nginx (CI installs it; the script installs it itself when run as root). When it
//! is missing the test fails with the script's message, never skips.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use chat_client::{Client, Credential};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/cluster")
}

/// The gateway binary as the script is given it: a link named otherwise than
/// `chat-gateway` (as a copy of another build would be), so `down` must find the
/// nodes by the path it started them with.
fn gateway_bin(run_dir: &Path) -> PathBuf {
    let link = run_dir.join("gw-under-test");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_chat-gateway"), &link)
            .expect("link the gateway binary");
    }
    link
}

fn cluster(args: &[&str], run_dir: &Path) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .arg("--run-dir")
        .arg(run_dir)
        .env("CHAT_GATEWAY_BIN", gateway_bin(run_dir))
        .output()
        .expect("run scripts/cluster")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `down` when dropped, so a failed assertion leaves no process behind.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = cluster(&["down"], self.0);
    }
}

/// Whether `pid` is still a live process (a zombie waiting for its reaper is not).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(|r| r.trim_start().to_string()))
        .is_some_and(|state| !state.starts_with('Z') && !state.starts_with('X'))
}

/// The variables of `<run>/cluster.env`.
fn cluster_env(run: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(run.join("cluster.env"))
        .expect("cluster.env")
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The PIDs recorded in `<run>/pids`, in start order.
fn recorded_pids(run: &Path) -> Vec<u32> {
    std::fs::read_to_string(run.join("pids"))
        .expect("pids file")
        .lines()
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .expect("pid column")
                .parse()
                .expect("pid")
        })
        .collect()
}

/// Runs `down` and checks every one of `pids` is gone and the run folder forgets them.
fn down_stops(run: &Path, pids: &[u32]) {
    let out = cluster(&["down"], run);
    assert!(
        out.status.success(),
        "scripts/cluster down failed\n{}",
        text(&out)
    );
    for &pid in pids {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(pid), "pid {pid} still runs after down");
    }
    assert!(
        !run.join("pids").exists(),
        "down forgets the processes it stopped"
    );
}

/// The status line of `GET http://<host:port>/readyz` (empty when nothing answers).
fn readyz(host_port: &str) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(host_port) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = write!(s, "GET /readyz HTTP/1.0\r\nHost: {host_port}\r\n\r\n");
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.lines().next().unwrap_or_default().to_string()
}

/// Two consecutive free ports for the nodes, one more for nginx.
fn ports() -> (u16, u16) {
    loop {
        let nginx = chat_testkit::free_port();
        let node = chat_testkit::free_port();
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if node < u16::MAX && node + 1 != nginx && free(node + 1) {
            return (nginx, node);
        }
    }
}

/// `scripts/cluster up --nodes 2 <extra> --port P --node-port N` in `run` on free ports;
/// checks it succeeded (a guard runs `down` however the test ends). Returns nginx's
/// port and the guard.
fn up<'a>(run: &'a Path, extra: &[&str]) -> (u16, Down<'a>) {
    let (port, node_port) = ports();
    let (port_arg, node_arg) = (port.to_string(), node_port.to_string());
    let mut args = vec!["up", "--nodes", "2"];
    args.extend_from_slice(extra);
    args.extend([
        "--port",
        port_arg.as_str(),
        "--node-port",
        node_arg.as_str(),
    ]);
    let out = cluster(&args, run);
    let down = Down(run);
    assert!(
        out.status.success(),
        "scripts/cluster up {extra:?} failed (is nginx installed?)\n{}",
        text(&out)
    );
    (port, down)
}

/// alice signs in at `alice_url`, bob at `bob_url`, and alice's message reaches bob.
async fn alice_to_bob(alice_url: &str, bob_url: &str, body: &str) -> (Client, Client) {
    let mut alice = Client::connect(alice_url, Credential::Username("alice".into()), None)
        .await
        .expect("alice signs in");
    let mut bob = Client::connect(bob_url, Credential::Username("bob".into()), None)
        .await
        .expect("bob signs in");
    let sent = alice
        .send(bob.user_id(), body)
        .await
        .expect("alice's send is acked");
    let got = bob
        .next_message(Duration::from_secs(10))
        .await
        .expect("bob receives alice's message");
    assert_eq!(got, sent);
    (alice, bob)
}

#[tokio::test]
async fn cluster_up_chats_through_nginx_and_down_stops_every_process() {
    let run = tempfile_dir();
    let (port, _down) = up(run.path(), &[]);

    let env = cluster_env(run.path());
    let url = env["CLUSTER_URL"].clone();
    assert_eq!(url, format!("ws://127.0.0.1:{port}/ws"));
    assert_eq!(env["REDIS_PIDS"], env["REDIS_PID"], "one Redis: {env:?}");
    assert_eq!(env["REDIS_ADDRS"], env["REDIS_ADDR"], "one Redis: {env:?}");
    let pids = recorded_pids(run.path());
    assert_eq!(pids.len(), 4, "redis, two nodes, nginx");
    assert!(
        pids.iter().all(|&p| alive(p)),
        "every recorded process runs"
    );

    // Two guests chat through nginx.
    let (alice, bob) = alice_to_bob(&url, &url, "hello through nginx").await;

    // least_conn spreads the open connections over both nodes.
    let mut nodes: BTreeSet<String> =
        [alice.welcome().node.clone(), bob.welcome().node.clone()].into();
    let mut held = Vec::new();
    for i in 0..4 {
        let c = Client::connect(&url, Credential::Username(format!("guest{i}")), None)
            .await
            .expect("guest signs in through nginx");
        nodes.insert(c.welcome().node.clone());
        held.push(c);
    }
    assert_eq!(
        nodes,
        BTreeSet::from(["gw-1".to_string(), "gw-2".to_string()]),
        "connections through nginx land on both nodes"
    );
    assert!(
        run.path().join("nginx/access.log").exists(),
        "nginx logs under the run folder"
    );

    for c in held {
        c.close().await;
    }
    alice.close().await;
    bob.close().await;
    down_stops(run.path(), &pids);
}

#[tokio::test]
async fn cluster_up_on_a_redis_cluster_of_three_primaries() {
    let run = tempfile_dir();
    let (_, _down) = up(run.path(), &["--redis-cluster", "3"]);

    // cluster.env lists the three primaries; the singular variables are the first.
    let env = cluster_env(run.path());
    let redis_pids: Vec<u32> = env["REDIS_PIDS"]
        .split(',')
        .map(|p| p.parse().expect("redis pid"))
        .collect();
    let redis_addrs: Vec<&str> = env["REDIS_ADDRS"].split(',').collect();
    assert_eq!(redis_pids.len(), 3, "{env:?}");
    assert_eq!(redis_addrs.len(), 3, "{env:?}");
    assert_eq!(
        redis_addrs.iter().collect::<BTreeSet<_>>().len(),
        3,
        "three distinct addresses: {env:?}"
    );
    assert_eq!(env["REDIS_PID"], redis_pids[0].to_string());
    assert_eq!(env["REDIS_ADDR"], redis_addrs[0]);
    assert_eq!(
        env["REDIS_URL"],
        format!("redis-cluster://{}", env["REDIS_ADDRS"]),
        "the URL the nodes were given"
    );
    let pids = recorded_pids(run.path());
    assert_eq!(pids.len(), 6, "three redis, two nodes, nginx");
    assert!(redis_pids.iter().all(|p| pids.contains(p)), "{pids:?}");
    assert!(
        pids.iter().all(|&p| alive(p)),
        "every recorded process runs"
    );
    let status = cluster(&["status"], run.path());
    assert!(status.status.success(), "{}", text(&status));
    let status = String::from_utf8_lossy(&status.stdout);
    for addr in &redis_addrs {
        assert!(
            status.contains(&format!("redis {addr} cluster_state:ok")),
            "status shows each primary's cluster state:\n{status}"
        );
    }

    // Both nodes ready; a message from a user on gw-1 reaches a user on gw-2.
    let node_urls: Vec<&str> = env["NODE_URLS"].split(',').collect();
    assert_eq!(node_urls.len(), 2, "{env:?}");
    for u in &node_urls {
        let host_port = u.trim_start_matches("ws://").trim_end_matches("/ws");
        let line = readyz(host_port);
        assert!(line.contains(" 200"), "{u} not ready: {line:?}");
    }
    let (alice, bob) =
        alice_to_bob(node_urls[0], node_urls[1], "hello across the redis cluster").await;
    assert_eq!(alice.welcome().node, "gw-1");
    assert_eq!(bob.welcome().node, "gw-2");
    alice.close().await;
    bob.close().await;

    down_stops(run.path(), &pids);
}

fn tempfile_dir() -> TempDir {
    TempDir::new()
}

/// A temp folder removed on drop (the gateway's dev-dependencies have no tempfile).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "chat-cluster-test-{}-{}",
            std::process::id(),
            chat_testkit::free_port()
        ));
        std::fs::create_dir_all(&dir).expect("temp run dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
