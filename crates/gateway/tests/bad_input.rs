//! Bad input gets the documented `error` and the connection stays usable; binary and
//! oversized frames close it (1003, 1009). Other users on the node are unaffected,
//! and nothing invalid is ever stored.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;

const MAX_BODY: usize = 4000;
const MAX_FRAME: usize = 65536;

/// Carol and Dave chat until `stop`; returns how many round trips they made.
fn chatter(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut carol = guest(&url, "carol").await;
        let mut dave = guest(&url, "dave").await;
        let dave_id = dave.user_id().to_string();
        let carol_id = carol.user_id().to_string();
        let mut rounds = 0;
        while !stop.load(Ordering::Relaxed) || rounds < 3 {
            let m = carol
                .send(&dave_id, &format!("ping {rounds}"))
                .await
                .expect("carol → dave");
            assert_eq!(
                expect_from(&mut dave, &carol_id, "dave gets carol's message").await,
                m
            );
            let r = dave
                .send(&carol_id, &format!("pong {rounds}"))
                .await
                .expect("dave → carol");
            assert_eq!(
                expect_from(&mut carol, &dave_id, "carol gets dave's reply").await,
                r
            );
            rounds += 1;
        }
        rounds
    })
}

async fn bad_input(engine: Engine) {
    let cluster = Cluster::single(engine, NO_RATE_LIMIT);
    let url = cluster.url(0);
    let stop = Arc::new(AtomicBool::new(false));
    let others = chatter(url.clone(), stop.clone());

    let mut alice = guest(&url, "alice").await;
    let mut bob = guest(&url, "bob").await;
    let alice_id = alice.user_id().to_string();
    let bob_id = bob.user_id().to_string();
    assert_eq!(alice.welcome().limits.max_body, MAX_BODY);
    assert_eq!(alice.welcome().limits.max_frame, MAX_FRAME);

    let send = |r: &str, body: &str| {
        serde_json::json!({"type": "send", "ref": r, "to": bob_id, "body": body}).to_string()
    };
    let long_ref = "r".repeat(65);
    let cases: Vec<(String, Option<&str>, ErrorCode)> = vec![
        ("not json at all".into(), None, ErrorCode::BadRequest),
        ("[1,2,3]".into(), None, ErrorCode::BadRequest),
        (
            r#"{"type":"fly","ref":"x1"}"#.into(),
            Some("x1"),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"ref":"x2","to":"a"}"#.into(),
            Some("x2"),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":7,"ref":"x3"}"#.into(),
            Some("x3"),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"send","ref":"x4","body":"no recipient"}"#.into(),
            Some("x4"),
            ErrorCode::BadRequest,
        ),
        (
            format!(r#"{{"type":"send","ref":"x5","to":"{bob_id}"}}"#),
            Some("x5"),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"type":"history","ref":"x6"}"#.into(),
            Some("x6"),
            ErrorCode::BadRequest,
        ),
        (
            format!(r#"{{"type":"send","ref":"x7","to":"{bob_id}","body":42}}"#),
            Some("x7"),
            ErrorCode::BadRequest,
        ),
        (send("x8", ""), Some("x8"), ErrorCode::BadRequest),
        (send("x9", " \t\n\r  "), Some("x9"), ErrorCode::BadRequest),
        (
            send("x10", &"y".repeat(MAX_BODY + 1)),
            Some("x10"),
            ErrorCode::TooLarge,
        ),
        // Characters, not bytes: 4,001 two-byte characters are too many.
        (
            send("x11", &"é".repeat(MAX_BODY + 1)),
            Some("x11"),
            ErrorCode::TooLarge,
        ),
        (
            serde_json::json!({"type":"send","ref":"x12","to":alice_id,"body":"me"}).to_string(),
            Some("x12"),
            ErrorCode::BadRequest,
        ),
        (
            format!(r#"{{"type":"ping","ref":"{long_ref}"}}"#),
            None,
            ErrorCode::BadRequest,
        ),
    ];
    let mut valid = Vec::new();
    for (i, (text, want_ref, want_code)) in cases.iter().enumerate() {
        alice.send_text(text).await.expect("send bad frame");
        let what = format!("case {i}: {}", text.chars().take(80).collect::<String>());
        let (reference, code) = expect_error(&mut alice, &what).await;
        assert_eq!(code, *want_code, "{what}");
        if want_ref.is_some() {
            assert_eq!(
                reference.as_deref(),
                *want_ref,
                "{what}: the error carries the ref"
            );
        } else {
            assert_eq!(reference, None, "{what}: no ref to echo");
        }
        alice
            .ping()
            .await
            .unwrap_or_else(|e| panic!("{what}: connection unusable after: {e}"));
        if i == 4 {
            // Valid sends between the bad ones.
            valid.push(alice.send(&bob_id, "valid one").await.expect("valid send"));
        }
    }
    // Exactly max_body characters (two bytes each) is fine, and unknown fields are ignored.
    let exact = "é".repeat(MAX_BODY);
    valid.push(
        alice
            .send(&bob_id, &exact)
            .await
            .expect("body of exactly max_body chars"),
    );
    let padded = format!(
        r#"{{"type":"ping","ref":"pad","pad":"{}"}}"#,
        "p".repeat(MAX_FRAME - 200)
    );
    alice.send_text(&padded).await.expect("send padded ping");
    loop {
        match alice.next_event_timeout(WAIT).await {
            Ok(Some(ServerFrame::Pong { reference })) => {
                assert_eq!(reference.as_deref(), Some("pad"));
                break;
            }
            Ok(Some(ServerFrame::Message { .. })) => {}
            other => panic!("a frame just under max_frame: expected pong, got {other:?}"),
        }
    }

    // Binary frame: close 1003.
    let mut binary = Client::connect(&url, Credential::Session(alice.session().into()), None)
        .await
        .expect("second connection");
    binary
        .send_binary(b"\x00\x01binary")
        .await
        .expect("send binary");
    assert_eq!(
        binary.connection().wait_closed(WAIT).await,
        Ok(Some(close::UNSUPPORTED)),
        "binary frame"
    );

    // A frame over max_frame: close 1009.
    let mut big = Client::connect(&url, Credential::Session(alice.session().into()), None)
        .await
        .expect("third connection");
    let huge = serde_json::json!({"type":"send","ref":"big","to":bob_id,"body":"z".repeat(MAX_FRAME + 10)});
    // The server may close while the frame is still being written: a failed write is fine.
    let _ = big.send_text(&huge.to_string()).await;
    assert_eq!(
        big.connection().wait_closed(WAIT).await,
        Ok(Some(close::TOO_BIG)),
        "oversized frame"
    );

    // Alice's first connection is still fine, and Bob got only the valid messages.
    alice.ping().await.expect("alice still connected");
    for m in &valid {
        assert_eq!(&expect_message(&mut bob, "a valid message").await, m);
    }
    let (history, more) = bob.history(&alice_id, None, 100).await.expect("history");
    assert!(!more);
    assert_eq!(history, valid, "only the valid messages were stored");

    stop.store(true, Ordering::Relaxed);
    let rounds = others.await.expect("carol and dave chatted without errors");
    assert!(rounds >= 3, "carol and dave made {rounds} round trips");
}

both_engines!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    bad_input
);
