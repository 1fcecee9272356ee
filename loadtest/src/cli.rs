//! Command-line interface: global options (targets, report, plots, workers, the
//! processes to watch) and one subcommand per scenario.

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "chat-loadtest",
    version,
    about = "Load-test harness of the chat cluster: connect, dm, ramp, reconnect-storm, chaos and room scenarios."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub scenario: Scenario,
}

#[derive(Debug, Args, Clone)]
pub struct Global {
    /// WebSocket URL of a node or of the load balancer (repeatable, or comma-separated).
    /// Users are spread over targets round-robin; pairs span two targets when there are two.
    #[arg(
        long = "target",
        global = true,
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub targets: Vec<String>,
    /// Write the JSON report here.
    #[arg(long, global = true)]
    pub out: Option<String>,
    /// Write SVG plots (latency over time, latency distribution) into this folder.
    #[arg(long, global = true)]
    pub plot_dir: Option<String>,
    /// Worker processes sharing the load (each has its own open-file limit).
    #[arg(long, global = true, default_value_t = 1)]
    pub workers: u64,
    /// Runtime threads per harness process (0: one per core). Worker processes inherit it.
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
    /// Spread client source addresses over this many 127.0.x.y addresses (0: kernel's choice).
    #[arg(long, global = true, default_value_t = 250)]
    pub source_ips: u32,
    /// PID of a local gateway to measure (RSS, CPU), repeatable, in target order.
    #[arg(long = "gateway-pid", global = true, value_delimiter = ',')]
    pub gateway_pids: Vec<u32>,
    /// PID of a local redis-server, for its CPU time; repeatable or comma-separated
    /// (every primary of a Redis Cluster: each one's CPU and their sum are reported).
    #[arg(long = "redis-pid", global = true, value_delimiter = ',')]
    pub redis_pids: Vec<u32>,
    /// host:port of Redis, to count its commands per message (INFO commandstats);
    /// repeatable or comma-separated (every primary of a Redis Cluster).
    #[arg(long = "redis-addr", global = true, value_delimiter = ',')]
    pub redis_addrs: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// Ramp to N signed-in connections, hold them, report latency and RSS per connection.
    Connect {
        #[arg(long, default_value_t = 1000)]
        connections: u64,
        /// New connections per second.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        #[arg(long, default_value_t = 5.0)]
        hold_secs: f64,
    },
    /// Users in pairs exchanging direct messages at an open-loop rate.
    Dm(DmArgs),
    /// Steps the dm rate up; reports the highest rate with p99 under the bound and nothing lost.
    Ramp {
        #[arg(long, default_value_t = 100)]
        users: u64,
        #[arg(long, default_value_t = 500.0)]
        start: f64,
        #[arg(long, default_value_t = 500.0)]
        step: f64,
        #[arg(long, default_value_t = 20000.0)]
        max: f64,
        #[arg(long, default_value_t = 10.0)]
        step_secs: f64,
        #[arg(long, default_value_t = 50.0)]
        p99_ms: f64,
        #[arg(long, default_value_t = 1.0)]
        warmup_secs: f64,
        #[arg(long, default_value_t = 10.0)]
        drain_secs: f64,
    },
    /// Every client drops its socket at once while sends go on, then resumes with
    /// session + cursor; checks every message arrives exactly once.
    ReconnectStorm {
        #[arg(long, default_value_t = 100)]
        users: u64,
        /// Messages per second for all users together (default: one per user per second).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 10.0)]
        duration_secs: f64,
        /// When the storm hits (default: a third into the run).
        #[arg(long)]
        storm_at_secs: Option<f64>,
        #[arg(long, default_value_t = 20.0)]
        drain_secs: f64,
        #[arg(long, default_value_t = 1000.0)]
        connect_rate: f64,
        /// Instead of dropping every socket, kill this local gateway (SIGKILL) at the
        /// storm: its clients resume on the other targets.
        #[arg(long)]
        kill_gateway_pid: Option<u32>,
    },
    /// `dm` load on a local cluster (scripts/cluster up --aof) while faults are injected
    /// on a schedule: a node SIGKILLed and restarted, Redis's pub/sub clients killed,
    /// Redis writes paused, Redis SIGKILLed and restarted. Checks every acked message
    /// is delivered exactly once, in order, and every client recovers; figures per fault.
    Chaos(ChaosArgs),
    /// R rooms of M members (spread over the targets round-robin), S messages per
    /// second per room sent by the members in turn; checks every member's connection
    /// gets every acked room message exactly once, in order; latency at every member
    /// and Redis CPU per room message.
    Room(RoomArgs),
    /// Internal: one worker process's share (JSON job on stdin).
    #[command(hide = true)]
    Worker,
}

/// A fault the chaos scenario injects, each through `<cluster-script> <subcommand>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// `restart-node N`: SIGKILL node gw-N, start it again (N cycles over the nodes).
    NodeKill,
    /// `kill-pubsub`: CLIENT KILL TYPE pubsub on Redis.
    PubsubKill,
    /// `pause-writes MS`: CLIENT PAUSE MS WRITE on Redis.
    WritePause,
    /// `restart-redis`: SIGKILL Redis, start it again (AOF reload).
    RedisRestart,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::NodeKill => "node-kill",
            Fault::PubsubKill => "pubsub-kill",
            Fault::WritePause => "write-pause",
            Fault::RedisRestart => "redis-restart",
        }
    }
}

