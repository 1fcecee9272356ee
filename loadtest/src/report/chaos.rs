//! The report of a `chaos` run: its parameters, the counts of each phase, and the
//! faults injected on the schedule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::DmParams;
use crate::stats::Percentiles;

/// `chaos`: `dm` load on a real cluster while faults are injected on a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosParams {
    #[serde(flatten)]
    pub dm: DmParams,
    /// The fault kinds, injected in this order, round-robin.
    pub faults: Vec<String>,
    pub first_at_secs: f64,
    pub every_secs: f64,
    pub pause_ms: u64,
    /// Nodes a `node-kill` cycles through (gw-1 … gw-N).
    pub nodes: u32,
    /// The command that injects faults (`<script> <fault> … --run-dir <run_dir>`).
    pub cluster_script: String,
    pub run_dir: String,
}

/// `chaos`: the whole run's figures, the verdicts, and the figures per fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChaosResult {
    pub users: u64,
    pub connected: u64,
    pub connect_failures: u64,
    pub sent: u64,
    pub acked: u64,
    pub send_errors: BTreeMap<String, u64>,
    pub unacked: u64,
    pub delivered: u64,
    /// Acked, never delivered to the recipient's connection.
    pub lost: u64,
    /// Delivered twice under two ids, or under another id than the ack's.
    pub duplicated: u64,
    /// Delivered after a later message of the same sender.
    pub out_of_order: u64,
    /// Delivered although the sender was told the send failed.
    pub delivered_unacked: u64,
    /// Second copies under the same id (a resume replaying what was seen: harmless).
    pub redelivered: u64,
    pub unexpected_disconnects: u64,
    /// Clients that lost their connection and never resumed.
    pub clients_not_recovered: u64,
    pub latency: Percentiles,
    pub ack_latency: Percentiles,
    /// Messages intended before the first fault.
    pub baseline: PhaseResult,
    /// One entry per fault kind, in the order of `params.faults`.
    pub faults: Vec<FaultResult>,
    /// Every injection, in order.
    pub injections: Vec<Injection>,
    /// Every acked message delivered exactly once, in order: lost, duplicated and
    /// out_of_order all zero.
    pub exactly_once: bool,
    /// Every client signed in and every one that lost its connection resumed; every
    /// send was answered.
    pub all_recovered: bool,
    /// exactly_once, all_recovered, and every injection succeeded.
    pub ok: bool,
    pub warnings: Vec<String>,
}

/// What a chaos run counted in one phase, or in a set of phases added up.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseCounts {
    pub sent: u64,
    pub acked: u64,
    /// Refused with an error frame (e.g. `unavailable`), not acked.
    pub errors: u64,
    /// Neither acked nor refused by the end of the drain.
    pub unacked: u64,
    /// Delivered to the recipient's connection (first copy).
    pub delivered: u64,
    /// Acked but never delivered.
    pub lost: u64,
    /// Delivered under a second id (stored twice), or acked under one id and
    /// delivered under another.
    pub duplicated: u64,
    /// Delivered after a later message of the same sender.
    pub out_of_order: u64,
    /// Delivered although the send was answered with an error (the error lied).
    pub delivered_unacked: u64,
    /// Connections that ended unexpectedly in the phase, resumed, never resumed.
    pub disconnects: u64,
    pub reconnected: u64,
    pub reconnect_failures: u64,
}

impl PhaseCounts {
    /// Adds `other` in (phases of several workers, or several phases).
    pub fn add(&mut self, other: &PhaseCounts) {
        self.sent += other.sent;
        self.acked += other.acked;
        self.errors += other.errors;
        self.unacked += other.unacked;
        self.delivered += other.delivered;
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.delivered_unacked += other.delivered_unacked;
        self.disconnects += other.disconnects;
        self.reconnected += other.reconnected;
        self.reconnect_failures += other.reconnect_failures;
    }
}

/// Figures of the messages intended in a set of phases (see `dm::PhaseTally`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    #[serde(flatten)]
    pub counts: PhaseCounts,
    /// Worst intended-send-to-delivery time of a message of these phases.
    pub max_delivery_ms: f64,
    /// Drop-to-resumed times of the disconnects.
    pub reconnect: Percentiles,
}

/// One fault kind: how often it was injected and what the messages intended after
/// each injection (until the next one) went through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultResult {
    pub fault: String,
    pub injected: u64,
    /// Injections whose command failed.
    pub failed: u64,
    /// Longest injection command (a restart: until the process is ready again).
    pub command_ms_max: f64,
    #[serde(flatten)]
    pub figures: PhaseResult,
}

/// One injection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Injection {
    pub fault: String,
    /// The node, for `node-kill`.
    pub node: Option<u32>,
    /// Planned time, seconds after the start of the sends.
    pub at_secs: f64,
    /// When the command started, seconds after the start of the sends.
    pub started_secs: f64,
    pub command_ms: f64,
    pub ok: bool,
    /// The command's last output line (its error when it failed).
    pub output: String,
}
