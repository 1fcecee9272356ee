//! Request budgets: a token bucket per request kind, shared by all of a user's
//! connections on this node (across nodes each node enforces its own share), and the
//! typing gate (at most one `typing` a second per sender and recipient).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::limits::{Kind, LimitSettings};
use crate::sync::lock;

/// Allows `rate` tokens per second on average and bursts of `burst`.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32) -> TokenBucket {
        TokenBucket {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        }
    }

    /// Takes `cost` tokens if there are that many. A cost above the burst can never
    /// be paid: such requests are always refused.
    pub fn try_take(&mut self, cost: u32) -> bool {
        self.try_take_at(Instant::now(), cost)
    }

    fn try_take_at(&mut self, now: Instant, cost: u32) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        let cost = f64::from(cost);
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// How long a typing notification to one recipient silences the next ones.
pub const TYPING_GAP: Duration = Duration::from_secs(1);
/// Recipients remembered by the typing gate before the stale ones are dropped.
const TYPING_REMEMBERED: usize = 64;

/// One user's budgets on this node.
#[derive(Debug)]
pub struct UserBudget {
    buckets: [TokenBucket; Kind::ALL.len()],
    /// Refusals since the last accepted request, any kind: persistent abuse closes
    /// the connection with 4008.
    refusals: u32,
    /// When a `typing` to each recipient was last passed on.
    typing: HashMap<String, Instant>,
    last_used: Instant,
}

impl UserBudget {
    fn new(limits: &LimitSettings) -> UserBudget {
        UserBudget {
            buckets: Kind::ALL.map(|k| {
                let (rate, burst) = k.budget(limits);
                TokenBucket::new(rate, burst)
            }),
            refusals: 0,
            typing: HashMap::new(),
            last_used: Instant::now(),
        }
    }

    /// Takes `cost` tokens of `kind`; counts a refusal when there are not enough.
    pub fn try_take(&mut self, kind: Kind, cost: u32) -> bool {
        self.last_used = Instant::now();
        let ok = self.buckets[kind.index()].try_take(cost);
        if ok {
            self.refusals = 0;
        } else {
            self.refusals = self.refusals.saturating_add(1);
        }
        ok
    }

    /// Refusals in a row (any kind) since the last accepted request.
    pub fn refusals(&self) -> u32 {
        self.refusals
    }

    /// Whether a `typing` to `to` may go out now (none did within [`TYPING_GAP`]).
    pub fn typing_due(&self, to: &str) -> bool {
        self.typing
            .get(to)
            .is_none_or(|at| at.elapsed() >= TYPING_GAP)
    }

    /// Records a `typing` passed on to `to`.
    pub fn typing_sent(&mut self, to: &str) {
        if self.typing.len() >= TYPING_REMEMBERED {
            self.typing.retain(|_, at| at.elapsed() < TYPING_GAP);
        }
        self.typing.insert(to.to_string(), Instant::now());
    }
}

/// A user's budget, shared by their connections on this node.
pub type SharedBudget = Arc<Mutex<UserBudget>>;

/// Every user's budget on this node. Kept while the user has a connection, and for
/// [`IDLE`] after (a reconnect does not refill it); then dropped.
#[derive(Debug, Default)]
pub struct Budgets {
    users: Mutex<HashMap<String, SharedBudget>>,
}

/// How long the budget of a user without connections is kept (every bucket is full
/// again well before that).
const IDLE: Duration = Duration::from_secs(60);
/// Users remembered before idle budgets are looked for and dropped.
const PRUNE_ABOVE: usize = 4096;

impl Budgets {
    /// The user's budget (created full on first use), for a new connection to hold.
    pub fn of(&self, user: &str, limits: &LimitSettings) -> SharedBudget {
        let mut users = lock(&self.users);
        if let Some(b) = users.get(user) {
            return b.clone();
        }
        if users.len() >= PRUNE_ABOVE {
            users.retain(|_, b| Arc::strong_count(b) > 1 || lock(b).last_used.elapsed() < IDLE);
        }
        let b = Arc::new(Mutex::new(UserBudget::new(limits)));
        users.insert(user.to_string(), b.clone());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10, 3);
        b.last = start;
        assert!(b.try_take_at(start, 1));
        assert!(b.try_take_at(start, 1));
        assert!(b.try_take_at(start, 1));
        assert!(!b.try_take_at(start, 1));
        assert!(!b.try_take_at(start + Duration::from_millis(50), 1));
        assert!(b.try_take_at(start + Duration::from_millis(110), 1));
        // Refills never exceed the burst.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| b.try_take_at(later, 1)));
        assert!(!b.try_take_at(later, 1));
    }

    #[test]
    fn costs_above_one_and_above_the_burst() {
        let start = Instant::now();
        let mut b = TokenBucket::new(10, 30);
        b.last = start;
        assert!(b.try_take_at(start, 20));
        assert!(!b.try_take_at(start, 20), "10 tokens left");
        assert!(b.try_take_at(start, 10));
        assert!(!b.try_take_at(start + Duration::from_secs(60), 31));
    }

    #[test]
    fn one_budget_per_user_shared_by_connections_and_counting_refusals() {
        let limits = LimitSettings {
            history_per_second: 1,
            history_burst: 2,
            ..LimitSettings::default()
        };
        let budgets = Budgets::default();
        let a = budgets.of("alice", &limits);
        let b = budgets.of("alice", &limits);
        assert!(lock(&a).try_take(Kind::History, 1));
        assert!(lock(&b).try_take(Kind::History, 1));
        assert!(
            !lock(&a).try_take(Kind::History, 1),
            "shared: the burst is spent"
        );
        assert!(!lock(&b).try_take(Kind::History, 1));
        assert_eq!(lock(&a).refusals(), 2);
        // Other kinds and other users have budgets of their own.
        assert!(lock(&a).try_take(Kind::Read, 1));
        assert_eq!(lock(&a).refusals(), 0);
        let carol = budgets.of("carol", &limits);
        assert!(lock(&carol).try_take(Kind::History, 1));
    }

    #[test]
    fn typing_gate_per_recipient() {
        let budgets = Budgets::default();
        let a = budgets.of("alice", &LimitSettings::default());
        let mut a = lock(&a);
        assert!(a.typing_due("bob"));
        a.typing_sent("bob");
        assert!(!a.typing_due("bob"));
        assert!(a.typing_due("carol"));
    }
}
