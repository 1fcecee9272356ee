//! A real Redis Cluster for tests: `n` primaries (`redis-server --cluster-enabled yes`)
//! on free ports, each in its own temp dir, joined with `redis-cli --cluster create`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis::RedisServer;

/// A Redis Cluster of primaries only (no replicas) on 127.0.0.1. Every node is killed
/// when this drops.
pub struct RedisCluster {
    /// The primaries, in the order given to `redis-cli --cluster create` (node `i`
    /// owns the `i`-th third of the slots for 3 nodes).
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` (≥ 3, Redis refuses fewer) primaries, creates the cluster and waits
    /// until every node reports `cluster_state:ok` and knows every other node.
    pub fn start(n: usize) -> RedisCluster {
        assert!(
            n >= 3,
            "redis-cli --cluster create needs at least 3 primaries"
        );
        let nodes: Vec<RedisServer> = (0..n)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli on PATH (it ships with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// Waits until every running node reports `cluster_state:ok` and knows all nodes.
    pub fn wait_ok(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let want_known = format!("cluster_known_nodes:{}", self.nodes.len());
        loop {
            let ok = self.nodes.iter().all(|node| {
                node.command(&["CLUSTER", "INFO"]).is_some_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_assigned:16384")
                        && info.contains(&want_known)
                })
            });
            if ok {
                return;
            }
            if Instant::now() > deadline {
                let states: Vec<String> = self
                    .nodes
                    .iter()
                    .map(|n| n.command(&["CLUSTER", "INFO"]).unwrap_or_default())
                    .collect();
                panic!("redis cluster not ok after {timeout:?}: {states:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// fred's cluster URL: `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=…`.
    pub fn url(&self) -> String {
        let mut url = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port);
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            url.push(if i == 1 { '?' } else { '&' });
            url.push_str(&format!("node=127.0.0.1:{}", node.port));
        }
        url
    }

    /// The node owning the hash slot of `key` (by `CLUSTER KEYSLOT` and the
    /// creation order of the slot ranges), as an index into `nodes`.
    pub fn node_of(&self, key: &str) -> usize {
        let reply = self.nodes[0]
            .command(&["CLUSTER", "KEYSLOT", key])
            .unwrap_or_default();
        let slot: u32 = reply
            .trim()
            .trim_start_matches(':')
            .parse()
            .expect("CLUSTER KEYSLOT reply");
        for (i, node) in self.nodes.iter().enumerate() {
            // CLUSTER COUNTKEYSINSLOT answers only on the owner; other nodes reply
            // with an error (or 0 in older versions), so ask CLUSTER NODES instead.
            let nodes = node.command(&["CLUSTER", "NODES"]).unwrap_or_default();
            let me = nodes.lines().find(|l| l.contains("myself"));
            if let Some(line) = me {
                for range in line.split_whitespace().skip(8) {
                    let (lo, hi) = match range.split_once('-') {
                        Some((lo, hi)) => (lo.parse().unwrap_or(1), hi.parse().unwrap_or(0)),
                        None => {
                            let s = range.parse().unwrap_or(u32::MAX);
                            (s, s)
                        }
                    };
                    if (lo..=hi).contains(&slot) {
                        return i;
                    }
                }
            }
        }
        panic!("no node owns slot {slot} of {key}");
    }

    /// `calls` of `command` in `INFO commandstats`, summed over every node.
    pub fn command_calls(&self, command: &str) -> u64 {
        self.nodes.iter().map(|n| n.command_calls(command)).sum()
    }
}
