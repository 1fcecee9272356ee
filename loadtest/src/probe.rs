//! Reading the system under test from outside: a local process's RSS and CPU time from
//! `/proc`, a node's `/metrics` over plain HTTP, and Redis `INFO commandstats` over
//! RESP. Every probe is best effort and returns `None` rather than failing a run.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Resident set size of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User + system CPU time of `pid` so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks())
}

/// This process's CPU time plus that of its waited-for children (the workers), seconds.
pub fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse().ok())
        .collect();
    (f.len() == 4).then(|| f.iter().sum::<u64>() as f64 / clock_ticks())
}

/// Busy and total CPU ticks of the whole machine so far (first line of `/proc/stat`).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = cpu.iter().sum();
    // idle + iowait are fields 4 and 5.
    let idle = cpu.get(3)? + cpu.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU figures of one process (or of several summed) over a measured window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CpuFigures {
    pub cpu_seconds: f64,
    /// Percent of one core over the window.
    pub percent_of_core: f64,
    /// CPU milliseconds per 1,000 delivered messages (the same number as `us_per_message`;
    /// kept so reports stay comparable with earlier ones).
    pub cpu_ms_per_1000_messages: Option<f64>,
    /// CPU microseconds per delivered message.
    pub us_per_message: Option<f64>,
}

impl CpuFigures {
    /// `used` CPU seconds over a window of `secs` in which `delivered` messages arrived.
    pub fn new(used: f64, secs: f64, delivered: u64) -> CpuFigures {
        let us = (delivered > 0).then(|| used * 1e6 / delivered as f64);
        CpuFigures {
            cpu_seconds: used,
            percent_of_core: used / secs.max(1e-9) * 100.0,
            cpu_ms_per_1000_messages: us,
            us_per_message: us,
        }
    }
}

/// CPU use of one process over a measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    pub pid: u32,
    #[serde(flatten)]
    pub figures: CpuFigures,
}

/// Several processes' CPU summed (a Redis Cluster's primaries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuTotal {
    /// How many processes were measured and summed.
    pub processes: usize,
    #[serde(flatten)]
    pub figures: CpuFigures,
}

/// Snapshot of several processes' CPU time, to diff at the end of a window.
pub struct CpuWindow {
    start: std::time::Instant,
    before: Vec<(u32, Option<f64>)>,
    own: Option<f64>,
    machine: Option<(u64, u64)>,
}

/// What else used the CPU during the window: the harness itself, and the whole machine
/// (other processes on a shared machine included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub window_secs: f64,
    /// The harness and its worker processes, percent of one core.
    pub harness_percent_of_core: Option<f64>,
    /// The harness and its worker processes: CPU seconds, percent of a core, per message.
    pub harness: Option<CpuFigures>,
    /// All cores busy, percent of the machine's capacity.
    pub machine_busy_percent: Option<f64>,
}

impl CpuWindow {
    pub fn start(pids: &[u32]) -> CpuWindow {
        CpuWindow {
            start: std::time::Instant::now(),
            before: pids.iter().map(|&p| (p, cpu_seconds(p))).collect(),
            own: own_cpu_seconds(),
            machine: machine_ticks(),
        }
    }

    /// Each process's CPU over the window (those whose `/proc` could be read at both
    /// ends, in the order given) and the harness's and machine's, per delivered message.
    pub fn finish(&self, delivered: u64) -> (Vec<CpuUse>, Context) {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let uses = self
            .before
            .iter()
            .filter_map(|&(pid, before)| {
                let used = cpu_seconds(pid)? - before?;
                Some(CpuUse {
                    pid,
                    figures: CpuFigures::new(used, secs, delivered),
                })
            })
            .collect();
        let harness = own_cpu_seconds()
            .zip(self.own)
            .map(|(a, b)| CpuFigures::new(a - b, secs, delivered));
        let machine = machine_ticks()
            .zip(self.machine)
            .and_then(|((b1, t1), (b0, t0))| {
                (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
            });
        let context = Context {
            window_secs: secs,
            harness_percent_of_core: harness.map(|h| h.percent_of_core),
            harness,
            machine_busy_percent: machine,
        };
        (uses, context)
    }
}

/// The CPU section of a `dm` report: each gateway, each Redis process and their sum,
/// and the harness and machine around them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuReport {
    pub gateways: Vec<CpuUse>,
    /// The Redis process when exactly one `--redis-pid` was given (the shape of earlier
    /// reports); null with several, so a Cluster run never passes for one Redis.
    pub redis: Option<CpuUse>,
    /// Every Redis process measured, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redis_processes: Vec<CpuUse>,
    /// Their sum: the Redis CPU per message, whatever the topology.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_total: Option<CpuTotal>,
    pub context: Context,
}

