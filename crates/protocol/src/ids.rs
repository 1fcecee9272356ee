//! Id rules: user ids, guest names, conversation ids and stream ids (message ids and
//! cursors are Redis stream ids, `<ms>-<seq>`, compared numerically).

use std::cmp::Ordering;
use std::fmt;

/// Longest user id accepted (from a JWT `sub`, the API, or generated for guests).
pub const MAX_USER_ID: usize = 128;

/// The user-id rule in words, for error messages.
pub const USER_ID_RULE: &str = "1-128 characters of letters, digits, . _ @ - |";

/// A user id is 1–128 characters of ASCII letters, digits, `.`, `_`, `@`, `-`, `|`
/// (protocol 1.2 added `|` and the length, for identity providers' subjects such as
/// `auth0|64f1…`).
///
/// The set excludes `:`, braces and spaces so ids can be joined into conversation ids,
/// Redis hash tags and space-separated stored records without escaping.
pub fn valid_user_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_USER_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'|'))
}

/// Trims a guest username and checks it: 1–32 characters of letters, digits, space,
/// `.`, `_`, `-`. Returns the trimmed name.
pub fn normalize_username(raw: &str) -> Option<String> {
    let name = raw.trim();
    let count = name.chars().count();
    if count == 0 || count > 32 {
        return None;
    }
    if name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-'))
    {
        Some(name.to_string())
    } else {
        None
    }
}

/// The conversation id of a 1:1 conversation: the two user ids, sorted.
pub fn dm_conversation(a: &str, b: &str) -> String {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    format!("dm:{lo}:{hi}")
}

/// A Redis stream id (`<ms>-<seq>`): message ids and cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    pub fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = match s.split_once('-') {
            Some((ms, seq)) => (ms.parse().ok()?, seq.parse().ok()?),
            None => (s.parse().ok()?, 0),
        };
        Some(StreamId { ms, seq })
    }

    /// The id right after this one (for exclusive range starts); the largest id
    /// (`18446744073709551615-18446744073709551615`, which no entry can have) is its
    /// own successor instead of overflowing.
    pub fn next(self) -> StreamId {
        if self.ms == u64::MAX && self.seq == u64::MAX {
            self
        } else if self.seq == u64::MAX {
            StreamId {
                ms: self.ms + 1,
                seq: 0,
            }
        } else {
            StreamId {
                ms: self.ms,
                seq: self.seq + 1,
            }
        }
    }
}

impl Ord for StreamId {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.ms, self.seq).cmp(&(other.ms, other.seq))
    }
}

impl PartialOrd for StreamId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_never_overflows() {
        let max = StreamId {
            ms: u64::MAX,
            seq: u64::MAX,
        };
        assert_eq!(max.next(), max);
        let last_of_ms = StreamId {
            ms: 5,
            seq: u64::MAX,
        };
        assert_eq!(last_of_ms.next(), StreamId { ms: 6, seq: 0 });
        assert_eq!(
            StreamId { ms: 5, seq: 1 }.next(),
            StreamId { ms: 5, seq: 2 }
        );
    }

    #[test]
    fn user_ids() {
        assert!(valid_user_id("alice-1@x.org"));
        assert!(valid_user_id("auth0|64f1c2d3e4"));
        assert!(valid_user_id("google-oauth2|1234"));
        assert!(valid_user_id(&"a".repeat(128)));
        assert!(!valid_user_id(""));
        assert!(!valid_user_id("a:b"));
        assert!(!valid_user_id("a}b"));
        assert!(!valid_user_id("a{b"));
        assert!(!valid_user_id("a b"));
        assert!(!valid_user_id("a\\b"));
        assert!(!valid_user_id("zoë"));
        assert!(!valid_user_id(&"a".repeat(129)));
    }

    #[test]
    fn usernames() {
        assert_eq!(normalize_username("  Zoë Smith "), Some("Zoë Smith".into()));
        assert_eq!(normalize_username("   "), None);
        assert_eq!(normalize_username("a<b"), None);
        assert_eq!(normalize_username(&"x".repeat(33)), None);
    }

    #[test]
    fn conversation_is_symmetric() {
        assert_eq!(dm_conversation("b", "a"), dm_conversation("a", "b"));
        assert_eq!(dm_conversation("a", "b"), "dm:a:b");
    }

    #[test]
    fn stream_ids_order_numerically() {
        let a = StreamId::parse("9-5").unwrap();
        let b = StreamId::parse("10-0").unwrap();
        assert!(a < b);
        assert_eq!(a.next().to_string(), "9-6");
        assert_eq!(StreamId::parse("12").unwrap().to_string(), "12-0");
        assert!(StreamId::parse("x-1").is_none());
    }
}