#[derive(Debug, Args, Clone)]
pub struct ChaosArgs {
    #[arg(long, default_value_t = 40)]
    pub users: u64,
    /// Messages per second for all users together.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// How long the sends go on (faults are injected within it).
    #[arg(long, default_value_t = 120.0)]
    pub duration_secs: f64,
    /// After the last send, how long to wait for outstanding acks and deliveries.
    #[arg(long, default_value_t = 30.0)]
    pub drain_secs: f64,
    #[arg(long, default_value_t = 200.0)]
    pub connect_rate: f64,
    /// Fault kinds, injected in this order round-robin (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "node-kill,pubsub-kill,write-pause,redis-restart"
    )]
    pub faults: Vec<Fault>,
    /// First injection, seconds after the sends start.
    #[arg(long, default_value_t = 5.0)]
    pub first_at_secs: f64,
    /// Seconds between injections.
    #[arg(long, default_value_t = 10.0)]
    pub every_secs: f64,
    /// Length of a write pause.
    #[arg(long, default_value_t = 2000)]
    pub pause_ms: u64,
    /// Runs `<script> restart-node N|kill-pubsub|pause-writes MS|restart-redis --run-dir <dir>`.
    #[arg(long, default_value = "scripts/cluster")]
    pub cluster_script: String,
    /// The cluster's run folder (as given to `scripts/cluster up --run-dir`).
    #[arg(long, default_value = "run/cluster")]
    pub run_dir: String,
    /// Nodes a node-kill cycles through (default: as many as the run folder's
    /// cluster.env lists in GATEWAY_PIDS).
    #[arg(long)]
    pub nodes: Option<u32>,
}

#[derive(Debug, Args, Clone)]
pub struct RoomArgs {
    #[arg(long, default_value_t = 10)]
    pub rooms: u64,
    /// Members per room.
    #[arg(long, default_value_t = 10)]
    pub members: u64,
    /// Messages per second per room.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Sent first, counted for loss, left out of the latency figures.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_secs: f64,
    /// After the last send, how long to wait for outstanding acks and deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
    /// New connections (sign-in + join) per second.
    #[arg(long, default_value_t = 500.0)]
    pub connect_rate: f64,
    /// Seconds of Redis CPU measured with every member connected and no sends, before
    /// the sends: subtracted from the send window's Redis CPU (presence refreshes and
    /// timers are not per room message).
    #[arg(long, default_value_t = 5.0)]
    pub idle_secs: f64,
}

#[derive(Debug, Args, Clone)]
pub struct DmArgs {
    #[arg(long, default_value_t = 100)]
    pub users: u64,
    /// Messages per second for all users together.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 10.0)]
    pub duration_secs: f64,
    /// Sent first, counted for loss, left out of the latency figures.
    #[arg(long, default_value_t = 0.0)]
    pub warmup_secs: f64,
    /// After the last send, how long to wait for outstanding acks and deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain_secs: f64,
    /// Pad each message body to this many bytes.
    #[arg(long, default_value_t = 0)]
    pub body_bytes: usize,
    /// New connections per second while signing users in.
    #[arg(long, default_value_t = 1000.0)]
    pub connect_rate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Global, clap::Error> {
        let argv = ["chat-loadtest"].iter().chain(args).chain(&["dm"]);
        Cli::try_parse_from(argv).map(|c| c.global)
    }

    #[test]
    fn one_redis_as_before() {
        let g = parse(&["--redis-pid", "42", "--redis-addr", "127.0.0.1:6380"]).unwrap();
        assert_eq!(g.redis_pids, [42]);
        assert_eq!(g.redis_addrs, ["127.0.0.1:6380"]);
        let g = parse(&[]).unwrap();
        assert!(g.redis_pids.is_empty() && g.redis_addrs.is_empty());
    }

    #[test]
    fn several_redis_comma_separated_or_repeated() {
        let g = parse(&[
            "--redis-pid",
            "1,2,3",
            "--redis-addr",
            "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3",
        ])
        .unwrap();
        assert_eq!(g.redis_pids, [1, 2, 3]);
        assert_eq!(g.redis_addrs, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]);
        let g = parse(&["--redis-pid", "1", "--redis-pid", "2,3"]).unwrap();
        assert_eq!(g.redis_pids, [1, 2, 3]);
        // After the scenario too (the options are global).
        let g = Cli::try_parse_from(["chat-loadtest", "dm", "--redis-pid", "7,8"])
            .unwrap()
            .global;
        assert_eq!(g.redis_pids, [7, 8]);
    }

    #[test]
    fn bad_redis_pid_is_refused() {
        assert!(parse(&["--redis-pid", "1,x"]).is_err());
        assert!(parse(&["--redis-pid", ""]).is_err());
    }
}