impl CpuReport {
    /// Splits a window's processes into gateways and the Redis processes `redis_pids`.
    pub fn new(
        uses: Vec<CpuUse>,
        redis_pids: &[u32],
        context: Context,
        delivered: u64,
    ) -> CpuReport {
        let (redis, gateways): (Vec<CpuUse>, Vec<CpuUse>) =
            uses.into_iter().partition(|c| redis_pids.contains(&c.pid));
        let redis_total = (!redis.is_empty()).then(|| CpuTotal {
            processes: redis.len(),
            figures: CpuFigures::new(
                redis.iter().map(|c| c.figures.cpu_seconds).sum(),
                context.window_secs,
                delivered,
            ),
        });
        CpuReport {
            gateways,
            redis: if redis_pids.len() == 1 {
                redis.first().cloned()
            } else {
                None
            },
            redis_processes: redis,
            redis_total,
            context,
        }
    }
}

/// `GET http://<host:port><path>` with HTTP/1.0; the body on a 200.
pub fn http_get(host_port: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(host_port).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host_port}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.split_whitespace()
        .nth(1)
        .filter(|code| *code == "200")
        .map(|_| body.to_string())
}

/// `host:port` of a `ws://host:port/...` URL.
pub fn host_port(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    Some(rest.split('/').next()?.to_string()).filter(|s| !s.is_empty())
}

/// The process RSS gauge from a node's `/metrics`, if it exports one.
pub fn metrics_rss(ws_url: &str) -> Option<u64> {
    let body = http_get(&host_port(ws_url)?, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with("process_resident_memory_bytes"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// `INFO <section>` of the Redis at `host:port`, as text.
fn redis_info(host_port: &str, section: &str) -> Option<String> {
    let mut stream = TcpStream::connect(host_port).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let cmd = format!("*2\r\n$4\r\nINFO\r\n${}\r\n{section}\r\n", section.len());
    stream.write_all(cmd.as_bytes()).ok()?;
    // A bulk string: "$<len>\r\n<payload>\r\n". Read until the payload is complete.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some((len, _)) = text.strip_prefix('$').and_then(|t| t.split_once("\r\n")) {
            let len: usize = len.parse().ok()?;
            if buf.len() >= len + len.to_string().len() + 5 {
                break;
            }
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// CPU seconds the Redis at `host:port` has used (`INFO cpu`: `used_cpu_sys` +
/// `used_cpu_user`, from `getrusage`, to the microsecond — finer than `/proc`'s 10 ms
/// ticks, which matters when Redis uses 1 % of a core).
pub fn redis_cpu_seconds(host_port: &str) -> Option<f64> {
    let text = redis_info(host_port, "cpu")?;
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(field("used_cpu_sys")? + field("used_cpu_user")?)
}

/// The summed [`redis_cpu_seconds`] of every address, or `None` if one is unreadable.
pub fn redis_cpu_total(addrs: &[String]) -> Option<f64> {
    if addrs.is_empty() {
        return None;
    }
    addrs.iter().map(|a| redis_cpu_seconds(a)).sum()
}

/// `INFO commandstats` of the Redis at `host:port`: command → calls.
pub fn redis_calls(host_port: &str) -> Option<BTreeMap<String, u64>> {
    let text = redis_info(host_port, "commandstats")?;
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        // cmdstat_xadd:calls=12,usec=...
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, stats)) = rest.split_once(':') else {
            continue;
        };
        let n = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|v| v.parse().ok());
        if let Some(n) = n {
            calls.insert(name.to_string(), n);
        }
    }
    Some(calls)
}

