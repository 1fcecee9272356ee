//! Sign-in: sessions resume on any node, and every bad, expired, forged or missing
//! credential — and every request before `hello` — gets `unauthorized` and close 4001.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::Algorithm;

/// A guest's session gives the same user on the other node (Redis) or on the same
/// node (memory), with `resumed: true`; an unknown session is refused.
async fn session_resumes(engine: Engine) {
    let cluster = Cluster::start(engine, if engine == Engine::Redis { 2 } else { 1 }, &[]);
    let alice = guest(&cluster.url(0), "alice").await;
    let w = alice.welcome().clone();
    assert!(!w.resumed, "a new guest is not resumed");
    assert!(
        w.session.len() >= 22,
        "session too short for 128 bits: {:?}",
        w.session
    );
    assert_eq!(w.node, "gw-a");
    alice.close().await;

    let other = cluster.other(1);
    let again = Client::connect(
        &cluster.url(other),
        Credential::Session(w.session.clone()),
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("resume on node {other}: {e}\n{}", cluster.logs()));
    let w2 = again.welcome();
    assert_eq!(w2.user, w.user, "same user id and name after resume");
    assert!(w2.resumed, "resumed must be true for a session");
    if engine == Engine::Redis {
        assert_eq!(w2.node, "gw-b");
    }
    // Two connections of one user at once are allowed.
    let third = Client::connect(
        &cluster.url(0),
        Credential::Session(w.session.clone()),
        None,
    )
    .await
    .expect("second concurrent connection");
    assert_eq!(third.user_id(), w.user.id);

    assert_refused(
        &cluster.url(0),
        Credential::Session("unknown-session-0123456789abcdefghij".into()),
        "unknown session",
    )
    .await;
    assert_refused(
        &cluster.url(0),
        Credential::Session(String::new()),
        "empty session",
    )
    .await;
}

both_engines!(session_resumes);

/// With a 1 s session TTL, a session unused for longer is refused.
async fn session_expires(engine: Engine) {
    let cluster = Cluster::single(engine, &[("CHAT_AUTH__SESSION_TTL_SECS", "1")]);
    let alice = guest(&cluster.url(0), "alice").await;
    let session = alice.session().to_string();
    alice.close().await;
    // Any successful resume slides the expiry, so the only thing to wait for here is
    // time itself: poll the clock, then try exactly once.
    let idle_since = Instant::now();
    eventually(
        "the 1 s session TTL to pass",
        Duration::from_secs(10),
        || async { (idle_since.elapsed() > Duration::from_millis(2500)).then_some(()) },
    )
    .await;
    assert_refused(
        &cluster.url(0),
        Credential::Session(session),
        "expired session",
    )
    .await;
}

both_engines!(session_expires);

/// `auth.session_max_age_secs` (protocol 1.2): a session used a moment ago is still
/// refused once older than the max age, whatever its sliding expiry (7 days here).
async fn session_max_age(engine: Engine) {
    let cluster = Cluster::single(engine, &[("CHAT_AUTH__SESSION_MAX_AGE_SECS", "2")]);
    let url = cluster.url(0);
    let created = Instant::now();
    let alice = guest(&url, "alice").await;
    let session = alice.session().to_string();
    alice.close().await;
    let wait_until = |ms: u64| async move {
        eventually("the clock", Duration::from_secs(10), || async {
            (created.elapsed() > Duration::from_millis(ms)).then_some(())
        })
        .await;
    };
    wait_until(1000).await;
    let used = Client::connect(&url, Credential::Session(session.clone()), None)
        .await
        .expect("a 1 s old session resumes");
    used.close().await;
    wait_until(2600).await;
    assert_refused(
        &url,
        Credential::Session(session),
        "session past its max age",
    )
    .await;
}

both_engines!(session_max_age);

