//! The identity provider's public keys (`auth.jwks_url`): fetched at start, again every
//! `auth.jwks_refresh_secs`, and at once when a token names a `kid` the node does not
//! hold — at most once a second, whatever the cause, so a flood of made-up `kid`s costs
//! the provider one request a second per node.
//!
//! A key is held under its `kid` *and* the one algorithm its type allows (an RSA key:
//! RS256; an EC P-256 key: ES256; a JWK `alg` naming anything else drops the key), and
//! looked up by both, so a token can never choose how a key is used (Centrifugo's
//! CVE-2026-49998 keyed its cache by `kid` alone). Symmetric (`oct`) keys in a set are
//! dropped: an HMAC secret never comes from the network. A failed fetch keeps the keys
//! held before it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio_util::sync::CancellationToken;

use crate::metric;

/// Least time between two fetches of the set, whatever asks for them.
pub const MIN_FETCH_INTERVAL: Duration = Duration::from_secs(1);
/// Largest key set body read, in bytes (providers publish a few kilobytes).
const MAX_SET_BYTES: usize = 256 * 1024;

/// The keys of one `kid`, by the algorithm each may verify.
type Keys = HashMap<(String, Algorithm), Arc<DecodingKey>>;

/// What a look-up found.
pub enum Lookup {
    Found(Arc<DecodingKey>),
    /// The `kid` is held, but for another algorithm: refused without a fetch.
    WrongAlgorithm,
    Unknown,
}

/// The provider's key set of one node.
pub struct KeySet {
    url: String,
    /// The node's one outbound client (`outbound.rs`).
    http: reqwest::Client,
    /// Replaced whole by each successful fetch; never held across an `.await`.
    keys: RwLock<Arc<Keys>>,
    /// When the last fetch started (any cause): the once-a-second gate.
    last_fetch: Mutex<Option<Instant>>,
}

impl KeySet {
    pub fn new(url: String, http: reqwest::Client) -> KeySet {
        KeySet {
            url,
            http,
            keys: RwLock::new(Arc::new(Keys::new())),
            last_fetch: Mutex::new(None),
        }
    }

    /// The key of `kid` for `alg`, from what the node holds (no fetch).
    pub fn lookup(&self, kid: &str, alg: Algorithm) -> Lookup {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(key) = keys.get(&(kid.to_string(), alg)) {
            Lookup::Found(key.clone())
        } else if keys.keys().any(|(k, _)| k == kid) {
            Lookup::WrongAlgorithm
        } else {
            Lookup::Unknown
        }
    }

    /// For a token naming a `kid` the node does not hold: fetches the set unless a
    /// fetch started less than [`MIN_FETCH_INTERVAL`] ago (then returns at once).
    /// Returns whether a fetch was made.
    pub async fn fetch_for_unknown_kid(&self) -> bool {
        if !self.claim_fetch() {
            return false;
        }
        self.fetch_claimed().await;
        true
    }

