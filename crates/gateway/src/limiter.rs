//! A token bucket for per-connection send rates.

use std::time::Instant;

/// Allows `rate` sends per second on average and bursts of `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Refusals since the last accepted send: persistent abuse closes with 4008.
    refusals: u32,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
            refusals: 0,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self) -> bool {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refusals = 0;
            true
        } else {
            self.refusals = self.refusals.saturating_add(1);
            false
        }
    }

    pub fn refusals(&self) -> u32 {
        self.refusals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10, 3);
        b.last = start;
        assert!(b.try_take_at(start));
        assert!(b.try_take_at(start));
        assert!(b.try_take_at(start));
        assert!(!b.try_take_at(start));
        assert_eq!(b.refusals(), 1);
        assert!(!b.try_take_at(start + Duration::from_millis(50)));
        assert!(b.try_take_at(start + Duration::from_millis(110)));
        assert_eq!(b.refusals(), 0);
        // Refills never exceed the burst.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| b.try_take_at(later)));
        assert!(!b.try_take_at(later));
    }
}
