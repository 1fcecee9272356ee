//! Fresh random ids the engines hand out: guest user ids and session tokens.
//!
//! Both engines issue the same forms, so a client cannot tell them apart. Crate-private:
//! callers outside the engine get ids only through [`crate::Accounts`].

/// A fresh guest id: `g-` and 20 hex digits.
pub(crate) fn new_guest_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("g-{}", &hex[..20])
}

/// A fresh session secret: 256 random bits, hex (URL-safe).
pub(crate) fn new_session_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_documented_forms() {
        let guest = new_guest_id();
        assert_eq!(guest.len(), 22);
        assert!(guest.starts_with("g-"));
        assert!(guest[2..].bytes().all(|b| b.is_ascii_hexdigit()));
        let token = new_session_token();
        assert_eq!(token.len(), 64);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(token, new_session_token());
    }
}
