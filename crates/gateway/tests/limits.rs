//! Limits: the per-user send budget (token bucket shared by the user's connections on
//! a node; over it `rate_limited` and nothing stored; persistent abuse closes with
//! 4008), the per-user connection cap
//! (cluster-wide: `forbidden` then 4008), the `Origin` allow-list on the upgrade
//! (403), and `welcome.limits` echoing the configuration.

mod common;

use std::time::Duration;

use common::*;

const RATE: &[(&str, &str)] = &[
    ("CHAT_LIMITS__SEND_PER_SECOND", "2"),
    ("CHAT_LIMITS__SEND_BURST", "3"),
];

async fn rate_limit(engine: Engine) {
    let nodes = if engine == Engine::Redis { 2 } else { 1 };
    let cluster = Cluster::start(engine, nodes, RATE);
    let mut alice = guest(&cluster.url(0), "alice").await;
    let mut bob = guest(&cluster.url(cluster.other(1)), "bob").await;
    let alice_id = alice.user_id().to_string();
    let bob_id = bob.user_id().to_string();

    let limits = &alice.welcome().limits;
    assert_eq!(
        (limits.send_per_second, limits.send_burst),
        (2, 3),
        "welcome.limits echoes the configuration: {limits:?}"
    );

    let mut sent = Vec::new();
    for i in 0..3 {
        sent.push(
            alice
                .send(&bob_id, &format!("burst {i}"))
                .await
                .unwrap_or_else(|e| panic!("send {i} within the burst: {e}")),
        );
    }
    assert_code(
        alice.send(&bob_id, "one too many").await,
        &[ErrorCode::RateLimited],
        "the 4th immediate send",
    );
    // Refused sends are not stored (checked once the next one went through).
    // At 2/s one token is back after 0.5 s: waiting is the point here.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let after = alice
        .send(&bob_id, "after waiting")
        .await
        .expect("a send after the bucket refilled");
    sent.push(after);

    let (history, _) = bob.history(&alice_id, None, 100).await.expect("history");
    assert_eq!(history, sent, "the refused message was not stored");
    for m in &sent {
        assert_eq!(&expect_message(&mut bob, "bob's deliveries").await, m);
    }
    expect_no_frame(
        &mut bob,
        Duration::from_millis(200),
        "no extra delivery",
        |f| matches!(f, ServerFrame::Message { .. }),
    )
    .await;

    // The budget is per user (protocol 1.1): another connection of Alice's on the
    // same node shares it; on another node (Redis: two nodes) that node's own share.
    let mut alice2 = device(&cluster.url(cluster.other(1)), alice.session()).await;
    let _ = alice.send(&bob_id, "spends the refilled token").await;
    let from_second = alice2.send(&bob_id, "from a second connection").await;
    if engine == Engine::Redis {
        from_second.expect("another node enforces its own share");
    } else {
        assert_code(
            from_second,
            &[ErrorCode::RateLimited],
            "a second connection on the same node shares the budget",
        );
    }
}

both_engines!(rate_limit);

/// 50 refusals in a row close the connection with 4008.
async fn rate_limit_abuse(engine: Engine) {
    let cluster = Cluster::single(engine, RATE);
    let mut alice = guest(&cluster.url(0), "alice").await;
    let bob = guest(&cluster.url(0), "bob").await;
    let bob_id = bob.user_id().to_string();

    // Pipelined, so the bucket cannot refill meanwhile.
    for i in 0..80 {
        let frame = ClientFrame::Send {
            reference: Some(format!("s{i}")),
            to: bob_id.clone(),
            body: format!("flood {i}"),
            nonce: None,
        };
        if alice.send_frame(&frame).await.is_err() {
            break; // already closed
        }
    }
    let (mut acks, mut limited, mut other) = (0, 0, Vec::new());
    let code = loop {
        let frame = tokio::time::timeout(WAIT, alice.next_raw())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "not closed within {WAIT:?}: {acks} acks, {limited} rate_limited, {other:#?}"
                )
            });
        match frame {
            RawFrame::Text(text) => match serde_json::from_str::<ServerFrame>(&text) {
                Ok(ServerFrame::Ack { .. }) => acks += 1,
                Ok(ServerFrame::Error {
                    code: ErrorCode::RateLimited,
                    ..
                }) => limited += 1,
                Ok(ServerFrame::Message { .. }) => {}
                _ => other.push(text),
            },
            RawFrame::Close { code, .. } => break code,
            RawFrame::Ended(reason) => {
                panic!(
                    "ended without a close frame ({reason}); {acks} acks, {limited} rate_limited"
                )
            }
            RawFrame::Binary(_) => panic!("binary frame"),
        }
    };
    assert_eq!(
        code,
        Some(close::POLICY),
        "persistent abuse closes with 4008"
    );
    assert_eq!(acks, 3, "the burst went through");
    assert_eq!(limited, 50, "closed at the 50th refusal in a row");
    assert!(other.is_empty(), "unexpected frames: {other:#?}");
}

