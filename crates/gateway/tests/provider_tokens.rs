//! Tokens from the host's identity provider (protocol 1.2): RS256 and ES256 verified
//! with a JSON Web Key Set the node fetches over HTTP from a server this test runs on
//! 127.0.0.1 (its keys changeable, its fetches counted), `aud`/`iss` checked only when
//! configured, `nbf`, a key rotation without a restart, key confusion refused, a
//! flood of unknown `kid`s costing at most one fetch a second, a node whose key set is
//! unreachable, and provider subjects (`auth0|…`) as user ids end to end.
//!
//! The provider (keys and key-set server) is `provider/mod.rs`.

mod common;
mod provider;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use provider::{claims, Provider, E1, R1, R2, RSA_1_PUBLIC};

/// One node on `engine` verifying tokens with `provider`'s key set (and, as every
/// test node, HS256 with [`JWT_SECRET`]), with `extra` settings.
fn node(engine: Engine, provider: &Provider, extra: &[(&str, &str)]) -> Cluster {
    let url = provider.url();
    let mut env = vec![("CHAT_AUTH__JWKS_URL", url.as_str())];
    env.extend_from_slice(extra);
    Cluster::single(engine, &env)
}

async fn sign_in(url: &str, token: String, what: &str) -> Client {
    Client::connect(url, Credential::Token(token), None)
        .await
        .unwrap_or_else(|e| panic!("{what}: token sign-in refused: {e}"))
}

async fn refused(url: &str, token: String, what: &str) {
    assert_refused(url, Credential::Token(token), what).await;
}

async fn metrics_text(addr: SocketAddr) -> String {
    let (status, body) = http(addr, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "/metrics answers");
    body
}

/// RS256 and ES256 tokens from the key set sign in (a provider's `aud` and `iss`
/// accepted unchecked), their `auth0|…`-style subjects are user ids that messages
/// reach, HS256 works beside them, `nbf` in the future and `exp` in the past are
/// refused, and none of it fetches the set again. On Redis, a key-set sign-in costs
/// the same Redis commands as an HS256 one.
async fn provider_tokens_sign_in(engine: Engine) {
    let provider = Provider::start(&[R1, E1]);
    let cluster = node(engine, &provider, &[]);
    let url = cluster.url(0);
    assert_eq!(provider.fetches(), 1, "the set is fetched once at start");

    let provider_claims = serde_json::json!({
        "aud": ["https://api.example", "https://idp.example/userinfo"],
        "iss": "https://idp.example/",
    });
    let mut rs = sign_in(
        &url,
        R1.sign(claims("auth0|64f1a2b3", provider_claims.clone())),
        "RS256",
    )
    .await;
    assert_eq!(rs.user_id(), "auth0|64f1a2b3");
    assert_eq!(rs.welcome().user.name, "Name of auth0|64f1a2b3");
    let mut es = sign_in(
        &url,
        E1.sign(claims("google-oauth2|1234", provider_claims)),
        "ES256",
    )
    .await;
    assert_eq!(es.user_id(), "google-oauth2|1234");

    // The new ids work wherever ids go: a message, and its history.
    let sent = rs
        .send("google-oauth2|1234", "hello from auth0")
        .await
        .expect("send");
    let got = expect_from(&mut es, "auth0|64f1a2b3", "the message from the RS256 user").await;
    assert_eq!(got.id, sent.id);
    let history = es.full_history("auth0|64f1a2b3").await.expect("history");
    assert_eq!(history.len(), 1);
    // And through the server API, `|` percent-encoded in paths.
    let (status, body) = api(
        cluster.addr(0),
        "POST",
        "/api/v1/messages",
        Some(API_KEY),
        Some(serde_json::json!({
            "from": "google-oauth2|1234", "to": "auth0|64f1a2b3", "body": "via the API",
        })),
    )
    .await;
    assert_eq!(status, 201, "API send between provider ids: {body}");
    expect_from(&mut rs, "google-oauth2|1234", "the API message").await;
    let (status, body) = api(
        cluster.addr(0),
        "GET",
        "/api/v1/conversations/auth0%7C64f1a2b3/google-oauth2%7C1234/messages",
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(2), "{body}");

    let hs = jwt("hs-user", "HS User", 3600, Algorithm::HS256, JWT_SECRET);
    sign_in(&url, hs, "HS256 beside a key set").await;

    let later = claims("u-later", serde_json::json!({"nbf": now_secs() + 300}));
    refused(&url, R1.sign(later), "nbf five minutes ahead").await;
    let skewed = claims("u-skewed", serde_json::json!({"nbf": now_secs() + 5}));
    sign_in(&url, E1.sign(skewed), "nbf within the 30 s leeway").await;
    let expired = claims("u-expired", serde_json::json!({"exp": now_secs() - 120}));
    refused(&url, E1.sign(expired), "expired ES256").await;
    assert_eq!(
        provider.fetches(),
        1,
        "sign-ins with known kids never fetch the set"
    );

    if let Some(redis) = &cluster.redis {
        let hs = sign_in_cost(redis, &url, |sub| {
            jwt(sub, sub, 3600, Algorithm::HS256, JWT_SECRET)
        })
        .await;
        let rs = sign_in_cost(redis, &url, |sub| {
            R1.sign(claims(sub, serde_json::json!({})))
        })
        .await;
        eprintln!("Redis commands of a first sign-in: HS256 {hs:?}, RS256 {rs:?}");
        assert_eq!(rs, hs, "a key-set sign-in costs what an HS256 one does");
    }
}
both_engines!(provider_tokens_sign_in);