/// `INFO commandstats` of each Redis address at one moment (`None` where unreadable).
pub struct RedisSnapshot(Vec<(String, Option<BTreeMap<String, u64>>)>);

impl RedisSnapshot {
    pub fn take(addrs: &[String]) -> RedisSnapshot {
        RedisSnapshot(addrs.iter().map(|a| (a.clone(), redis_calls(a))).collect())
    }
}

/// Commands counted by one Redis, or summed over several, and per acked message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandCounts {
    pub calls: BTreeMap<String, u64>,
    pub total_calls: u64,
    pub calls_per_message: Option<f64>,
    pub per_message: BTreeMap<String, f64>,
}

impl CommandCounts {
    /// The commands run between two `INFO commandstats` readings (but `info` itself).
    fn between(
        before: &BTreeMap<String, u64>,
        after: &BTreeMap<String, u64>,
        messages: u64,
    ) -> CommandCounts {
        let calls = after
            .iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
            .filter(|(k, v)| *v > 0 && k != "info")
            .collect();
        CommandCounts::of(calls, messages)
    }

    fn of(calls: BTreeMap<String, u64>, messages: u64) -> CommandCounts {
        let total: u64 = calls.values().sum();
        let per_message = calls
            .iter()
            .filter(|_| messages > 0)
            .map(|(k, v)| (k.clone(), *v as f64 / messages as f64))
            .collect();
        CommandCounts {
            calls,
            total_calls: total,
            calls_per_message: (messages > 0).then(|| total as f64 / messages as f64),
            per_message,
        }
    }
}

/// One Redis address's share of [`RedisWork`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddrCounts {
    pub addr: String,
    #[serde(flatten)]
    pub counts: CommandCounts,
}

/// Redis commands issued during a window, per command and per acked message: summed over
/// every address given (the fields of earlier reports), then address by address.
/// Redis counts the commands a function or script runs (`xadd` inside `fcall`) as well
/// as the call itself, so round trips from a node are the top-level commands only
/// (`fcall`, `evalsha`, plain commands), not the total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedisWork {
    #[serde(flatten)]
    pub total: CommandCounts,
    pub note: String,
    /// Each address read at both ends of the window, in the order given (absent from
    /// reports written before there could be several).
    #[serde(default)]
    pub per_address: Vec<AddrCounts>,
    /// Addresses that did not answer `INFO commandstats` at one end: left out of the sum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<String>,
}

