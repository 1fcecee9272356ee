//! What this node keeps about presence between calls: the users whose count needs a
//! repair, and one read-write gate per user that keeps a repair from dropping the
//! count of a connection being opened (see the parent module).
//!
//! Plain bookkeeping: no engine call, no router, no await while a lock is held.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

use crate::sync::lock;

/// This node's presence state: the users whose count needs a repair, and the gates.
#[derive(Default)]
pub struct Presence {
    /// Users whose presence count this node failed to decrement: dropped once they
    /// have no connection here any more (see [`super::repair`]).
    repairs: Mutex<HashSet<String>>,
    gates: UserGates,
}

impl Presence {
    /// A connection of `user` closed (or failed to open) and its count could not be
    /// decremented: repaired by the next heartbeat.
    pub(super) fn repair_needed(&self, user: &str) {
        lock(&self.repairs).insert(user.to_string());
    }

    /// The users whose count waits for a repair.
    pub(super) fn pending_repairs(&self) -> Vec<String> {
        lock(&self.repairs).iter().cloned().collect()
    }

    /// `user`'s count was repaired.
    pub(super) fn repaired(&self, user: &str) {
        lock(&self.repairs).remove(user);
    }

    /// `user`'s gate, held while one of their connections is registered and counted.
    pub(super) async fn opening(&self, user: &str) -> Gate<'_> {
        self.gates.shared(user).await
    }

    /// `user`'s gate, held while their count is dropped.
    pub(super) async fn repairing(&self, user: &str) -> Gate<'_> {
        self.gates.exclusive(user).await
    }
}

/// One read-write gate per user, existing only while someone holds or awaits it.
#[derive(Default)]
struct UserGates {
    gates: Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

/// A held gate; the user's entry is removed when the last holder lets go.
pub(super) struct Gate<'a> {
    gates: &'a UserGates,
    user: String,
    lock: Arc<RwLock<()>>,
    guard: Option<Held>,
}

/// The guards are held for their drop only.
enum Held {
    Shared { _guard: OwnedRwLockReadGuard<()> },
    Exclusive { _guard: OwnedRwLockWriteGuard<()> },
}

impl UserGates {
    fn lock_for(&self, user: &str) -> Arc<RwLock<()>> {
        lock(&self.gates)
            .entry(user.to_string())
            .or_default()
            .clone()
    }

    /// Held while a connection of `user` is registered and counted.
    async fn shared(&self, user: &str) -> Gate<'_> {
        let lock = self.lock_for(user);
        let guard = Held::Shared {
            _guard: lock.clone().read_owned().await,
        };
        self.gate(user, lock, guard)
    }

    /// Held while `user`'s count is dropped.
    async fn exclusive(&self, user: &str) -> Gate<'_> {
        let lock = self.lock_for(user);
        let guard = Held::Exclusive {
            _guard: lock.clone().write_owned().await,
        };
        self.gate(user, lock, guard)
    }

    fn gate(&self, user: &str, lock: Arc<RwLock<()>>, guard: Held) -> Gate<'_> {
        Gate {
            gates: self,
            user: user.to_string(),
            lock,
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.gates).len()
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        self.guard.take();
        let mut gates = lock(&self.gates.gates);
        // Clones are only made under this mutex: 2 = the map's and ours, so nobody
        // else holds or awaits this gate.
        if Arc::strong_count(&self.lock) == 2 {
            gates.remove(&self.user);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const BLOCKED: Duration = Duration::from_millis(50);

    #[tokio::test]
    async fn a_repair_blocks_its_user_only() {
        let gates = UserGates::default();
        let repair = gates.exclusive("alice").await;
        // Others sign in while alice is being repaired.
        let bob = tokio::time::timeout(BLOCKED, gates.shared("bob"))
            .await
            .expect("bob's sign-in is not blocked by alice's repair");
        drop(bob);
        // Alice's own sign-in waits for the repair.
        assert!(tokio::time::timeout(BLOCKED, gates.shared("alice"))
            .await
            .is_err());
        drop(repair);
        let alice = tokio::time::timeout(BLOCKED, gates.shared("alice"))
            .await
            .expect("alice signs in once the repair is done");
        // Sign-ins share the gate; a repair waits for them.
        let alice2 = tokio::time::timeout(BLOCKED, gates.shared("alice"))
            .await
            .expect("sign-ins of one user do not block each other");
        assert!(tokio::time::timeout(BLOCKED, gates.exclusive("alice"))
            .await
            .is_err());
        drop(alice);
        assert!(tokio::time::timeout(BLOCKED, gates.exclusive("alice"))
            .await
            .is_err());
        drop(alice2);
        let repair = tokio::time::timeout(BLOCKED, gates.exclusive("alice"))
            .await
            .expect("the repair runs once no sign-in holds the gate");
        drop(repair);
        assert_eq!(gates.len(), 0, "no gate is kept for nobody");
    }

    #[tokio::test]
    async fn a_waiting_sign_in_keeps_the_gate() {
        let gates = Arc::new(UserGates::default());
        let repair = gates.exclusive("alice").await;
        let waiting = tokio::spawn({
            let gates = gates.clone();
            async move {
                let _gate = gates.shared("alice").await;
            }
        });
        tokio::time::sleep(BLOCKED).await;
        // The repair ends while a sign-in waits: the gate must stay (the waiter holds
        // it), else a second gate for alice could be created beside it.
        drop(repair);
        assert_eq!(
            gates.len(),
            1,
            "alice's gate stays while a sign-in awaits it"
        );
        waiting.await.expect("the waiting sign-in proceeds");
        assert_eq!(gates.len(), 0);
    }
}