/// JWTs: a valid HS256 token signs the `sub` in; forged, expired, unsigned and
/// other-algorithm tokens are refused.
async fn jwt_tokens(engine: Engine) {
    let cluster = Cluster::single(engine, &[]);
    let url = cluster.url(0);
    let sub = format!("ext-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);

    let token = jwt(&sub, "Ext User", 3600, Algorithm::HS256, JWT_SECRET);
    let c = Client::connect(&url, Credential::Token(token.clone()), None)
        .await
        .unwrap_or_else(|e| panic!("valid token refused: {e}\n{}", cluster.logs()));
    assert_eq!(c.user_id(), sub);
    assert_eq!(c.welcome().user.name, "Ext User");
    assert!(
        !c.welcome().resumed,
        "first sign-in of a new user is not resumed"
    );
    // The session issued for a token works like any other.
    let session = c.session().to_string();
    c.close().await;
    let again = Client::connect(&url, Credential::Token(token), None)
        .await
        .expect("token again");
    assert!(
        again.welcome().resumed,
        "a token for a known user is resumed"
    );
    assert_eq!(again.user_id(), sub);
    let by_session = Client::connect(&url, Credential::Session(session), None)
        .await
        .expect("session issued for a token");
    assert_eq!(by_session.user_id(), sub);

    let wrong_key = jwt(
        &sub,
        "Ext User",
        3600,
        Algorithm::HS256,
        "some-other-secret-entirely",
    );
    assert_refused(&url, Credential::Token(wrong_key), "bad signature").await;

    // A valid signature over other claims: swap the payload of a genuine token.
    let genuine = jwt(&sub, "Ext User", 3600, Algorithm::HS256, JWT_SECRET);
    let parts: Vec<&str> = genuine.split('.').collect();
    let forged_claims =
        serde_json::json!({"sub": "admin", "name": "Admin", "exp": now_secs() + 3600});
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(forged_claims.to_string().as_bytes()),
        parts[2]
    );
    assert_refused(&url, Credential::Token(tampered), "tampered payload").await;

    let expired = jwt(&sub, "Ext User", -3600, Algorithm::HS256, JWT_SECRET);
    assert_refused(&url, Credential::Token(expired), "expired token").await;

    assert_refused(
        &url,
        Credential::Token(alg_none_token(&sub, "Ext User")),
        "alg none",
    )
    .await;

    let hs384 = jwt(&sub, "Ext User", 3600, Algorithm::HS384, JWT_SECRET);
    assert_refused(
        &url,
        Credential::Token(hs384),
        "HS384 when only HS256 is configured",
    )
    .await;

    // `exp` is required.
    let claims = serde_json::json!({"sub": sub, "name": "Ext User"});
    let no_exp = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("sign");
    assert_refused(&url, Credential::Token(no_exp), "token without exp").await;

    assert_refused(&url, Credential::Token("not.a.jwt".into()), "garbage token").await;
}

both_engines!(jwt_tokens);

/// Every known request type before `hello`, and a `hello` with no or several
/// credentials: `error` `unauthorized` (with the request's ref), then close 4001.
async fn requests_before_hello(engine: Engine) {
    let cluster = Cluster::single(engine, &[("CHAT_SERVER__HELLO_TIMEOUT_SECS", "2")]);
    let url = cluster.url(0);
    let frames = [
        r#"{"type":"ping","ref":"b1"}"#,
        r#"{"type":"send","ref":"b2","to":"someone","body":"hi"}"#,
        r#"{"type":"history","ref":"b3","with":"someone"}"#,
        r#"{"type":"conversations","ref":"b4"}"#,
        r#"{"type":"users","ref":"b5","query":"a"}"#,
        r#"{"type":"watch","ref":"b6","users":["someone"]}"#,
        r#"{"type":"read","ref":"b7","with":"someone","up_to":"1-0"}"#,
        r#"{"type":"typing","ref":"b8","to":"someone"}"#,
        r#"{"type":"hello","ref":"b9"}"#,
        r#"{"type":"hello","ref":"b10","username":"alice","session":"abc"}"#,
        r#"{"type":"hello","ref":"b11","username":"alice","token":"a.b.c"}"#,
    ];
    for text in frames {
        let mut conn = raw(&url).await;
        conn.send_text(text).await.expect("send");
        match conn.next_frame_timeout(WAIT).await {
            Ok(Some(ServerFrame::Error { code, .. })) => {
                assert_eq!(code, ErrorCode::Unauthorized, "error code for {text}");
            }
            other => panic!("{text}: expected an unauthorized error, got {other:?}"),
        }
        let code = conn.wait_closed(WAIT).await;
        assert_eq!(
            code,
            Ok(Some(close::UNAUTHORIZED)),
            "close code after {text}"
        );
    }

    // An invalid guest name is fixable: bad_request, and the connection stays open.
    let mut conn = raw(&url).await;
    for bad in ["", "   ", "a<b>", &"x".repeat(33)] {
        let hello = serde_json::json!({"type":"hello","ref":"g1","username": bad}).to_string();
        conn.send_text(&hello).await.expect("send");
        match conn.next_frame_timeout(WAIT).await {
            Ok(Some(ServerFrame::Error { code, .. })) => {
                assert_eq!(code, ErrorCode::BadRequest, "guest name {bad:?}");
            }
            other => panic!("guest name {bad:?}: expected bad_request, got {other:?}"),
        }
    }
    let name = unique_name("ok");
    let hello = serde_json::json!({"type":"hello","username": format!("  {name} ")}).to_string();
    conn.send_text(&hello).await.expect("send");
    match conn.next_frame_timeout(WAIT).await {
        Ok(Some(ServerFrame::Welcome { user, .. })) => {
            assert_eq!(user.name, name, "name is trimmed");
        }
        other => panic!("valid hello after bad names: expected welcome, got {other:?}"),
    }

    // Silence: no hello within the (2 s) limit.
    let mut silent = raw(&url).await;
    match silent.next_frame_timeout(WAIT).await {
        Ok(Some(ServerFrame::Error { code, .. })) => assert_eq!(code, ErrorCode::Unauthorized),
        other => panic!("hello timeout: expected an unauthorized error, got {other:?}"),
    }
    assert_eq!(
        silent.wait_closed(WAIT).await,
        Ok(Some(close::UNAUTHORIZED)),
        "hello timeout close"
    );
}