    /// Fetches the set now, unless a fetch started less than a second ago (the
    /// start and the periodic refresh).
    pub async fn refresh(&self) {
        if self.claim_fetch() {
            self.fetch_claimed().await;
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Takes the once-a-second slot: true when this caller may fetch now.
    fn claim_fetch(&self) -> bool {
        let mut last = self.last_fetch.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < MIN_FETCH_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }

    async fn fetch_claimed(&self) {
        match self.download().await {
            Ok(keys) => {
                let held = keys.len();
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
                metrics::gauge!(metric::JWKS_KEYS).set(held as f64);
                metrics::counter!(metric::JWKS_FETCHES, "outcome" => "ok").increment(1);
                if held == 0 {
                    tracing::warn!(
                        url = %self.url,
                        "the identity provider's key set has no usable key (RSA or EC P-256 with a kid)"
                    );
                } else {
                    tracing::debug!(keys = held, "key set fetched");
                }
            }
            Err(why) => {
                metrics::counter!(metric::JWKS_FETCHES, "outcome" => "error").increment(1);
                tracing::warn!(
                    url = %self.url,
                    error = %why,
                    keys_held = self.len(),
                    "cannot fetch the identity provider's key set; tokens signed with keys not held are refused"
                );
            }
        }
    }

    async fn download(&self) -> Result<Keys, String> {
        let mut response = self
            .http
            .get(&self.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP status {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| e.without_url().to_string())?
        {
            if body.len() + chunk.len() > MAX_SET_BYTES {
                return Err(format!("key set larger than {MAX_SET_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_set(&body)
    }
}

/// The usable keys of a JWK set document. Keys that cannot be used (no `kid`, a type
/// or algorithm the node does not verify, `use` other than `sig`) are skipped, so one
/// odd key does not cost the others.
pub fn parse_set(body: &[u8]) -> Result<Keys, String> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let doc: Document = serde_json::from_slice(body).map_err(|e| format!("not a JWK set: {e}"))?;
    let mut keys = Keys::new();
    for value in doc.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if let Some((kid, alg)) = usable(&jwk) {
            if let Ok(key) = DecodingKey::from_jwk(&jwk) {
                keys.insert((kid, alg), Arc::new(key));
            }
        }
    }
    Ok(keys)
}

/// The `kid` of a key and the one algorithm it may verify, or `None` to skip it.
fn usable(jwk: &Jwk) -> Option<(String, Algorithm)> {
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return None;
    }
    let declared = jwk.common.key_algorithm;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => match declared {
            None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
            Some(_) => return None,
        },
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => match declared
        {
            None | Some(KeyAlgorithm::ES256) => Algorithm::ES256,
            Some(_) => return None,
        },
        _ => return None,
    };
    Some((kid, alg))
}

/// Refreshes `set` every `every` until `stop` is cancelled.
pub async fn refresh_until(set: Arc<KeySet>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = set.refresh() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use jsonwebtoken::EncodingKey;

    /// The public JWK of a test key (tests/keys), as JSON with `kid` and `extra` fields.
    fn jwk(pem: &[u8], alg: Algorithm, kid: &str, extra: &[(&str, &str)]) -> String {
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(pem).unwrap(),
        };
        let mut value = serde_json::to_value(Jwk::from_encoding_key(&key, alg).unwrap()).unwrap();
        let fields = value.as_object_mut().unwrap();
        // `from_encoding_key` writes `alg`; providers often leave it out.
        fields.remove("alg");
        if !kid.is_empty() {
            fields.insert("kid".into(), kid.into());
        }
        for (name, v) in extra {
            fields.insert(name.to_string(), (*v).into());
        }
        value.to_string()
    }

    fn rsa(kid: &str, extra: &[(&str, &str)]) -> String {
        let pem = include_bytes!("../../tests/keys/rsa-1.pem");
        jwk(pem, Algorithm::RS256, kid, extra)
    }

    fn ec(kid: &str, extra: &[(&str, &str)]) -> String {
        let pem = include_bytes!("../../tests/keys/ec-1.pem");
        jwk(pem, Algorithm::ES256, kid, extra)
    }

    fn parse(keys: &[String]) -> Keys {
        parse_set(format!(r#"{{"keys":[{}]}}"#, keys.join(",")).as_bytes()).unwrap()
    }

    fn held(keys: &Keys) -> Vec<(String, Algorithm)> {
        let mut held: Vec<_> = keys.keys().cloned().collect();
        held.sort_by(|a, b| a.0.cmp(&b.0));
        held
    }

    #[test]
    fn each_key_verifies_only_its_family() {
        let keys = parse(&[rsa("r", &[]), ec("e", &[])]);
        assert_eq!(
            held(&keys),
            [
                ("e".into(), Algorithm::ES256),
                ("r".into(), Algorithm::RS256)
            ]
        );
    }

    #[test]
    fn a_declared_alg_is_honoured() {
        let keys = parse(&[
            rsa("rs", &[("alg", "RS256"), ("use", "sig")]),
            rsa("ps", &[("alg", "PS256")]),
            rsa("rs512", &[("alg", "RS512")]),
            ec("es-as-rs", &[("alg", "RS256")]),
            ec("es", &[("alg", "ES256")]),
            rsa("enc", &[("use", "enc")]),
        ]);
        assert_eq!(
            held(&keys),
            [
                ("es".into(), Algorithm::ES256),
                ("rs".into(), Algorithm::RS256)
            ]
        );
    }

    #[test]
    fn symmetric_keyless_and_other_curves_are_dropped() {
        let keys = parse(&[
            r#"{"kty":"oct","kid":"h","k":"c2VjcmV0","alg":"HS256"}"#.into(),
            rsa("", &[]),
            ec("p384", &[("crv", "P-384")]),
            r#"{"kty":"OKP","kid":"ed","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#.into(),
            r#"{"kty":"weird","kid":"w"}"#.into(),
            ec("ok", &[]),
        ]);
        assert_eq!(held(&keys), [("ok".into(), Algorithm::ES256)]);
    }

    #[test]
    fn a_document_that_is_not_a_set_is_an_error() {
        assert!(parse_set(b"<html>").is_err());
        assert!(parse_set(br#"{"kid":"x"}"#).is_err());
        assert!(parse_set(br#"{"keys":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn lookup_tells_a_wrong_algorithm_from_an_unknown_kid() {
        let set = KeySet::new("http://127.0.0.1:9/".into(), crate::outbound::client());
        *set.keys.write().unwrap() = Arc::new(parse(&[ec("e", &[])]));
        assert!(matches!(
            set.lookup("e", Algorithm::ES256),
            Lookup::Found(_)
        ));
        assert!(matches!(
            set.lookup("e", Algorithm::RS256),
            Lookup::WrongAlgorithm
        ));
        assert!(matches!(set.lookup("x", Algorithm::ES256), Lookup::Unknown));
    }

    #[tokio::test]
    async fn the_refresh_task_ends_on_shutdown() {
        let set = Arc::new(KeySet::new(
            "http://127.0.0.1:9/".into(),
            crate::outbound::client(),
        ));
        let stop = CancellationToken::new();
        let task = tokio::spawn(refresh_until(set, Duration::from_secs(300), stop.clone()));
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the refresh task ends once cancelled")
            .expect("the refresh task does not panic");
    }

    #[test]
    fn fetches_are_claimed_at_most_once_a_second() {
        let set = KeySet::new("http://127.0.0.1:9/".into(), crate::outbound::client());
        assert!(set.claim_fetch());
        assert!(!set.claim_fetch());
        *set.last_fetch.lock().unwrap() = Some(Instant::now() - MIN_FETCH_INTERVAL);
        assert!(set.claim_fetch());
        assert!(!set.claim_fetch());
    }
}
