//! The identity provider of `provider_tokens.rs`: fixed test keys (`tests/keys`, made
//! once with openssl) that sign tokens and publish their public JWKs, and a key-set
//! HTTP server on 127.0.0.1 whose keys the test changes and whose fetches it counts.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use crate::common::now_secs;

pub(crate) const RSA_1: &[u8] = include_bytes!("../keys/rsa-1.pem");
pub(crate) const RSA_1_PUBLIC: &[u8] = include_bytes!("../keys/rsa-1.pub.pem");
pub(crate) const RSA_2: &[u8] = include_bytes!("../keys/rsa-2.pem");
pub(crate) const EC_1: &[u8] = include_bytes!("../keys/ec-1.pem");

/// A test key: its private half signs, its public JWK is published.
#[derive(Clone, Copy)]
pub(crate) struct TestKey {
    pub(crate) pem: &'static [u8],
    pub(crate) alg: Algorithm,
    pub(crate) kid: &'static str,
}

pub(crate) const R1: TestKey = TestKey {
    pem: RSA_1,
    alg: Algorithm::RS256,
    kid: "rsa-2026-01",
};
pub(crate) const R2: TestKey = TestKey {
    pem: RSA_2,
    alg: Algorithm::RS256,
    kid: "rsa-2026-02",
};
pub(crate) const E1: TestKey = TestKey {
    pem: EC_1,
    alg: Algorithm::ES256,
    kid: "ec-2026-01",
};

impl TestKey {
    pub(crate) fn encoding(&self) -> EncodingKey {
        match self.alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(self.pem).expect("EC test key"),
            _ => EncodingKey::from_rsa_pem(self.pem).expect("RSA test key"),
        }
    }

    /// The public JWK, as a provider publishes it (with `kid`, `use` and `alg`).
    pub(crate) fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.encoding(), self.alg).expect("jwk");
        jwk.common.key_id = Some(self.kid.to_string());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        jwk
    }

    /// A token signed with this key, naming its `kid`, with `claims`.
    pub(crate) fn sign(&self, claims: serde_json::Value) -> String {
        self.sign_as(self.alg, Some(self.kid), claims)
    }

    /// A token signed with this key but a header of the caller's choosing.
    pub(crate) fn sign_as(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
        claims: serde_json::Value,
    ) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, &claims, &self.encoding()).expect("sign")
    }
}

/// The usual claims: `sub`, `name`, `iat`, `exp` in an hour, plus `extra`.
pub(crate) fn claims(sub: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut claims = serde_json::json!({
        "sub": sub, "name": format!("Name of {sub}"),
        "iat": now_secs(), "exp": now_secs() + 3600,
    });
    if let (Some(all), Some(more)) = (claims.as_object_mut(), extra.as_object()) {
        all.extend(more.clone());
    }
    claims
}

pub(crate) fn set_of(keys: &[TestKey]) -> String {
    serde_json::to_string(&JwkSet {
        keys: keys.iter().map(TestKey::jwk).collect(),
    })
    .expect("jwk set json")
}

/// The identity provider's key-set endpoint: `GET /jwks` answers the current body (or
/// 503 while unavailable) and counts every request. It runs on its own thread and
/// runtime, so it answers while the test's thread is blocked starting a node.
pub(crate) struct Provider {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    /// While false, `GET /jwks` answers 503.
    pub(crate) available: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Provider {
    pub(crate) fn start(keys: &[TestKey]) -> Provider {
        let body = Arc::new(Mutex::new(set_of(keys)));
        let available = Arc::new(AtomicBool::new(true));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (b, a, f) = (body.clone(), available.clone(), fetches.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("provider runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind the provider");
                addr_tx
                    .send(listener.local_addr().expect("provider addr"))
                    .expect("send addr");
                let app = axum::Router::new().route(
                    "/jwks",
                    axum::routing::get(move || {
                        let (b, a, f) = (b.clone(), a.clone(), f.clone());
                        async move {
                            f.fetch_add(1, Ordering::SeqCst);
                            if !a.load(Ordering::SeqCst) {
                                return (
                                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                                    String::new(),
                                );
                            }
                            let body = b.lock().map(|b| b.clone()).unwrap_or_default();
                            (axum::http::StatusCode::OK, body)
                        }
                    }),
                );
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("provider listening");
        Provider {
            addr,
            body,
            available,
            fetches,
            _stop: stop_tx,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    pub(crate) fn publish(&self, keys: &[TestKey]) {
        *self.body.lock().expect("body") = set_of(keys);
    }

    pub(crate) fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl TestKey {
    /// The RSA modulus bytes as published (`n`), another guess at an HMAC secret.
    pub(crate) fn jwk_n(&self) -> Vec<u8> {
        match self.jwk().algorithm {
            jsonwebtoken::jwk::AlgorithmParameters::RSA(rsa) => rsa.n.into_bytes(),
            _ => Vec::new(),
        }
    }
}