both_engines!(requests_before_hello);

/// `chat-gateway token --user u1 --name U` prints a token the gateway accepts.
#[tokio::test]
async fn token_subcommand_output_is_accepted() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chat-gateway"))
        .args(["token", "--user", "u1", "--name", "U"])
        .env("CHAT_AUTH__JWT_SECRET", JWT_SECRET)
        .output()
        .expect("run chat-gateway token");
    assert!(
        out.status.success(),
        "token command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token:?}");

    let cluster = Cluster::single(Engine::Memory, &[]);
    let c = Client::connect(&cluster.url(0), Credential::Token(token), None)
        .await
        .unwrap_or_else(|e| panic!("token from the subcommand refused: {e}"));
    assert_eq!(c.user_id(), "u1");
    assert_eq!(c.welcome().user.name, "U");
}

/// `logout` (protocol 1.2): answered `logged_out` with its ref, then close 1000; the
/// session is refused afterwards on the other node too (`unauthorized`, 4001), while
/// the same user's other session still resumes.
async fn logout_ends_one_session_everywhere(engine: Engine) {
    let cluster = Cluster::start(engine, if engine == Engine::Redis { 2 } else { 1 }, &[]);
    let (url_a, url_b) = (cluster.url(0), cluster.url(cluster.other(1)));
    let sub = format!("out-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let token = jwt(&sub, "Out", 3600, Algorithm::HS256, JWT_SECRET);
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let c = Client::connect(&url_a, Credential::Token(token.clone()), None)
            .await
            .expect("token sign-in");
        sessions.push(c.welcome().session.clone());
        c.close().await;
    }
    let (ended, kept) = (sessions[0].clone(), sessions[1].clone());

    let mut conn = raw(&url_a).await;
    conn.send_text(&format!(r#"{{"type":"hello","session":"{ended}"}}"#))
        .await
        .expect("hello");
    match conn.next_frame_timeout(WAIT).await {
        Ok(Some(ServerFrame::Welcome { .. })) => {}
        other => panic!("expected welcome, got {other:?}"),
    }
    conn.send_text(r#"{"type":"logout","ref":"bye"}"#)
        .await
        .expect("logout");
    let reply = loop {
        match conn.next_frame_timeout(WAIT).await {
            Ok(Some(ServerFrame::LoggedOut { reference })) => break reference,
            Ok(Some(_)) => continue, // presence and the like before it
            other => panic!("expected logged_out, got {other:?}"),
        }
    };
    assert_eq!(reply.as_deref(), Some("bye"));
    assert_eq!(conn.wait_closed(WAIT).await, Ok(Some(close::NORMAL)));

    assert_refused(
        &url_b,
        Credential::Session(ended.clone()),
        "logged-out session",
    )
    .await;
    assert_refused(&url_a, Credential::Session(ended), "logged-out session").await;
    let again = Client::connect(&url_b, Credential::Session(kept), None)
        .await
        .expect("the user's other session lives on");
    assert_eq!(again.user_id(), sub);
}

both_engines!(logout_ends_one_session_everywhere);
