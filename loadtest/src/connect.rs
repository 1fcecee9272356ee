//! The `connect` scenario: open N signed-in connections at a given rate, report
//! `ready` once all are up (so the parent can read each gateway's RSS), and hold them
//! open (answering pings) until told to close.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::dm::Ready;
use crate::net::{self, SourceIps};
use crate::record::{self, Counters};
use crate::stats::Hist;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectPlan {
    pub targets: Vec<String>,
    pub run_id: String,
    /// Global index of this process's first connection.
    pub first: u64,
    pub connections: u64,
    /// New connections per second (this process).
    pub rate: f64,
    pub hold_secs: f64,
    pub source_ips: u32,
    pub label: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectOutcome {
    pub attempted: u64,
    pub established: u64,
    pub failures: u64,
    pub errors: Vec<String>,
    /// `welcome.node` → connections signed in there.
    pub nodes: BTreeMap<String, u64>,
    /// Target index → connections established through it.
    pub per_target: Vec<u64>,
    /// Connections that ended during the hold without the harness closing them.
    pub dropped_during_hold: u64,
    /// Connect + hello → welcome, µs histogram (base64 V2).
    pub latency: String,
    pub ramp_secs: f64,
}

struct Conn {
    target: usize,
    node: Option<String>,
    error: Option<String>,
    latency_us: u64,
    dropped: bool,
}

pub async fn run(
    plan: ConnectPlan,
    ready: oneshot::Sender<Ready>,
    go: oneshot::Receiver<()>,
) -> Result<ConnectOutcome> {
    let counters = Arc::new(Counters::default());
    let progress = record::spawn_progress(plan.label.clone(), counters.clone(), None);
    let (stop_tx, stop_rx) = watch::channel(false);
    let targets = Arc::new(plan.targets.clone());
    let ips = SourceIps {
        count: plan.source_ips,
        offset: 0,
    };
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(plan.connections as usize);
    for i in 0..plan.connections {
        tokio::time::sleep_until(started + Duration::from_secs_f64(i as f64 / plan.rate.max(1.0)))
            .await;
        let global = plan.first + i;
        let target = (global as usize) % targets.len();
        let url = targets[target].clone();
        let username = format!("lt-{}-c{global}", plan.run_id);
        let source = ips.pick(global);
        let counters = counters.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let signin = async {
                let mut ws = net::open(&url, source).await?;
                let w = net::hello(&mut ws, net::guest_hello(username), CONNECT_TIMEOUT).await?;
                anyhow::Ok((ws, w))
            };
            let mut conn = Conn {
                target,
                node: None,
                error: None,
                latency_us: 0,
                dropped: false,
            };
            let result = tokio::time::timeout(CONNECT_TIMEOUT, signin).await;
            let (mut ws, welcome) = match result {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    Counters::inc(&counters.connect_failures);
                    conn.error = Some(format!("{e:#}"));
                    return conn;
                }
                Err(_) => {
                    Counters::inc(&counters.connect_failures);
                    conn.error = Some("connect + hello timed out".into());
                    return conn;
                }
            };
            conn.latency_us = t0.elapsed().as_micros() as u64;
            conn.node = Some(welcome.node);
            Counters::inc(&counters.connected);
            // Hold: keep reading so pings are answered, until the run stops.
            loop {
                tokio::select! {
                    _ = stop.changed() => break,
                    msg = ws.next() => {
                        if matches!(msg, None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))) {
                            conn.dropped = true;
                            return conn;
                        }
                    }
                }
            }
            let _ = ws.close(None).await;
            conn
        }));
    }
    // Every attempt has finished its sign-in once it counted itself in or out.
    while Counters::get(&counters.connected) + Counters::get(&counters.connect_failures)
        < plan.connections
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramp_secs = started.elapsed().as_secs_f64();
    let _ = ready.send(Ready {
        connected: Counters::get(&counters.connected),
        connect_failures: Counters::get(&counters.connect_failures),
    });
    let _ = go.await;
    tokio::time::sleep(Duration::from_secs_f64(plan.hold_secs)).await;
    let _ = stop_tx.send(true);
    let mut out = ConnectOutcome {
        attempted: plan.connections,
        per_target: vec![0; targets.len()],
        ramp_secs,
        ..Default::default()
    };
    let mut hist = Hist::default();
    for t in tasks {
        let Ok(c) = t.await else { continue };
        match c.node {
            Some(node) => {
                out.established += 1;
                out.per_target[c.target] += 1;
                *out.nodes.entry(node).or_default() += 1;
                hist.record_us(c.latency_us);
                out.dropped_during_hold += u64::from(c.dropped);
            }
            None => {
                out.failures += 1;
                if out.errors.len() < 5 {
                    out.errors.push(c.error.unwrap_or_default());
                }
            }
        }
    }
    out.latency = hist.encode();
    progress.abort();
    Ok(out)
}

pub fn merge(into: &mut ConnectOutcome, other: ConnectOutcome) -> Result<()> {
    into.attempted += other.attempted;
    into.established += other.established;
    into.failures += other.failures;
    into.errors.extend(other.errors);
    into.errors.truncate(10);
    for (k, v) in other.nodes {
        *into.nodes.entry(k).or_default() += v;
    }
    if into.per_target.len() < other.per_target.len() {
        into.per_target.resize(other.per_target.len(), 0);
    }
    for (a, b) in into.per_target.iter_mut().zip(other.per_target) {
        *a += b;
    }
    into.dropped_during_hold += other.dropped_during_hold;
    let mut h = if into.latency.is_empty() {
        Hist::default()
    } else {
        Hist::decode(&into.latency)?
    };
    if !other.latency.is_empty() {
        h.add(&Hist::decode(&other.latency)?);
    }
    into.latency = h.encode();
    into.ramp_secs = into.ramp_secs.max(other.ramp_secs);
    Ok(())
}
