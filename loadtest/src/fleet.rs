//! Running a scenario's share of the load in this process or in K worker processes,
//! behind one interface: start every member, wait until all are `ready` (users signed
//! in), say `go` to all at once, collect their outcomes.
//!
//! A worker is this same binary re-executed with the hidden `worker` subcommand. It
//! talks JSON lines: stdin carries the job, then `go`; stdout carries `ready`, then the
//! result (histograms inside as V2 + base64, so nothing is lost in the merge). Its
//! stderr is inherited, so its progress lines reach the terminal. Workers get past one
//! process's open-file limit; each raises its own limit at start.

use std::process::Stdio;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::connect::{self, ConnectOutcome, ConnectPlan};
use crate::dm::{self, DmOutcome, DmPlan, Ready};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    Dm(DmPlan),
    Connect(ConnectPlan),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Dm(Box<DmOutcome>),
    Connect(ConnectOutcome),
}

/// One line a worker writes on stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum WorkerLine {
    Ready(Ready),
    Result { outcome: Box<Outcome> },
    Failed { error: String },
}

struct Member {
    ready: oneshot::Receiver<Ready>,
    go: oneshot::Sender<()>,
    done: JoinHandle<Result<Outcome>>,
}

/// The running members of one scenario step.
pub struct Fleet {
    members: Vec<Member>,
}

impl Fleet {
    /// Starts every job: in this process when there is one, else one worker each.
    pub fn start(jobs: Vec<Job>) -> Result<Fleet> {
        let in_process = jobs.len() == 1;
        let mut members = Vec::new();
        for job in jobs {
            let (ready_tx, ready_rx) = oneshot::channel();
            let (go_tx, go_rx) = oneshot::channel();
            let done = if in_process {
                tokio::spawn(run_job(job, ready_tx, go_rx))
            } else {
                let exe = std::env::current_exe().context("own executable")?;
                tokio::spawn(run_worker(exe, job, ready_tx, go_rx))
            };
            members.push(Member {
                ready: ready_rx,
                go: go_tx,
                done,
            });
        }
        Ok(Fleet { members })
    }

    /// Waits until every member signed its users in; returns their counts.
    pub async fn ready(&mut self) -> Vec<Ready> {
        let mut out = Vec::new();
        for m in &mut self.members {
            out.push((&mut m.ready).await.unwrap_or_default());
        }
        out
    }

    pub fn go(&mut self) -> Vec<JoinHandle<Result<Outcome>>> {
        let mut handles = Vec::new();
        for m in self.members.drain(..) {
            let _ = m.go.send(());
            handles.push(m.done);
        }
        handles
    }
}

/// Awaits every member's outcome; the first failure fails the run.
pub async fn collect(handles: Vec<JoinHandle<Result<Outcome>>>) -> Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.map_err(|e| anyhow!("worker task: {e}"))??);
    }
    Ok(out)
}

async fn run_job(
    job: Job,
    ready: oneshot::Sender<Ready>,
    go: oneshot::Receiver<()>,
) -> Result<Outcome> {
    Ok(match job {
        Job::Dm(plan) => Outcome::Dm(Box::new(dm::run(plan, ready, go).await?)),
        Job::Connect(plan) => Outcome::Connect(connect::run(plan, ready, go).await?),
    })
}

async fn run_worker(
    exe: std::path::PathBuf,
    job: Job,
    ready: oneshot::Sender<Ready>,
    go: oneshot::Receiver<()>,
) -> Result<Outcome> {
    let mut child = tokio::process::Command::new(exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting a worker process")?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow!("worker stdin"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow!("worker stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    stdin
        .write_all(format!("{}\n", serde_json::to_string(&job)?).as_bytes())
        .await?;
    stdin.flush().await?;
    let mut ready = Some(ready);
    let mut go = Some(go);
    while let Some(line) = lines.next_line().await? {
        match serde_json::from_str::<WorkerLine>(&line) {
            Ok(WorkerLine::Ready(r)) => {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(r);
                }
                if let Some(rx) = go.take() {
                    let _ = rx.await;
                    stdin.write_all(b"go\n").await?;
                    stdin.flush().await?;
                }
            }
            Ok(WorkerLine::Result { outcome }) => {
                let _ = child.wait().await;
                return Ok(*outcome);
            }
            Ok(WorkerLine::Failed { error }) => bail!("worker failed: {error}"),
            Err(_) => eprintln!("worker: {line}"),
        }
    }
    bail!("worker exited without a result ({:?})", child.wait().await?)
}

/// The hidden `worker` subcommand: one job from stdin, lines to stdout.
pub async fn worker_main() -> Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let line = stdin
        .next_line()
        .await?
        .ok_or_else(|| anyhow!("no job on stdin"))?;
    let job: Job = serde_json::from_str(&line).context("job JSON")?;
    let (ready_tx, ready_rx) = oneshot::channel();
    let (go_tx, go_rx) = oneshot::channel();
    let task = tokio::spawn(run_job(job, ready_tx, go_rx));
    let print = |l: &WorkerLine| -> Result<()> {
        println!("{}", serde_json::to_string(l)?);
        Ok(())
    };
    if let Ok(r) = ready_rx.await {
        print(&WorkerLine::Ready(r))?;
        let _ = stdin.next_line().await?;
        let _ = go_tx.send(());
    }
    match task.await? {
        Ok(outcome) => print(&WorkerLine::Result {
            outcome: Box::new(outcome),
        }),
        Err(e) => print(&WorkerLine::Failed {
            error: format!("{e:#}"),
        }),
    }
}

/// Splits `n` into `k` near-equal even parts (pairs never straddle workers).
pub fn split_even(n: u64, k: u64) -> Vec<u64> {
    let pairs = n / 2;
    let k = k.max(1).min(pairs.max(1));
    (0..k)
        .map(|i| (pairs / k + u64::from(i < pairs % k)) * 2)
        .collect()
}

/// Splits `n` into `k` near-equal parts.
pub fn split(n: u64, k: u64) -> Vec<u64> {
    let k = k.max(1).min(n.max(1));
    (0..k).map(|i| n / k + u64::from(i < n % k)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_keep_pairs_whole() {
        assert_eq!(split_even(10, 3), vec![4, 4, 2]);
        assert_eq!(split_even(4, 8), vec![2, 2]);
        assert_eq!(split(10, 3), vec![4, 3, 3]);
        assert_eq!(split_even(10, 3).iter().sum::<u64>(), 10);
    }
}