/// What the Redis addresses ran between two snapshots; `None` when none could be read.
pub fn redis_work(
    before: &RedisSnapshot,
    after: &RedisSnapshot,
    messages: u64,
) -> Option<RedisWork> {
    let mut per_address = Vec::new();
    let mut unread = Vec::new();
    for ((addr, b), (_, a)) in before.0.iter().zip(&after.0) {
        match (b, a) {
            (Some(b), Some(a)) => per_address.push(AddrCounts {
                addr: addr.clone(),
                counts: CommandCounts::between(b, a, messages),
            }),
            _ => unread.push(addr.clone()),
        }
    }
    if per_address.is_empty() {
        return None;
    }
    let mut calls = BTreeMap::new();
    for a in &per_address {
        for (k, v) in &a.counts.calls {
            *calls.entry(k.clone()).or_insert(0) += v;
        }
    }
    Some(RedisWork {
        total: CommandCounts::of(calls, messages),
        note: "Redis also counts commands run inside functions/scripts (e.g. xadd inside fcall); \
               the window includes sign-in, presence heartbeats and the drain"
            .into(),
        per_address,
        unread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(cpu_seconds(pid).is_some());
    }

    #[test]
    fn cpu_figures_per_message() {
        let f = CpuFigures::new(0.5, 10.0, 1000);
        assert!((f.percent_of_core - 5.0).abs() < 1e-9);
        assert!((f.us_per_message.unwrap() - 500.0).abs() < 1e-9);
        assert_eq!(f.cpu_ms_per_1000_messages, f.us_per_message);
        assert_eq!(CpuFigures::new(0.5, 10.0, 0).us_per_message, None);
    }

    fn use_of(pid: u32, cpu_seconds: f64) -> CpuUse {
        CpuUse {
            pid,
            figures: CpuFigures::new(cpu_seconds, 10.0, 1000),
        }
    }

    fn context() -> Context {
        Context {
            window_secs: 10.0,
            harness_percent_of_core: None,
            harness: None,
            machine_busy_percent: None,
        }
    }

    #[test]
    fn cpu_report_sums_several_redis_processes() {
        let uses = vec![
            use_of(1, 1.0),
            use_of(2, 1.0),
            use_of(10, 0.1),
            use_of(11, 0.2),
        ];
        let r = CpuReport::new(uses, &[10, 11, 12], context(), 1000);
        assert_eq!(r.gateways.iter().map(|c| c.pid).collect::<Vec<_>>(), [1, 2]);
        assert!(r.redis.is_none(), "several Redis: no single `redis` entry");
        assert_eq!(r.redis_processes.len(), 2, "pid 12 unreadable: left out");
        let total = r.redis_total.expect("sum");
        assert_eq!(total.processes, 2);
        assert!((total.figures.us_per_message.unwrap() - 300.0).abs() < 1e-9);
        let v = serde_json::to_value(&r.redis_processes[0]).unwrap();
        assert_eq!(v["pid"], 10);
        assert!((v["us_per_message"].as_f64().unwrap() - 100.0).abs() < 1e-9);
    }

    #[test]
    fn cpu_report_keeps_the_single_redis_shape() {
        let r = CpuReport::new(
            vec![use_of(1, 1.0), use_of(10, 0.1)],
            &[10],
            context(),
            1000,
        );
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["redis"]["pid"], 10);
        assert!((v["redis"]["cpu_ms_per_1000_messages"].as_f64().unwrap() - 100.0).abs() < 1e-9);
        assert!((v["redis_total"]["us_per_message"].as_f64().unwrap() - 100.0).abs() < 1e-9);
        let r = CpuReport::new(vec![use_of(1, 1.0)], &[], context(), 1000);
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["redis"].is_null());
        assert!(v.get("redis_processes").is_none() && v.get("redis_total").is_none());
    }

    fn calls(pairs: &[(&str, u64)]) -> Option<BTreeMap<String, u64>> {
        Some(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    #[test]
    fn redis_work_sums_addresses_and_keeps_each() {
        let before = RedisSnapshot(vec![
            ("a:1".into(), calls(&[("fcall", 10), ("info", 5)])),
            ("b:2".into(), calls(&[("fcall", 0)])),
            ("c:3".into(), None),
        ]);
        let after = RedisSnapshot(vec![
            (
                "a:1".into(),
                calls(&[("fcall", 110), ("info", 6), ("get", 4)]),
            ),
            ("b:2".into(), calls(&[("fcall", 200)])),
            ("c:3".into(), calls(&[("fcall", 7)])),
        ]);
        let w = redis_work(&before, &after, 100).expect("work");
        assert_eq!(
            w.total.calls,
            BTreeMap::from([("fcall".into(), 300), ("get".into(), 4)])
        );
        assert_eq!(w.total.per_message["fcall"], 3.0);
        assert_eq!(w.per_address.len(), 2);
        assert_eq!(w.per_address[0].addr, "a:1");
        assert_eq!(w.per_address[0].counts.per_message["fcall"], 1.0);
        assert_eq!(w.per_address[1].counts.per_message["fcall"], 2.0);
        assert_eq!(w.unread, ["c:3"]);
        let v = serde_json::to_value(&w).unwrap();
        assert_eq!(
            v["calls"]["fcall"], 300,
            "summed counts where earlier reports had them"
        );
        assert_eq!(v["per_address"][1]["per_message"]["fcall"], 2.0);
        let none = RedisSnapshot(vec![("c:3".into(), None)]);
        assert!(redis_work(&none, &none, 100).is_none());
    }

    #[test]
    fn host_port_of_urls() {
        assert_eq!(
            host_port("ws://127.0.0.1:80/ws").as_deref(),
            Some("127.0.0.1:80")
        );
        assert_eq!(host_port("localhost:9").as_deref(), Some("localhost:9"));
    }
}
