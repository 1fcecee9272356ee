//! Reading the system under test from outside: a local process's RSS and CPU time from
//! `/proc`, a node's `/metrics` over plain HTTP, and Redis `INFO commandstats` over
//! RESP. Every probe is best effort and returns `None` rather than failing a run.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::Serialize;

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

/// CPU use of one process over a measured window.
#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    pub pid: u32,
    pub cpu_seconds: f64,
    /// Percent of one core over the window.
    pub percent_of_core: f64,
    /// CPU milliseconds per 1,000 delivered messages.
    pub cpu_ms_per_1000_messages: Option<f64>,
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
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    pub window_secs: f64,
    /// The harness and its worker processes, percent of one core.
    pub harness_percent_of_core: Option<f64>,
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

    pub fn context(&self) -> Context {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let own = own_cpu_seconds()
            .zip(self.own)
            .map(|(a, b)| (a - b) / secs * 100.0);
        let machine = machine_ticks()
            .zip(self.machine)
            .and_then(|((b1, t1), (b0, t0))| {
                (t1 > t0).then(|| (b1 - b0) as f64 / (t1 - t0) as f64 * 100.0)
            });
        Context {
            window_secs: secs,
            harness_percent_of_core: own,
            machine_busy_percent: machine,
        }
    }

    pub fn finish(&self, delivered: u64) -> Vec<CpuUse> {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        self.before
            .iter()
            .filter_map(|&(pid, before)| {
                let used = cpu_seconds(pid)? - before?;
                Some(CpuUse {
                    pid,
                    cpu_seconds: used,
                    percent_of_core: used / secs * 100.0,
                    cpu_ms_per_1000_messages: (delivered > 0)
                        .then(|| used * 1000.0 / delivered as f64 * 1000.0),
                })
            })
            .collect()
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

/// `INFO commandstats` of the Redis at `host:port`: command → calls.
pub fn redis_calls(host_port: &str) -> Option<BTreeMap<String, u64>> {
    let mut stream = TcpStream::connect(host_port).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream
        .write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .ok()?;
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
    let text = String::from_utf8_lossy(&buf);
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

/// Redis commands issued during a window, per command and per acked message.
/// Redis counts the commands a function or script runs (`xadd` inside `fcall`) as well
/// as the call itself, so round trips from a node are the top-level commands only
/// (`fcall`, `evalsha`, plain commands), not the total.
#[derive(Debug, Clone, Serialize)]
pub struct RedisWork {
    pub calls: BTreeMap<String, u64>,
    pub total_calls: u64,
    pub calls_per_message: Option<f64>,
    pub per_message: BTreeMap<String, f64>,
    pub note: &'static str,
}

pub fn redis_work(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    messages: u64,
) -> RedisWork {
    let calls: BTreeMap<String, u64> = after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
        .filter(|(k, v)| *v > 0 && k != "info")
        .collect();
    let total: u64 = calls.values().sum();
    let per_message = calls
        .iter()
        .filter(|_| messages > 0)
        .map(|(k, v)| (k.clone(), *v as f64 / messages as f64))
        .collect();
    RedisWork {
        calls,
        total_calls: total,
        calls_per_message: (messages > 0).then(|| total as f64 / messages as f64),
        per_message,
        note: "Redis also counts commands run inside functions/scripts (e.g. xadd inside fcall); \
               the window includes sign-in, presence heartbeats and the drain",
    }
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
    fn host_port_of_urls() {
        assert_eq!(
            host_port("ws://127.0.0.1:80/ws").as_deref(),
            Some("127.0.0.1:80")
        );
        assert_eq!(host_port("localhost:9").as_deref(), Some("localhost:9"));
    }
}
