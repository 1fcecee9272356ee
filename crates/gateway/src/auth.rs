//! Sign-in: host-app JWTs (HS256 with `auth.jwt_secret`; RS256 and ES256 from the
//! identity provider's key set, `auth.jwks_url`), resumable sessions and guest
//! usernames.
//!
//! The token's header picks the path, never the key: HS256 goes to the shared secret
//! only, RS256/ES256 to the provider key of the token's `kid` that was published for
//! that algorithm (`keyset.rs`). Any other algorithm, `alg: none`, or a path the node
//! is not configured for is refused. Every path checks `exp` (required) and `nbf` with
//! 30 s of leeway, and `aud`/`iss` only where the node is configured to. Verification
//! is local: a sign-in never waits on the provider unless its `kid` is unknown. It
//! never logs a token.

mod keyset;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::AuthSettings;
pub use keyset::MIN_FETCH_INTERVAL;
use keyset::{KeySet, Lookup};

/// Seconds of clock skew allowed on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 30;

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
    /// The issuer, as the token has it (a string per RFC 7519; jsonwebtoken also
    /// takes an array, which `auth.jwt_issuer` refuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<serde_json::Value>,
}

/// Whether a user with this `rooms` claim may join `room` (`None`: no claim).
pub fn claim_allows_room(claim: Option<&[String]>, room: &str) -> bool {
    claim.is_none_or(|rooms| rooms.iter().any(|r| r == "*" || r == room))
}

/// Why a token was refused; the text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token sign-in is not configured on this node")]
    NotConfigured,
    /// `alg: none`, an algorithm the node does not verify, or one it is not configured
    /// for (HS256 without a secret, RS256/ES256 without a key set).
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("token has no kid (key id) for its provider key")]
    NoKid,
    /// Not in the key set, after a fetch or within a second of the last one.
    #[error("token key unknown: its kid is not in the provider's key set")]
    UnknownKid,
    /// The `kid` names a key of another algorithm family.
    #[error("token algorithm does not match its key")]
    KeyMismatch,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token audience not accepted")]
    Audience,
    #[error("token issuer not accepted")]
    Issuer,
    #[error("token signature invalid")]
    Signature,
    #[error("token invalid")]
    Invalid,
}

impl From<jsonwebtoken::errors::Error> for TokenError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::ImmatureSignature => TokenError::NotYetValid,
            ErrorKind::InvalidAudience => TokenError::Audience,
            ErrorKind::InvalidIssuer => TokenError::Issuer,
            ErrorKind::MissingRequiredClaim(claim) if claim == "aud" => TokenError::Audience,
            ErrorKind::MissingRequiredClaim(claim) if claim == "iss" => TokenError::Issuer,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
            ErrorKind::InvalidSignature => TokenError::Signature,
            _ => TokenError::Invalid,
        }
    }
}

/// Verifies host-app tokens.
pub struct JwtVerifier {
    /// HS256 with `auth.jwt_secret`; `None`: HS256 tokens refused.
    secret: Option<DecodingKey>,
    /// The provider's keys (`auth.jwks_url`); `None`: RS256/ES256 tokens refused.
    keys: Option<Arc<KeySet>>,
    hs256: Validation,
    rs256: Validation,
    es256: Validation,
    /// `auth.jwt_issuer`; empty = not checked.
    issuer: String,
}

impl JwtVerifier {
    /// A verifier for `auth`'s settings; the key set, if any, is empty until
    /// [`JwtVerifier::start`] fetches it. `http` is the node's outbound client.
    pub fn new(auth: &AuthSettings, http: reqwest::Client) -> JwtVerifier {
        let secret = &auth.jwt_secret;
        JwtVerifier {
            secret: (!secret.is_empty()).then(|| DecodingKey::from_secret(secret.as_bytes())),
            keys: (!auth.jwks_url.is_empty())
                .then(|| Arc::new(KeySet::new(auth.jwks_url.clone(), http))),
            hs256: validation(Algorithm::HS256, auth),
            rs256: validation(Algorithm::RS256, auth),
            es256: validation(Algorithm::ES256, auth),
            issuer: auth.jwt_issuer.clone(),
        }
    }

    /// Fetches the key set (if one is configured) and refreshes it every
    /// `auth.jwks_refresh_secs` in a task on `tracker` that ends when `stop` is
    /// cancelled. A set that cannot be fetched is logged and counted; the node starts
    /// all the same.
    pub async fn start(&self, auth: &AuthSettings, tracker: &TaskTracker, stop: CancellationToken) {
        let Some(keys) = &self.keys else {
            return;
        };
        keys.refresh().await;
        if keys.len() > 0 {
            tracing::info!(keys = keys.len(), "identity provider key set loaded");
        }
        let every = Duration::from_secs(auth.jwks_refresh_secs);
        tracker.spawn(keyset::refresh_until(keys.clone(), every, stop));
    }

