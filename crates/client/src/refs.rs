//! Request `ref` generation. A ref only has to be unique among this connection's
//! requests in flight; a random prefix also keeps refs of different clients apart
//! in logs. Refs stay well under the protocol's 64-character limit.

/// Generates `ref`s: `<8 random hex chars>-<counter>`.
#[derive(Debug, Clone)]
pub struct RefGen {
    prefix: String,
    next: u64,
}

impl Default for RefGen {
    fn default() -> Self {
        Self::new()
    }
}

impl RefGen {
    pub fn new() -> RefGen {
        let id = uuid::Uuid::new_v4().simple().to_string();
        RefGen {
            prefix: id[..8].to_string(),
            next: 1,
        }
    }

    /// A ref never returned before by this generator.
    pub fn next_ref(&mut self) -> String {
        let r = format!("{}-{}", self.prefix, self.next);
        self.next += 1;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn refs_are_unique_and_short() {
        let mut gen = RefGen::new();
        let refs: HashSet<String> = (0..10_000).map(|_| gen.next_ref()).collect();
        assert_eq!(refs.len(), 10_000);
        assert!(refs.iter().all(|r| r.len() <= chat_protocol::MAX_REF));
    }

    #[test]
    fn generators_use_different_prefixes() {
        let a = RefGen::new().next_ref();
        let b = RefGen::new().next_ref();
        assert_ne!(a, b);
    }
}
