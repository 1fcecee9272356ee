//! Adding up what the user tasks saw: a send is lost when acked but never received by
//! the peer, duplicated when stored twice (two message ids for one send). Also the exact
//! merge of worker processes' outcomes (histograms added, never averaged).

use std::collections::HashMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::report::{DmCounts, PhaseCounts, StormCounts};
use crate::stats::{Hist, Timeline};

/// Everything one process measured; outcomes of several workers merge exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DmOutcome {
    /// The counts the report shows as they are.
    #[serde(flatten)]
    pub counts: DmCounts,
    /// Histograms and timeline, encoded so workers' outcomes add up exactly.
    pub latency: String,
    pub ack_latency: String,
    pub timeline: Vec<String>,
    /// From the first intended send to the end of the drain.
    pub elapsed_secs: f64,
    pub storm: Option<StormOutcome>,
    pub warnings: Vec<String>,
    /// The chaos scenario's figures per phase (absent from every other run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chaos: Option<ChaosTally>,
}

/// Figures of the messages whose intended send time fell in one phase of a chaos run
/// (phase 0: before the first fault; phase i: from fault i's injection to the next),
/// and of the disconnects that happened in it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PhaseTally {
    #[serde(flatten)]
    pub counts: PhaseCounts,
    /// Worst intended-send-to-delivery time of a message of the phase, µs.
    pub max_delivery_us: u64,
    /// Histogram of drop-to-resumed times (encoded).
    pub reconnect: String,
}

/// Every phase of a chaos run, in order.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChaosTally {
    pub phases: Vec<PhaseTally>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StormOutcome {
    #[serde(flatten)]
    pub counts: StormCounts,
    /// Drop → welcome times (encoded histogram).
    pub recovery: String,
}

/// One send of one user.
pub(super) struct SendRecord {
    pub(super) intended_us: u64,
    /// Message id from the ack.
    pub(super) acked_id: Option<String>,
    pub(super) error: Option<String>,
}

/// What one user task hands back.
#[derive(Default)]
pub(super) struct UserOutcome {
    pub(super) records: Vec<SendRecord>,
    /// Peer's seq → message id, as received.
    pub(super) received: HashMap<u64, String>,
    pub(super) duplicated: u64,
    pub(super) redelivered: u64,
    pub(super) unexpected_disconnects: u64,
    pub(super) storm: Option<UserStorm>,
    pub(super) node: Option<String>,
    pub(super) connect_error: Option<String>,
    /// When each first copy arrived (µs since the epoch), by sequence number.
    pub(super) delivered_at: HashMap<u64, u64>,
    /// Sequence numbers delivered a second time under another id.
    pub(super) dup_seqs: Vec<u64>,
    /// Sequence numbers that arrived after a higher one.
    pub(super) ooo_seqs: Vec<u64>,
    pub(super) last_seq: Option<u64>,
    /// Unexpected disconnects: when (µs since the epoch), and how long until resumed
    /// (None: never).
    pub(super) drops: Vec<(u64, Option<u64>)>,
}

pub(super) struct UserStorm {
    /// µs from the drop to the welcome; `None` when it never came back.
    pub(super) recovered_after_us: Option<u64>,
    pub(super) recovered: bool,
}

/// Adds up the users' outcomes; lost messages are found pair by pair.
pub(super) fn combine(users: Vec<UserOutcome>, storm_at_us: Option<u64>) -> DmOutcome {
    let mut out = DmOutcome::default();
    let mut recovery = Hist::default();
    let mut storm = storm_at_us.map(|_| StormOutcome::default());
    let mut storm_end_us = 0u64;
    for u in &users {
        if let (Some(s), Some(us)) = (storm.as_mut(), &u.storm) {
            s.counts.dropped += 1;
            match us.recovered_after_us {
                Some(after) => {
                    s.counts.reconnected += 1;
                    recovery.record_us(after);
                    storm_end_us = storm_end_us.max(after);
                    s.counts.not_recovered += u64::from(!us.recovered);
                }
                None => s.counts.reconnect_failures += 1,
            }
        }
    }
    for (i, u) in users.iter().enumerate() {
        match (&u.node, &u.connect_error) {
            (Some(node), _) => {
                out.counts.connected += 1;
                *out.counts.nodes.entry(node.clone()).or_default() += 1;
            }
            (None, err) => {
                out.counts.connect_failures += 1;
                if out.counts.connect_errors.len() < 5 {
                    out.counts
                        .connect_errors
                        .push(err.clone().unwrap_or_default());
                }
            }
        }
        let peer = &users[i ^ 1];
        out.counts.duplicated += u.duplicated;
        out.counts.redelivered += u.redelivered;
        out.counts.unexpected_disconnects += u.unexpected_disconnects;
        out.counts.received += u.received.len() as u64;
        for (seq, r) in u.records.iter().enumerate() {
            let in_storm = storm_at_us
                .is_some_and(|at| r.intended_us >= at && r.intended_us <= at + storm_end_us);
            out.counts.sent += 1;
            match (&r.acked_id, &r.error) {
                (Some(_), _) => out.counts.acked += 1,
                (None, Some(code)) => *out.counts.send_errors.entry(code.clone()).or_default() += 1,
                (None, None) => out.counts.unacked += 1,
            }
            let got = peer.received.get(&(seq as u64));
            if r.acked_id.is_some() && got.is_none() {
                out.counts.lost += 1;
            }
            if let (Some(a), Some(g)) = (&r.acked_id, got) {
                // Received under another id than the ack's: stored twice.
                out.counts.duplicated += u64::from(a != g);
            }
            if let Some(s) = storm.as_mut().filter(|_| in_storm) {
                s.counts.sent_during += 1;
                s.counts.acked_during += u64::from(r.acked_id.is_some());
                s.counts.received_during += u64::from(got.is_some());
                s.counts.lost_during += u64::from(r.acked_id.is_some() && got.is_none());
            }
        }
    }
    if let Some(s) = storm.as_mut() {
        s.counts.all_recovered_ms = storm_end_us as f64 / 1000.0;
        s.recovery = recovery.encode();
    }
    out.storm = storm;
    out
}