    /// The claims of a valid token, or why it was refused (for the client).
    pub async fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if self.secret.is_none() && self.keys.is_none() {
            return Err(TokenError::NotConfigured);
        }
        // An unknown or `none` algorithm fails here, before any key is chosen.
        let header = decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_) | ErrorKind::InvalidAlgorithmName => TokenError::Algorithm,
            _ => TokenError::Invalid,
        })?;
        let data = match header.alg {
            Algorithm::HS256 => {
                let key = self.secret.as_ref().ok_or(TokenError::Algorithm)?;
                decode::<Claims>(token, key, &self.hs256)?
            }
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                let keys = self.keys.as_ref().ok_or(TokenError::Algorithm)?;
                let kid = header.kid.as_deref().ok_or(TokenError::NoKid)?;
                let key = provider_key(keys, kid, alg).await?;
                let validation = if alg == Algorithm::RS256 {
                    &self.rs256
                } else {
                    &self.es256
                };
                decode::<Claims>(token, &key, validation)?
            }
            _ => return Err(TokenError::Algorithm),
        };
        // "iss must equal it": one string, not a list that contains it.
        if !self.issuer.is_empty()
            && data.claims.iss.as_ref().and_then(|i| i.as_str()) != Some(&self.issuer)
        {
            return Err(TokenError::Issuer);
        }
        Ok(data.claims)
    }
}

/// The provider key of `kid` for `alg`, fetching the set once when `kid` is unknown
/// (unless a fetch started less than a second ago).
async fn provider_key(
    keys: &KeySet,
    kid: &str,
    alg: Algorithm,
) -> Result<Arc<DecodingKey>, TokenError> {
    match keys.lookup(kid, alg) {
        Lookup::Found(key) => return Ok(key),
        Lookup::WrongAlgorithm => return Err(TokenError::KeyMismatch),
        Lookup::Unknown => {}
    }
    if !keys.fetch_for_unknown_kid().await {
        return Err(TokenError::UnknownKid);
    }
    match keys.lookup(kid, alg) {
        Lookup::Found(key) => Ok(key),
        Lookup::WrongAlgorithm => Err(TokenError::KeyMismatch),
        Lookup::Unknown => Err(TokenError::UnknownKid),
    }
}

