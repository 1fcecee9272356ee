//! Sign-in: host-app JWTs (HS256), resumable sessions and guest usernames.
//!
//! The JWT check accepts only the algorithms configured (HS256 with the shared
//! secret), requires `exp`, and never accepts `alg: none`. It never logs a token.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Claims the gateway reads from a host-app token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user's permanent id.
    pub sub: String,
    /// The display name; the id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Rooms the user may join (protocol 1.1): room ids, or `["*"]` for any; absent
    /// = any room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
}

/// Whether a user with this `rooms` claim may join `room` (`None`: no claim).
pub fn claim_allows_room(claim: Option<&[String]>, room: &str) -> bool {
    claim.is_none_or(|rooms| rooms.iter().any(|r| r == "*" || r == room))
}

/// Verifies host-app tokens.
pub struct JwtVerifier {
    key: Option<DecodingKey>,
    validation: Validation,
}

impl JwtVerifier {
    /// A verifier for HS256 with `secret`; an empty secret refuses every token.
    pub fn new(secret: &str) -> JwtVerifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 30;
        validation.set_required_spec_claims(&["exp", "sub"]);
        JwtVerifier {
            key: (!secret.is_empty()).then(|| DecodingKey::from_secret(secret.as_bytes())),
            validation,
        }
    }

    /// The claims of a valid token, or why it was refused (for the client).
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let key = self
            .key
            .as_ref()
            .ok_or_else(|| "token sign-in is not configured on this node".to_string())?;
        decode::<Claims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_string(),
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                    "token algorithm not accepted".to_string()
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "token signature invalid".to_string()
                }
                _ => "token invalid".to_string(),
            })
    }
}

/// Signs a token for `user` valid for `ttl_secs` (the `chat-gateway token` command).
pub fn issue_token(secret: &str, user: &str, name: &str, ttl_secs: u64) -> anyhow::Result<String> {
    anyhow::ensure!(
        !secret.is_empty(),
        "auth.jwt_secret (CHAT_AUTH__JWT_SECRET) is not set"
    );
    anyhow::ensure!(
        chat_protocol::valid_user_id(user),
        "user id must be 1-64 characters of letters, digits, . _ - @"
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: user.to_string(),
        name: Some(name.to_string()),
        exp: now + ttl_secs,
        iat: Some(now),
        rooms: None,
    };
    Ok(encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_others_do_not() {
        let token = issue_token("s3cret", "u1", "User One", 60).unwrap();
        let claims = JwtVerifier::new("s3cret").verify(&token).unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.name.as_deref(), Some("User One"));
        assert!(JwtVerifier::new("other").verify(&token).is_err());
        assert!(JwtVerifier::new("").verify(&token).is_err());
    }

    #[test]
    fn refuses_alg_none() {
        // {"alg":"none","typ":"JWT"} . {"sub":"u1","exp":9999999999} . (no signature)
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(JwtVerifier::new("s3cret").verify(token).is_err());
    }
}