/// The chaos figures: each message (by its intended send time) and each disconnect (by
/// when it happened) in the phase it fell in. `phase_starts_us` are the injections'
/// times (µs since the epoch), ascending.
pub(super) fn chaos_tally(users: &[UserOutcome], phase_starts_us: &[u64]) -> ChaosTally {
    let phase_of = |t: u64| phase_starts_us.partition_point(|&s| s <= t);
    let mut phases = vec![PhaseTally::default(); phase_starts_us.len() + 1];
    let mut reconnect = vec![Hist::default(); phases.len()];
    for (i, u) in users.iter().enumerate() {
        let Some(peer) = users.get(i ^ 1) else {
            continue;
        };
        for (seq, r) in u.records.iter().enumerate() {
            let seq = seq as u64;
            let p = &mut phases[phase_of(r.intended_us)];
            p.counts.sent += 1;
            let got = peer.received.get(&seq);
            match (&r.acked_id, &r.error) {
                (Some(_), _) => p.counts.acked += 1,
                (None, Some(_)) => p.counts.errors += 1,
                (None, None) => p.counts.unacked += 1,
            }
            if got.is_some() {
                p.counts.delivered += 1;
                if r.acked_id.is_none() {
                    p.counts.delivered_unacked += 1;
                }
            }
            match (&r.acked_id, got) {
                (Some(_), None) => p.counts.lost += 1,
                (Some(a), Some(g)) if a != g => p.counts.duplicated += 1,
                _ => {}
            }
            if let Some(at) = peer.delivered_at.get(&seq) {
                p.max_delivery_us = p.max_delivery_us.max(at.saturating_sub(r.intended_us));
            }
        }
        // What the recipient (this user) saw of the peer's messages.
        for (seqs, dup) in [(&u.dup_seqs, true), (&u.ooo_seqs, false)] {
            for seq in seqs {
                let at = peer.records.get(*seq as usize).map_or(0, |r| r.intended_us);
                let p = &mut phases[phase_of(at)];
                if dup {
                    p.counts.duplicated += 1;
                } else {
                    p.counts.out_of_order += 1;
                }
            }
        }
        for &(at, after) in &u.drops {
            let k = phase_of(at);
            phases[k].counts.disconnects += 1;
            match after {
                Some(us) => {
                    phases[k].counts.reconnected += 1;
                    reconnect[k].record_us(us);
                }
                None => phases[k].counts.reconnect_failures += 1,
            }
        }
    }
    for (p, h) in phases.iter_mut().zip(&reconnect) {
        p.reconnect = h.encode();
    }
    ChaosTally { phases }
}