/// The Redis commands (by name, `INFO` left out) that one sign-in of a new user
/// costs, counted from a quiet server until it is quiet again: the cheapest of three
/// tries, so a heartbeat landing in one try does not count.
async fn sign_in_cost(
    redis: &RedisServer,
    url: &str,
    token: impl Fn(&str) -> String,
) -> BTreeMap<String, u64> {
    let mut best: Option<BTreeMap<String, u64>> = None;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let before = quiet_stats(redis).await;
        let sub = unique_name("cost");
        clients.push(sign_in(url, token(&sub), "measured sign-in").await);
        let after = quiet_stats(redis).await;
        let cost: BTreeMap<String, u64> = after
            .iter()
            .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
            .filter(|(name, n)| *n > 0 && name != "info")
            .collect();
        let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
        if best.as_ref().is_none_or(|b| total(&cost) < total(b)) {
            best = Some(cost);
        }
    }
    best.unwrap_or_default()
}

/// `INFO commandstats` once two reads 300 ms apart agree (besides `INFO` itself).
async fn quiet_stats(redis: &RedisServer) -> BTreeMap<String, u64> {
    let without_info = |mut m: BTreeMap<String, u64>| {
        m.remove("info");
        m
    };
    let mut last = without_info(redis.command_stats());
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = without_info(redis.command_stats());
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// With `auth.jwt_audience` and `auth.jwt_issuer` set, `aud` must contain the one and
/// `iss` equal the other, on every algorithm.
#[tokio::test]
async fn audience_and_issuer_when_configured() {
    let provider = Provider::start(&[R1, E1]);
    let cluster = node(
        Engine::Memory,
        &provider,
        &[
            ("CHAT_AUTH__JWT_AUDIENCE", "chat-cluster"),
            ("CHAT_AUTH__JWT_ISSUER", "https://idp.example/"),
        ],
    );
    let url = cluster.url(0);
    let good =
        |aud: serde_json::Value| serde_json::json!({"aud": aud, "iss": "https://idp.example/"});
    sign_in(
        &url,
        R1.sign(claims("a1", good("chat-cluster".into()))),
        "aud string",
    )
    .await;
    sign_in(
        &url,
        E1.sign(claims(
            "a2",
            good(serde_json::json!(["api", "chat-cluster"])),
        )),
        "aud array",
    )
    .await;
    refused(
        &url,
        R1.sign(claims("a3", good("billing".into()))),
        "another audience",
    )
    .await;
    refused(
        &url,
        R1.sign(claims("a4", good(serde_json::json!(["api", "billing"])))),
        "no audience of ours",
    )
    .await;
    refused(
        &url,
        R1.sign(claims(
            "a5",
            serde_json::json!({"iss": "https://idp.example/"}),
        )),
        "no aud",
    )
    .await;
    refused(
        &url,
        R1.sign(claims(
            "a6",
            serde_json::json!({"aud": "chat-cluster", "iss": "https://evil.example/"}),
        )),
        "another issuer",
    )
    .await;
    refused(
        &url,
        E1.sign(claims("a7", serde_json::json!({"aud": "chat-cluster"}))),
        "no iss",
    )
    .await;
    // HS256 tokens are held to the same checks.
    refused(
        &url,
        jwt("a8", "A8", 3600, Algorithm::HS256, JWT_SECRET),
        "HS256 without aud/iss",
    )
    .await;
}

/// The provider publishes a new key: a token naming it signs in without a restart,
/// through the fetch its unknown `kid` causes (the periodic refresh is 300 s away).
#[tokio::test]
async fn a_rotated_key_signs_in_without_a_restart() {
    let provider = Provider::start(&[R1]);
    let cluster = node(Engine::Memory, &provider, &[]);
    let url = cluster.url(0);
    sign_in(
        &url,
        R1.sign(claims("rot-1", serde_json::json!({}))),
        "the first key",
    )
    .await;

    provider.publish(&[R1, R2]);
    let fetches_before = provider.fetches();
    let token = R2.sign(claims("rot-2", serde_json::json!({})));
    // Within a second of the last fetch the unknown kid is refused at once; after it,
    // the token fetches the new set.
    let client = eventually("a token of the new key signs in", WAIT, || {
        let token = token.clone();
        let url = url.clone();
        async move {
            Client::connect(&url, Credential::Token(token), None)
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(client.user_id(), "rot-2");
    let fetched = provider.fetches() - fetches_before;
    assert!(
        (1..=2).contains(&fetched),
        "the rotation took {fetched} fetches\n{}",
        cluster.logs()
    );
    // The old key is dropped by the provider: known tokens keep working until the
    // node next fetches, and the new key keeps working after.
    provider.publish(&[R2]);
    sign_in(
        &url,
        R2.sign(claims("rot-3", serde_json::json!({}))),
        "the new key again",
    )
    .await;
}

/// The set is fetched again every `auth.jwks_refresh_secs` with no token asking,
/// and `/metrics` shows how many keys the node holds.
#[tokio::test]
async fn the_set_is_refreshed_periodically() {
    let provider = Provider::start(&[R1]);
    let cluster = node(
        Engine::Memory,
        &provider,
        &[("CHAT_AUTH__JWKS_REFRESH_SECS", "1")],
    );
    let addr = cluster.addr(0);
    assert_eq!(
        metric(&metrics_text(addr).await, "chat_jwks_keys"),
        Some(1.0)
    );
    provider.publish(&[R1, R2, E1]);
    eventually("the refresh brings three keys", WAIT, || async {
        (metric(&metrics_text(addr).await, "chat_jwks_keys") == Some(3.0)).then_some(())
    })
    .await;
    assert!(provider.fetches() >= 2);
    let text = metrics_text(addr).await;
    assert!(
        text.contains("chat_jwks_fetches_total{outcome=\"ok\"}"),
        "{text}"
    );
}

/// Key confusion and algorithm games are refused: an HS256 token signed with the
/// provider's public key as its HMAC secret (with or without the key's `kid`), an
/// RS256 token naming an EC key's `kid` and the reverse, algorithms the node does not
/// verify, `alg: none`, a provider algorithm without `kid`. None of them fetches.
#[tokio::test]
async fn key_confusion_is_refused() {
    let provider = Provider::start(&[R1, E1]);
    // Key set only, no HS256 secret: where a key chosen by kid alone would be used
    // for HMAC.
    let keys_only = node(Engine::Memory, &provider, &[("CHAT_AUTH__JWT_SECRET", "")]);
    // Both configured: the secret must be the only HMAC key.
    let both = node(Engine::Memory, &provider, &[]);
    let start_fetches = provider.fetches();

    let forged = |kid: Option<&str>| {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_string);
        let body = claims("victim", serde_json::json!({}));
        let mut tokens = Vec::new();
        for secret in [RSA_1_PUBLIC.to_vec(), R1.jwk_n()] {
            let key = EncodingKey::from_secret(&secret);
            tokens.push(jsonwebtoken::encode(&header, &body, &key).expect("sign"));
        }
        tokens
    };
    for cluster in [&keys_only, &both] {
        let url = cluster.url(0);
        for token in forged(Some(R1.kid)).into_iter().chain(forged(None)) {
            refused(&url, token, "HS256 signed with the provider's public key").await;
        }
        let body = || claims("victim", serde_json::json!({}));
        refused(
            &url,
            R1.sign_as(Algorithm::RS256, Some(E1.kid), body()),
            "RS256 naming an EC key",
        )
        .await;
        refused(
            &url,
            E1.sign_as(Algorithm::ES256, Some(R1.kid), body()),
            "ES256 naming an RSA key",
        )
        .await;
        refused(
            &url,
            R1.sign_as(Algorithm::RS384, Some(R1.kid), body()),
            "RS384",
        )
        .await;
        refused(
            &url,
            R1.sign_as(Algorithm::PS256, Some(R1.kid), body()),
            "PS256",
        )
        .await;
        refused(
            &url,
            R1.sign_as(Algorithm::RS256, None, body()),
            "RS256 without kid",
        )
        .await;
        let none = format!(
            "{}.{}.",
            b64url(format!(r#"{{"alg":"none","kid":"{}"}}"#, R1.kid).as_bytes()),
            b64url(body().to_string().as_bytes())
        );
        refused(&url, none, "alg none with a kid").await;
    }
    refused(
        &keys_only.url(0),
        jwt("hs", "HS", 3600, Algorithm::HS256, JWT_SECRET),
        "HS256 where no secret is configured",
    )
    .await;
    assert_eq!(
        provider.fetches(),
        start_fetches,
        "refusals with known kids fetch nothing"
    );
}

/// 50 tokens naming made-up `kid`s, all at once: every one is refused, and the
/// provider sees at most one fetch per second of the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_costs_one_fetch_a_second() {
    let provider = Provider::start(&[R1]);
    let cluster = node(Engine::Memory, &provider, &[]);
    let url = cluster.url(0);
    // Let the start fetch's second pass, so the flood may fetch at once.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = provider.fetches();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = url.clone();
        let kid = format!("made-up-{i}-{}", unique_name("kid"));
        let token = R2.sign_as(
            Algorithm::RS256,
            Some(&kid),
            claims("flood", serde_json::json!({})),
        );
        tasks.push(tokio::spawn(async move {
            assert_refused(
                &url,
                Credential::Token(token),
                "a token with an unknown kid",
            )
            .await;
        }));
    }
    for task in tasks {
        task.await.expect("flood task");
    }
    let elapsed = started.elapsed();
    let fetched = provider.fetches() - before;
    let allowed = 1 + elapsed.as_secs() as usize;
    eprintln!("50 unknown kids in {elapsed:?}: {fetched} fetches");
    assert!(fetched >= 1, "an unknown kid fetches the set");
    assert!(
        fetched <= allowed,
        "{fetched} fetches in {elapsed:?} (at most {allowed})"
    );
}

/// A node whose key set cannot be fetched starts, serves guests and HS256 tokens,
/// refuses provider tokens, and says so in its log and `/metrics`; once the set can
/// be fetched, a provider token signs in without a restart.
#[tokio::test]
async fn an_unreachable_key_set_does_not_stop_the_node() {
    let unreachable = format!("http://127.0.0.1:{}/jwks", chat_testkit::free_port());
    let cluster = Cluster::single(Engine::Memory, &[("CHAT_AUTH__JWKS_URL", &unreachable)]);
    let url = cluster.url(0);
    guest(&url, "guest").await;
    sign_in(
        &url,
        jwt("hs-ok", "HS", 3600, Algorithm::HS256, JWT_SECRET),
        "HS256",
    )
    .await;
    refused(
        &url,
        R1.sign(claims("p1", serde_json::json!({}))),
        "a provider token",
    )
    .await;
    let text = metrics_text(cluster.addr(0)).await;
    assert_eq!(metric(&text, "chat_jwks_keys"), Some(0.0), "{text}");
    let errors = text
        .lines()
        .find(|l| l.starts_with("chat_jwks_fetches_total{outcome=\"error\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok());
    assert!(errors.is_some_and(|n| n >= 1.0), "{text}");
    assert!(
        cluster
            .logs()
            .contains("cannot fetch the identity provider's key set"),
        "{}",
        cluster.logs()
    );

    // A provider that answers 503 at first, then recovers.
    let provider = Provider::start(&[R1]);
    provider.available.store(false, Ordering::SeqCst);
    let cluster = node(Engine::Memory, &provider, &[]);
    let url = cluster.url(0);
    let token = R1.sign(claims("p2", serde_json::json!({})));
    refused(&url, token.clone(), "before the set arrives").await;
    provider.available.store(true, Ordering::SeqCst);
    let client = eventually("the token signs in once the set arrives", WAIT, || {
        let (url, token) = (url.clone(), token.clone());
        async move {
            Client::connect(&url, Credential::Token(token), None)
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(client.user_id(), "p2");
}