both_engines!(rate_limit_abuse);

/// At most 2 connections per user, counted across the cluster.
async fn connection_cap(engine: Engine) {
    let nodes = if engine == Engine::Redis { 2 } else { 1 };
    let cluster = Cluster::start(
        engine,
        nodes,
        &[("CHAT_LIMITS__MAX_CONNECTIONS_PER_USER", "2")],
    );
    let alice = guest(&cluster.url(0), "alice").await;
    let session = alice.session().to_string();
    let mut alice2 = device(&cluster.url(cluster.other(1)), &session).await;

    for i in 0..cluster.nodes.len() {
        match Client::connect(&cluster.url(i), Credential::Session(session.clone()), None).await {
            Err(ClientError::Refused {
                code: ErrorCode::Forbidden,
                close_code: Some(close::POLICY),
                ..
            }) => {}
            Err(e) => panic!("third connection on node {i}: expected forbidden + 4008, got {e}"),
            Ok(c) => panic!("third connection on node {i} accepted: {:?}", c.welcome()),
        }
    }
    // The refused attempts did not take a slot nor disturb the open ones.
    alice2
        .ping()
        .await
        .expect("the second connection still works");
    // Another user is not affected.
    let _bob = guest(&cluster.url(0), "bob").await;

    // Closing one frees a slot.
    alice.close().await;
    let url = cluster.url(cluster.other(1));
    let third = eventually("a slot is free after a close", WAIT, || {
        let (url, session) = (url.clone(), session.clone());
        async move {
            Client::connect(&url, Credential::Session(session), None)
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(third.user_id(), alice2.user_id());
}

both_engines!(connection_cap);

/// `welcome.limits` reflects every configured value.
#[tokio::test]
async fn welcome_limits_echo_configuration() {
    let cluster = Cluster::single(
        Engine::Memory,
        &[
            ("CHAT_LIMITS__SEND_PER_SECOND", "7"),
            ("CHAT_LIMITS__SEND_BURST", "11"),
            ("CHAT_SERVER__MAX_BODY", "1234"),
            ("CHAT_SERVER__MAX_FRAME", "32768"),
        ],
    );
    let alice = guest(&cluster.url(0), "alice").await;
    let limits = &alice.welcome().limits;
    assert_eq!(
        (
            limits.send_per_second,
            limits.send_burst,
            limits.max_body,
            limits.max_frame
        ),
        (7, 11, 1234, 32768),
        "{limits:?}"
    );
}

#[tokio::test]
async fn origin_default_is_same_origin() {
    let node = Gateway::start(&[("CHAT_AUTH__GUESTS", "true")]);
    let url = node.ws_url();
    let same = format!("http://{}", node.addr);
    assert_eq!(upgrade_status(&url, None).await, 101, "no Origin: allowed");
    assert_eq!(upgrade_status(&url, Some(&same)).await, 101, "same origin");
    assert_eq!(
        upgrade_status(&url, Some("http://evil.example")).await,
        403,
        "foreign origin"
    );
    assert_eq!(
        upgrade_status(
            &url,
            Some(&format!("http://{}.evil.example", node.addr.ip()))
        )
        .await,
        403,
        "look-alike origin"
    );
}

#[tokio::test]
async fn origin_allow_list() {
    let node = Gateway::start(&[
        ("CHAT_AUTH__GUESTS", "true"),
        (
            "CHAT_SERVER__ALLOWED_ORIGINS",
            "https://app.example,https://admin.example",
        ),
    ]);
    let url = node.ws_url();
    assert_eq!(upgrade_status(&url, Some("https://app.example")).await, 101);
    assert_eq!(
        upgrade_status(&url, Some("https://admin.example")).await,
        101
    );
    assert_eq!(
        upgrade_status(&url, Some("https://evil.example")).await,
        403
    );
    assert_eq!(
        upgrade_status(&url, Some("http://app.example")).await,
        403,
        "the scheme is part of the origin"
    );
    assert_eq!(
        upgrade_status(&url, Some(&format!("http://{}", node.addr))).await,
        403,
        "with a list, only the list is allowed"
    );
    assert_eq!(upgrade_status(&url, None).await, 101, "no Origin: allowed");
    // An accepted upgrade is a working connection.
    let alice = guest(&url, "alice").await;
    assert!(!alice.welcome().node.is_empty());
}

#[tokio::test]
async fn origin_star_allows_any() {
    let node = Gateway::start(&[("CHAT_SERVER__ALLOWED_ORIGINS", "*")]);
    let url = node.ws_url();
    for origin in [
        "https://evil.example",
        "http://localhost:1234",
        "null",
        &format!("http://{}", node.addr),
    ] {
        assert_eq!(upgrade_status(&url, Some(origin)).await, 101, "{origin}");
    }
}
