//! The report of a `room` run: its parameters, deliveries, and Redis CPU per room
//! message (with the idle rate taken off).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Throughput;
use crate::probe::{CpuReport, RedisWork};
use crate::stats::{Percentiles, TimelineRow};

/// The parameters of one `room` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomParams {
    pub rooms: u64,
    pub members: u64,
    /// Messages per second per room.
    pub rate: f64,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub drain_secs: f64,
    pub connect_rate: f64,
}

/// The result of a `room` run. A delivery is one room message reaching one member's
/// connection; every connected member must receive every acked message of its room
/// exactly once, in the room's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomResult {
    pub rooms: u64,
    pub members_per_room: u64,
    pub members: u64,
    pub connected: u64,
    pub connect_failures: u64,
    pub connect_errors: BTreeMap<String, u64>,
    /// Node name → members signed in there.
    pub nodes: BTreeMap<String, u64>,
    pub target_rate_per_room: f64,
    pub window_secs: f64,
    /// Room messages sent and acked (all rooms).
    pub sent: u64,
    pub acked: u64,
    pub send_errors: BTreeMap<String, u64>,
    /// Acked messages × connected members of their room.
    pub expected_deliveries: u64,
    /// Distinct deliveries (room message, member).
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Deliveries whose message id differs from the id the sender was acked.
    pub mismatched_ids: u64,
    /// Deliveries whose id was not above the member's previous one.
    pub out_of_order: u64,
    /// Members whose connection ended during the run.
    pub disconnected: u64,
    /// `sent_per_sec`: room messages; `delivered_per_sec`: deliveries.
    pub throughput: Throughput,
    /// Intended send time → receipt, at every member (the sender's own copy included).
    pub latency: Percentiles,
    pub ack_latency: Percentiles,
    pub timeline: Vec<TimelineRow>,
    /// Redis CPU (all `--redis-pid`s, from `/proc`) / room messages acked, in µs.
    pub redis_cpu_us_per_room_message: Option<f64>,
    /// Redis CPU over the send window from `INFO cpu`, and above the idle rate measured
    /// just before with every member connected (absent from earlier reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_cpu: Option<RedisCpu>,
    /// Per-process CPU; its per-message figures are per room message acked.
    pub cpu: CpuReport,
    /// Redis commands per room message acked.
    pub redis_commands: Option<RedisWork>,
    pub warnings: Vec<String>,
    pub ok: bool,
}

/// Redis CPU with nothing sent: what it costs to hold the members (presence refreshes,
/// timers), to be taken off the send window's figure.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RedisIdle {
    pub secs: f64,
    pub cpu_seconds: f64,
    pub percent_of_core: f64,
}

/// Redis CPU (`INFO cpu`, summed over every address) over a send window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RedisCpu {
    pub window_secs: f64,
    pub cpu_seconds: f64,
    pub percent_of_core: f64,
    /// CPU microseconds per room message acked, all of it.
    pub us_per_room_message: Option<f64>,
    pub idle: Option<RedisIdle>,
    /// The window's CPU less the idle rate over the same time, per room message acked:
    /// the work the messages themselves cost.
    pub us_per_room_message_above_idle: Option<f64>,
}

impl RedisCpu {
    pub fn new(used: f64, secs: f64, idle: Option<RedisIdle>, messages: u64) -> RedisCpu {
        let per = |cpu: f64| (messages > 0).then(|| cpu * 1e6 / messages as f64);
        let above = idle.and_then(|i| per(used - i.cpu_seconds / i.secs.max(1e-9) * secs));
        RedisCpu {
            window_secs: secs,
            cpu_seconds: used,
            percent_of_core: used / secs.max(1e-9) * 100.0,
            us_per_room_message: per(used),
            idle,
            us_per_room_message_above_idle: above,
        }
    }
}