/// The checks of one algorithm: only `alg` itself, `exp` and `sub` required, `nbf`
/// checked when present, `aud` and `iss` only when configured (then required).
fn validation(alg: Algorithm, auth: &AuthSettings) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if auth.jwt_audience.is_empty() {
        // jsonwebtoken refuses any `aud` when no audience is set; the protocol
        // accepts it unchecked (every provider's token carries one).
        validation.validate_aud = false;
    } else {
        validation.set_audience(&[&auth.jwt_audience]);
        required.push("aud");
    }
    if !auth.jwt_issuer.is_empty() {
        validation.set_issuer(&[&auth.jwt_issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// Signs a token for `user` valid for `ttl_secs` (the `chat-gateway token` command).
pub fn issue_token(secret: &str, user: &str, name: &str, ttl_secs: u64) -> anyhow::Result<String> {
    anyhow::ensure!(
        !secret.is_empty(),
        "auth.jwt_secret (CHAT_AUTH__JWT_SECRET) is not set"
    );
    anyhow::ensure!(
        chat_protocol::valid_user_id(user),
        "user id must be {}",
        chat_protocol::USER_ID_RULE
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = Claims {
        sub: user.to_string(),
        name: Some(name.to_string()),
        exp: now + ttl_secs,
        iat: Some(now),
        rooms: None,
        iss: None,
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

    const SECRET: &str = "s3cret-s3cret-s3cret-s3cret-s3cret";

    fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            jwt_secret: secret.into(),
            ..AuthSettings::default()
        }
    }

    fn verifier(auth: &AuthSettings) -> JwtVerifier {
        JwtVerifier::new(auth, crate::outbound::client())
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn issued_tokens_verify_and_others_do_not() {
        let token = issue_token(SECRET, "u1", "User One", 60).unwrap();
        let claims = verifier(&settings(SECRET)).verify(&token).await.unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.name.as_deref(), Some("User One"));
        let other = verifier(&settings("other")).verify(&token).await;
        assert_eq!(other.unwrap_err(), TokenError::Signature);
        let none = verifier(&settings("")).verify(&token).await;
        assert_eq!(none.unwrap_err(), TokenError::NotConfigured);
    }

    #[tokio::test]
    async fn refuses_alg_none() {
        // {"alg":"none","typ":"JWT"} . {"sub":"u1","exp":9999999999} . (no signature)
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSIsImV4cCI6OTk5OTk5OTk5OX0.";
        let refused = verifier(&settings(SECRET)).verify(token).await;
        assert_eq!(refused.unwrap_err(), TokenError::Algorithm);
    }

    #[tokio::test]
    async fn aud_and_iss_are_checked_only_when_configured() {
        let token = hs256(serde_json::json!({
            "sub": "u1", "exp": now() + 60, "aud": ["api", "chat"], "iss": "https://idp/",
        }));
        let bare = hs256(serde_json::json!({"sub": "u1", "exp": now() + 60}));
        let open = verifier(&settings(SECRET));
        assert!(open.verify(&token).await.is_ok(), "aud/iss unchecked");
        assert!(open.verify(&bare).await.is_ok());

        let mut auth = settings(SECRET);
        auth.jwt_audience = "chat".into();
        auth.jwt_issuer = "https://idp/".into();
        let strict = verifier(&auth);
        assert!(
            strict.verify(&token).await.is_ok(),
            "aud array contains chat"
        );
        assert!(strict.verify(&bare).await.is_err(), "aud and iss required");
        let audience_only = AuthSettings {
            jwt_audience: "chat".into(),
            ..settings(SECRET)
        };
        assert_eq!(
            verifier(&audience_only).verify(&bare).await.unwrap_err(),
            TokenError::Audience,
            "aud required once configured"
        );
        auth.jwt_audience = "billing".into();
        assert_eq!(
            verifier(&auth).verify(&token).await.unwrap_err(),
            TokenError::Audience
        );
        auth.jwt_audience = "chat".into();
        auth.jwt_issuer = "https://other/".into();
        assert_eq!(
            verifier(&auth).verify(&token).await.unwrap_err(),
            TokenError::Issuer
        );
        auth.jwt_audience = String::new();
        auth.jwt_issuer = "https://idp/".into();
        let listed = hs256(serde_json::json!({
            "sub": "u1", "exp": now() + 60, "iss": ["https://idp/", "https://other/"],
        }));
        assert_eq!(
            verifier(&auth).verify(&listed).await.unwrap_err(),
            TokenError::Issuer,
            "iss must equal, not list, the issuer"
        );
        assert_eq!(
            verifier(&auth).verify(&bare).await.unwrap_err(),
            TokenError::Issuer,
            "iss required once configured"
        );
    }

    #[tokio::test]
    async fn nbf_is_checked_with_leeway() {
        let v = verifier(&settings(SECRET));
        let later = hs256(serde_json::json!({"sub": "u1", "exp": now() + 600, "nbf": now() + 120}));
        assert_eq!(v.verify(&later).await.unwrap_err(), TokenError::NotYetValid);
        let skewed = hs256(serde_json::json!({"sub": "u1", "exp": now() + 600, "nbf": now() + 10}));
        assert!(v.verify(&skewed).await.is_ok(), "within the leeway");
    }

    #[tokio::test]
    async fn provider_algorithms_need_a_key_set_and_hs256_a_secret() {
        let pem = include_bytes!("../tests/keys/rsa-1.pem");
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("k1".into());
        let claims = serde_json::json!({"sub": "u1", "exp": now() + 60});
        let rs = encode(&header, &claims, &EncodingKey::from_rsa_pem(pem).unwrap()).unwrap();
        assert_eq!(
            verifier(&settings(SECRET)).verify(&rs).await.unwrap_err(),
            TokenError::Algorithm,
            "RS256 without a key set"
        );
        let keys_only = AuthSettings {
            // Nothing listens on port 9: the set stays empty.
            jwks_url: "http://127.0.0.1:9/jwks".into(),
            ..AuthSettings::default()
        };
        let v = verifier(&keys_only);
        let hs = hs256(claims.clone());
        assert_eq!(v.verify(&hs).await.unwrap_err(), TokenError::Algorithm);
        assert_eq!(v.verify(&rs).await.unwrap_err(), TokenError::UnknownKid);
        let hs384 = encode(
            &Header::new(Algorithm::HS384),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            verifier(&settings(SECRET))
                .verify(&hs384)
                .await
                .unwrap_err(),
            TokenError::Algorithm
        );
    }
}
