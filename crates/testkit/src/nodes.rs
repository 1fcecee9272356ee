//! The one cluster helper of the integration tests: `chat-gateway` processes (named
//! gw-a, gw-b, …) on one engine, with the settings every test node shares.
//!
//! Several nodes in one test are separate processes, as the developers' guide asks:
//! they share nothing but Redis, like nodes on different machines.

use std::net::SocketAddr;

use crate::{Gateway, RedisServer};

/// HS256 secret every test node is configured with.
pub const JWT_SECRET: &str = "integration-test-secret-0123456789abcdef";
/// Bearer key of the server HTTP API on every test node.
pub const API_KEY: &str = "integration-test-api-key";

/// Which engine the nodes run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// One node, no Redis: the in-memory engine.
    Memory,
    /// A fresh `redis-server` shared by the nodes.
    Redis,
}

/// Nodes (and their Redis) for one test. Everything is killed on drop.
///
/// Every node signs guests in, accepts tokens signed with [`JWT_SECRET`] and
/// serves the API with [`API_KEY`]; `extra` settings (`CHAT_*` variables) come after
/// these and win.
pub struct Cluster {
    pub engine: Engine,
    /// The `redis-server` this cluster started; `None` on the memory engine and
    /// when the caller runs Redis ([`Cluster::on_redis_url`]).
    pub redis: Option<RedisServer>,
    pub nodes: Vec<Gateway>,
}

impl Cluster {
    /// One node on `engine`.
    pub fn single(engine: Engine, extra: &[(&str, &str)]) -> Cluster {
        Self::start(engine, 1, extra)
    }

    /// `nodes` nodes; on Redis they share a fresh `redis-server`, and the memory
    /// engine supports only one.
    pub fn start(engine: Engine, nodes: usize, extra: &[(&str, &str)]) -> Cluster {
        assert!(
            engine == Engine::Redis || nodes == 1,
            "the memory engine is a single node"
        );
        let redis = (engine == Engine::Redis).then(RedisServer::start);
        let url = redis.as_ref().map(RedisServer::url);
        let mut cluster = Cluster {
            engine,
            redis,
            nodes: Vec::new(),
        };
        let mut env = Vec::new();
        if let Some(url) = &url {
            env.push(("CHAT_REDIS__URL", url.as_str()));
        }
        env.extend_from_slice(extra);
        for i in 0..nodes {
            cluster.add_node(i, &env);
        }
        cluster
    }

    /// `nodes` nodes on a Redis the caller runs (a Redis Cluster or Sentinel set-up
    /// from the testkit, or a server the test stops and starts), reached through
    /// `redis_url`.
    pub fn on_redis_url(redis_url: &str, nodes: usize, extra: &[(&str, &str)]) -> Cluster {
        let mut cluster = Cluster {
            engine: Engine::Redis,
            redis: None,
            nodes: Vec::new(),
        };
        let mut env = vec![("CHAT_REDIS__URL", redis_url)];
        env.extend_from_slice(extra);
        for i in 0..nodes {
            cluster.add_node(i, &env);
        }
        cluster
    }

    fn add_node(&mut self, i: usize, extra: &[(&str, &str)]) {
        let node_id = format!("gw-{}", (b'a' + i as u8) as char);
        let mut env: Vec<(&str, &str)> = vec![
            ("CHAT_SERVER__NODE_ID", &node_id),
            ("CHAT_AUTH__GUESTS", "true"),
            ("CHAT_AUTH__JWT_SECRET", JWT_SECRET),
            ("CHAT_API__KEY", API_KEY),
        ];
        env.extend_from_slice(extra);
        self.nodes.push(Gateway::start(&env));
    }

    /// `ws://…/ws` of node `i`.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].ws_url()
    }

    /// Every node's `ws://…/ws`, in order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Gateway::ws_url).collect()
    }

    /// Node `i`, or the last node when the cluster is smaller (the memory engine's
    /// single node stands in for "the other node").
    pub fn other(&self, i: usize) -> usize {
        i.min(self.nodes.len() - 1)
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    /// Every running node's process id, in order.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().filter_map(Gateway::pid).collect()
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- node {i} ---\n{}", n.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
