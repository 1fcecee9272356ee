//! Latency bookkeeping: HDR histograms in microseconds, their portable form (V2
//! serialization in base64, so worker processes can hand them to the parent without
//! losing precision), percentile summaries, and a per-second timeline for plots and
//! progress lines.
//!
//! Never averages percentiles: merging always adds the histograms themselves.

use anyhow::{Context, Result};
use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Highest latency a histogram records (60 s, in µs); slower values are clamped.
const MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct Hist(pub Histogram<u64>);

impl Default for Hist {
    fn default() -> Self {
        // 3 significant digits: 0.1 % error, a few tens of KiB per histogram.
        Hist(Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"))
    }
}

impl Hist {
    pub fn record_us(&mut self, us: u64) {
        self.0.saturating_record(us.clamp(1, MAX_US));
    }

    pub fn add(&mut self, other: &Hist) {
        // Same bounds everywhere, so adding cannot fail; a failure would only lose data
        // from one histogram, never panic a run.
        let _ = self.0.add(&other.0);
    }

    /// V2 serialization, base64.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = V2Serializer::new().serialize(&self.0, &mut buf);
        base64::engine::general_purpose::STANDARD.encode(buf)
    }

    pub fn decode(text: &str) -> Result<Hist> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .context("histogram is not base64")?;
        let h: Histogram<u64> = Deserializer::new()
            .deserialize(&mut bytes.as_slice())
            .map_err(|e| anyhow::anyhow!("bad histogram: {e:?}"))?;
        let mut out = Hist::default();
        out.0
            .add(&h)
            .map_err(|e| anyhow::anyhow!("histogram bounds: {e:?}"))?;
        Ok(out)
    }

    pub fn summary(&self) -> Percentiles {
        let h = &self.0;
        let empty = h.is_empty();
        let ms = |us: u64| if empty { 0.0 } else { us as f64 / 1000.0 };
        Percentiles {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: if empty { 0.0 } else { h.mean() / 1000.0 },
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }

    /// (latency in ms, fraction of samples at or below it) for a distribution plot.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        if self.0.is_empty() {
            return Vec::new();
        }
        let qs = [
            0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.97, 0.99, 0.995,
            0.999, 0.9999, 1.0,
        ];
        qs.iter()
            .map(|&q| (self.0.value_at_quantile(q) as f64 / 1000.0, q))
            .collect()
    }
}

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn line(&self) -> String {
        format!(
            "n={} p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms",
            self.count, self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

/// Latencies of each second of a run (second 0 = the run's start), kept as
/// histograms so workers' timelines merge exactly.
#[derive(Clone, Default)]
pub struct Timeline {
    pub seconds: Vec<Hist>,
}

impl Timeline {
    pub fn record(&mut self, second: usize, us: u64) {
        if second >= self.seconds.len() {
            self.seconds.resize_with(second + 1, Hist::default);
        }
        self.seconds[second].record_us(us);
    }

    pub fn add(&mut self, other: &Timeline) {
        if other.seconds.len() > self.seconds.len() {
            self.seconds.resize_with(other.seconds.len(), Hist::default);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            mine.add(theirs);
        }
    }

    pub fn encode(&self) -> Vec<String> {
        self.seconds.iter().map(Hist::encode).collect()
    }

    pub fn decode(items: &[String]) -> Result<Timeline> {
        Ok(Timeline {
            seconds: items
                .iter()
                .map(|s| Hist::decode(s))
                .collect::<Result<_>>()?,
        })
    }

    /// One row per second, for the JSON report and the plot.
    pub fn rows(&self) -> Vec<TimelineRow> {
        self.seconds
            .iter()
            .enumerate()
            .map(|(second, h)| {
                let s = h.summary();
                TimelineRow {
                    second,
                    count: s.count,
                    p50_ms: s.p50_ms,
                    p99_ms: s.p99_ms,
                    max_ms: s.max_ms,
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineRow {
    pub second: usize,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_encoding_and_merge_exactly() {
        let mut a = Hist::default();
        let mut b = Hist::default();
        for us in 1..=1000 {
            a.record_us(us);
            b.record_us(us * 10);
        }
        let a2 = Hist::decode(&a.encode()).unwrap();
        assert_eq!(a2.0.len(), 1000);
        let mut m = a2;
        m.add(&Hist::decode(&b.encode()).unwrap());
        let s = m.summary();
        assert_eq!(s.count, 2000);
        assert!(s.p50_ms <= s.p99_ms && s.p99_ms <= s.max_ms);
        assert!((s.max_ms - 10.0).abs() < 0.05);
    }

    #[test]
    fn timeline_merges_by_second() {
        let mut a = Timeline::default();
        a.record(0, 100);
        let mut b = Timeline::default();
        b.record(2, 300);
        a.add(&Timeline::decode(&b.encode()).unwrap());
        let rows = a.rows();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].count, 0);
        assert_eq!(rows[2].count, 1);
    }
}
