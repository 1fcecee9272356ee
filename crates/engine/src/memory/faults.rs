//! Faults a test can inject into a memory engine (feature `testing`): named
//! operations fail with [`EngineError::Unavailable`](crate::EngineError), as Redis calls do in an
//! outage, so the paths that must survive one run in a unit test. Without the
//! feature, [`Faults`] is empty and every check is `Ok(())`; it never changes what a
//! call does when no fault is set.

/// An engine operation a fault can target: the trait method of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Send,
    InboxHead,
    ReadInbox,
    Subscribe,
    RoomSend,
    RoomHead,
    ReadRoom,
    SubscribeRoom,
}

#[cfg(feature = "testing")]
pub use with_faults::Faults;

#[cfg(not(feature = "testing"))]
pub(crate) use without_faults::Faults;

#[cfg(feature = "testing")]
mod with_faults {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use super::Op;
    use crate::EngineError;

    /// The faults of one engine handle (one node). Cloning gives another handle on
    /// the same faults, so a test keeps one after moving the engine into the code
    /// under test.
    #[derive(Clone, Default)]
    pub struct Faults {
        failing: Arc<Mutex<HashMap<Op, Remaining>>>,
    }

    #[derive(Clone, Copy)]
    enum Remaining {
        /// Every call fails until [`Faults::heal`].
        Always,
        /// This many more calls fail.
        Next(u32),
    }

    impl Faults {
        /// Every call of `op` fails from now on, until [`Faults::heal`].
        pub fn fail(&self, op: Op) {
            self.lock().insert(op, Remaining::Always);
        }

        /// The next `n` calls of `op` fail; later ones succeed.
        pub fn fail_next(&self, op: Op, n: u32) {
            let mut failing = self.lock();
            if n == 0 {
                failing.remove(&op);
            } else {
                failing.insert(op, Remaining::Next(n));
            }
        }

        /// Calls of `op` succeed again.
        pub fn heal(&self, op: Op) {
            self.lock().remove(&op);
        }

        /// Every operation succeeds again.
        pub fn heal_all(&self) {
            self.lock().clear();
        }

        /// `Err` when a fault is set for `op` (counting it down).
        pub(crate) fn check(&self, op: Op) -> Result<(), EngineError> {
            let mut failing = self.lock();
            match failing.get_mut(&op) {
                None => return Ok(()),
                Some(Remaining::Always) => {}
                Some(Remaining::Next(n)) => {
                    *n -= 1;
                    if *n == 0 {
                        failing.remove(&op);
                    }
                }
            }
            Err(EngineError::Unavailable(format!(
                "{op:?} failed by the test's fault"
            )))
        }

        fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Op, Remaining>> {
            self.failing.lock().unwrap_or_else(|p| p.into_inner())
        }
    }
}

#[cfg(not(feature = "testing"))]
mod without_faults {
    use super::Op;
    use crate::EngineError;

    /// No faults: the feature `testing` is off.
    #[derive(Clone, Default)]
    pub(crate) struct Faults {}

    impl Faults {
        #[inline(always)]
        pub(crate) fn check(&self, _op: Op) -> Result<(), EngineError> {
            Ok(())
        }
    }
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::EngineError;

    #[test]
    fn faults_count_down_and_heal() {
        let faults = Faults::default();
        assert!(faults.check(Op::ReadInbox).is_ok());
        faults.fail_next(Op::ReadInbox, 2);
        assert!(faults.check(Op::ReadInbox).is_err());
        assert!(faults.check(Op::Send).is_ok(), "only the named operation");
        assert!(faults.check(Op::ReadInbox).is_err());
        assert!(faults.check(Op::ReadInbox).is_ok(), "two only");
        faults.fail(Op::ReadRoom);
        for _ in 0..3 {
            assert!(matches!(
                faults.check(Op::ReadRoom),
                Err(EngineError::Unavailable(_))
            ));
        }
        faults.heal(Op::ReadRoom);
        assert!(faults.check(Op::ReadRoom).is_ok());
    }
}
