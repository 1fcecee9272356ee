//! Shared counters and latency recorders of one harness process, and the once-a-second
//! progress line on stderr (connections, messages/s, this second's p99).
//!
//! Counters are atomics; histograms sit behind one mutex that is held only to record a
//! value, never across an `.await`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::stats::{Hist, Timeline};

/// Microseconds since the Unix epoch: the harness's one clock, shared by the sending and
/// receiving side of each pair (always in the same process).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[derive(Default)]
pub struct Counters {
    pub connected: AtomicU64,
    pub connect_failures: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub errors: AtomicU64,
    pub received: AtomicU64,
    pub senders_done: AtomicU64,
}

impl Counters {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Latency histograms fed by every connection task.
pub struct Recorder {
    /// Start of the run in µs since the epoch (second 0 of the timeline).
    pub start_us: u64,
    /// Values whose intended time is before this are warm-up: counted, not recorded.
    pub record_from_us: u64,
    pub latency: Hist,
    pub ack: Hist,
    pub timeline: Timeline,
    /// This second's values, for the progress line.
    pub interval: Hist,
}

pub type SharedRecorder = Arc<Mutex<Recorder>>;

impl Recorder {
    pub fn new(start_us: u64, record_from_us: u64) -> SharedRecorder {
        Arc::new(Mutex::new(Recorder {
            start_us,
            record_from_us,
            latency: Hist::default(),
            ack: Hist::default(),
            timeline: Timeline::default(),
            interval: Hist::default(),
        }))
    }
}

/// Records a delivery that was intended at `intended_us` and arrived at `now`.
pub fn record_delivery(rec: &SharedRecorder, intended_us: u64, now: u64) {
    if let Ok(mut r) = rec.lock() {
        let us = now.saturating_sub(intended_us);
        r.interval.record_us(us);
        if intended_us >= r.record_from_us {
            r.latency.record_us(us);
            let second = (intended_us.saturating_sub(r.start_us) / 1_000_000) as usize;
            r.timeline.record(second, us);
        }
    }
}

pub fn record_ack(rec: &SharedRecorder, intended_us: u64, now: u64) {
    if let Ok(mut r) = rec.lock() {
        if intended_us >= r.record_from_us {
            r.ack.record_us(now.saturating_sub(intended_us));
        }
    }
}

/// Prints one progress line per second until the returned handle is aborted.
pub fn spawn_progress(
    label: String,
    counters: Arc<Counters>,
    rec: Option<SharedRecorder>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let (mut last_sent, mut last_recv) = (0, 0);
        loop {
            tick.tick().await;
            let sent = Counters::get(&counters.sent);
            let recv = Counters::get(&counters.received);
            let p99 = rec
                .as_ref()
                .and_then(|r| r.lock().ok().map(|mut r| std::mem::take(&mut r.interval)))
                .map(|h| h.summary().p99_ms);
            // One write per line, so workers' lines never interleave mid-line.
            let line = format!(
                "{label} t={:>4}s connections={} failed={} sent/s={} received/s={} p99={}",
                started.elapsed().as_secs(),
                Counters::get(&counters.connected),
                Counters::get(&counters.connect_failures),
                sent - last_sent,
                recv - last_recv,
                p99.map_or("-".to_string(), |v| format!("{v:.2}ms")),
            );
            let _ =
                std::io::Write::write_all(&mut std::io::stderr(), format!("{line}\n").as_bytes());
            (last_sent, last_recv) = (sent, recv);
        }
    })
}
