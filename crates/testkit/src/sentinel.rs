//! A real Sentinel setup for tests: a primary, one replica and three sentinels, all
//! on free ports of 127.0.0.1 in temp dirs, monitoring the service `mymaster` with a
//! short `down-after-milliseconds` so a killed primary fails over in a few seconds.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis::{resp_command, RedisServer};

/// The service name the sentinels monitor.
pub const SENTINEL_SERVICE: &str = "mymaster";

/// One `redis-server --sentinel` process.
struct SentinelProcess {
    port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A primary, a replica and three sentinels. Everything is killed when this drops.
pub struct RedisSentinel {
    /// The servers: index 0 starts as the primary, index 1 as its replica.
    pub servers: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
}

impl RedisSentinel {
    /// Starts everything and waits until the replica is in sync and every sentinel
    /// knows the replica and the two other sentinels (so a failover can be voted).
    pub fn start() -> RedisSentinel {
        let primary = RedisServer::start();
        let primary_port = primary.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary_port]);
        let sentinels = (0..3).map(|_| spawn_sentinel(primary.port)).collect();
        let setup = RedisSentinel {
            servers: vec![primary, replica],
            sentinels,
        };
        setup.wait_ready(Duration::from_secs(30));
        setup
    }

    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let replica = &self.servers[1];
        loop {
            let synced = replica
                .command(&["INFO", "replication"])
                .is_some_and(|i| i.contains("master_link_status:up"));
            let sentinels_ready = self.sentinels.iter().all(|s| {
                let quorum = resp_command(s.port, &["SENTINEL", "CKQUORUM", SENTINEL_SERVICE])
                    .unwrap_or_default();
                let replicas = resp_command(s.port, &["SENTINEL", "REPLICAS", SENTINEL_SERVICE])
                    .unwrap_or_default();
                quorum.contains("3 usable")
                    && replicas.contains(&replica.port.to_string())
                    && !replicas.contains("disconnected")
            });
            if synced && sentinels_ready {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "sentinel setup not ready after {timeout:?}: replica synced {synced}, \
                     sentinels ready {sentinels_ready}"
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The sentinel ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// fred's sentinel URL:
    /// `redis-sentinel://127.0.0.1:S1/0?sentinelServiceName=mymaster&node=127.0.0.1:S2&node=127.0.0.1:S3`.
    pub fn url(&self) -> String {
        let mut url = format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={SENTINEL_SERVICE}",
            self.sentinels[0].port
        );
        for s in &self.sentinels[1..] {
            url.push_str(&format!("&node=127.0.0.1:{}", s.port));
        }
        url
    }

    /// The port of the primary according to the first sentinel that answers.
    pub fn primary_port(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let reply = resp_command(
                s.port,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE],
            )?;
            // *2\r\n$9\r\n127.0.0.1\r\n$5\r\n12345\r\n
            reply.lines().nth(4)?.trim().parse().ok()
        })
    }

    /// The server that is the primary now.
    pub fn primary(&self) -> &RedisServer {
        let port = self.primary_port().expect("a sentinel answers");
        self.servers
            .iter()
            .find(|s| s.port == port)
            .expect("the primary is one of the servers")
    }

    /// Kills (SIGKILL) the current primary. Returns its port.
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port().expect("a sentinel answers");
        let server = self
            .servers
            .iter_mut()
            .find(|s| s.port == port)
            .expect("the primary is one of the servers");
        server.kill();
        port
    }

    /// Waits until every sentinel names a primary other than `old_port` and that
    /// server answers as a master. Returns the new primary's port.
    pub fn wait_for_new_primary(&self, old_port: u16, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            let ports: Vec<Option<u16>> = self
                .sentinels
                .iter()
                .map(|s| {
                    resp_command(
                        s.port,
                        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE],
                    )
                    .and_then(|r| r.lines().nth(4)?.trim().parse().ok())
                })
                .collect();
            if let Some(Some(port)) = ports.first() {
                let agreed = ports.iter().all(|p| *p == Some(*port));
                let is_master = *port != old_port
                    && resp_command(*port, &["ROLE"]).is_some_and(|r| r.contains("master"));
                if agreed && is_master {
                    return *port;
                }
            }
            if Instant::now() > deadline {
                panic!("no new primary after {timeout:?}: sentinels say {ports:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn spawn_sentinel(primary_port: u16) -> SentinelProcess {
    let dir = tempfile::tempdir().expect("temp dir for sentinel");
    let port = crate::free_port();
    let conf = dir.path().join("sentinel.conf");
    let log = dir.path().join("sentinel.log");
    let text = format!(
        "port {port}\n\
         bind 127.0.0.1\n\
         dir {dir}\n\
         logfile {log}\n\
         sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {primary_port} 2\n\
         sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
         sentinel failover-timeout {SENTINEL_SERVICE} 5000\n\
         sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
        dir = dir.path().display(),
        log = log.display(),
    );
    std::fs::write(&conf, text).expect("write sentinel.conf");
    let child = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let process = SentinelProcess {
        port,
        _dir: dir,
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if resp_command(port, &["PING"]).is_some_and(|r| r.starts_with("+PONG")) {
            return process;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "sentinel on port {port} did not answer PING; see {}",
        log.display()
    );
}