/// Adds `other` (another worker's outcome) into `into`.
pub fn merge(into: &mut DmOutcome, other: DmOutcome) -> Result<()> {
    let add_hist = |a: &mut String, b: &str| -> Result<()> {
        let mut h = if a.is_empty() {
            Hist::default()
        } else {
            Hist::decode(a)?
        };
        if !b.is_empty() {
            h.add(&Hist::decode(b)?);
        }
        *a = h.encode();
        Ok(())
    };
    into.counts.users += other.counts.users;
    into.counts.connected += other.counts.connected;
    into.counts.connect_failures += other.counts.connect_failures;
    into.counts
        .connect_errors
        .extend(other.counts.connect_errors);
    into.counts.connect_errors.truncate(10);
    for (k, v) in other.counts.nodes {
        *into.counts.nodes.entry(k).or_default() += v;
    }
    into.counts.sent += other.counts.sent;
    into.counts.acked += other.counts.acked;
    for (k, v) in other.counts.send_errors {
        *into.counts.send_errors.entry(k).or_default() += v;
    }
    into.counts.unacked += other.counts.unacked;
    into.counts.received += other.counts.received;
    into.counts.lost += other.counts.lost;
    into.counts.duplicated += other.counts.duplicated;
    into.counts.redelivered += other.counts.redelivered;
    into.counts.unexpected_disconnects += other.counts.unexpected_disconnects;
    add_hist(&mut into.latency, &other.latency)?;
    add_hist(&mut into.ack_latency, &other.ack_latency)?;
    let mut tl = Timeline::decode(&into.timeline)?;
    tl.add(&Timeline::decode(&other.timeline)?);
    into.timeline = tl.encode();
    into.elapsed_secs = into.elapsed_secs.max(other.elapsed_secs);
    into.warnings.extend(other.warnings);
    match (&mut into.storm, other.storm) {
        (Some(a), Some(b)) => {
            a.counts.dropped += b.counts.dropped;
            a.counts.reconnected += b.counts.reconnected;
            a.counts.not_recovered += b.counts.not_recovered;
            a.counts.reconnect_failures += b.counts.reconnect_failures;
            a.counts.all_recovered_ms = a.counts.all_recovered_ms.max(b.counts.all_recovered_ms);
            add_hist(&mut a.recovery, &b.recovery)?;
            a.counts.sent_during += b.counts.sent_during;
            a.counts.acked_during += b.counts.acked_during;
            a.counts.received_during += b.counts.received_during;
            a.counts.lost_during += b.counts.lost_during;
        }
        (a @ None, b) => *a = b,
        _ => {}
    }
    match (&mut into.chaos, other.chaos) {
        (Some(a), Some(b)) => {
            for (x, y) in a.phases.iter_mut().zip(b.phases) {
                x.counts.add(&y.counts);
                x.max_delivery_us = x.max_delivery_us.max(y.max_delivery_us);
                add_hist(&mut x.reconnect, &y.reconnect)?;
            }
        }
        (a @ None, b) => *a = b,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(records: Vec<Option<&str>>, received: &[(u64, &str)]) -> UserOutcome {
        UserOutcome {
            records: records
                .into_iter()
                .map(|id| SendRecord {
                    intended_us: 0,
                    acked_id: id.map(str::to_string),
                    error: None,
                })
                .collect(),
            received: received
                .iter()
                .map(|(s, id)| (*s, id.to_string()))
                .collect(),
            node: Some("n".into()),
            ..Default::default()
        }
    }

    #[test]
    fn chaos_phases_split_by_intended_time() {
        // Phases start at 100 and 200. User 0 sends at 50, 150, 250 (all acked); user
        // 1 got the first (flagged out of order, as a test of the attribution), the
        // third twice (the second copy under another id), the second never.
        let mut a = user(vec![Some("1-0"), Some("2-0"), Some("3-0")], &[]);
        for (r, t) in a.records.iter_mut().zip([50, 150, 250]) {
            r.intended_us = t;
        }
        a.drops = vec![(120, Some(30)), (130, None)];
        let mut b = user(vec![], &[(0, "1-0"), (2, "3-0")]);
        b.delivered_at = [(0, 60), (2, 400)].into_iter().collect();
        b.dup_seqs = vec![2];
        b.ooo_seqs = vec![0];
        let t = chaos_tally(&[a, b], &[100, 200]);
        assert_eq!(t.phases.len(), 3);
        let (p0, p1, p2) = (&t.phases[0], &t.phases[1], &t.phases[2]);
        assert_eq!(
            (
                p0.counts.sent,
                p0.counts.delivered,
                p0.counts.lost,
                p0.counts.out_of_order
            ),
            (1, 1, 0, 1)
        );
        assert_eq!(p0.max_delivery_us, 10);
        assert_eq!(
            (
                p1.counts.sent,
                p1.counts.acked,
                p1.counts.delivered,
                p1.counts.lost
            ),
            (1, 1, 0, 1)
        );
        assert_eq!(
            (
                p1.counts.disconnects,
                p1.counts.reconnected,
                p1.counts.reconnect_failures
            ),
            (2, 1, 1)
        );
        assert_eq!(
            (p2.counts.sent, p2.counts.delivered, p2.counts.duplicated),
            (1, 1, 1)
        );
        assert_eq!(p2.max_delivery_us, 150);
    }

    #[test]
    fn lost_and_duplicated_are_found_per_pair() {
        // User 0 sent 3 (all acked); user 1 got seq 0 and seq 1 under another id.
        let a = user(vec![Some("1-0"), Some("2-0"), Some("3-0")], &[]);
        let b = user(vec![], &[(0, "1-0"), (1, "9-9")]);
        let out = combine(vec![a, b], None);
        assert_eq!(out.counts.sent, 3);
        assert_eq!(out.counts.acked, 3);
        assert_eq!(out.counts.received, 2);
        assert_eq!(out.counts.lost, 1);
        assert_eq!(out.counts.duplicated, 1);
    }
}
