//! Redis goes down and comes back: sends fail loudly with `unavailable` (never an
//! ack, never silently dropped), `/readyz` reports 503, and once Redis is back the
//! same nodes — not restarted — deliver across nodes again on the connections that
//! stayed open.

mod common;

use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::Algorithm;

/// Signs `sub` in with a token (which also re-creates the user after data loss).
async fn token_client(url: &str, sub: &str) -> Result<Client, ClientError> {
    let token = jwt(sub, sub, 3600, Algorithm::HS256, JWT_SECRET);
    Client::connect(url, Credential::Token(token), None).await
}

/// Sends from `from` to `to` until `to` receives one, within `timeout`; fails on any
/// message whose body says it was sent while Redis was down.
async fn until_delivered(
    from: &mut Client,
    to: &mut Client,
    url: &str,
    timeout: Duration,
) -> Message {
    let to_id = to.user_id().to_string();
    let deadline = Instant::now() + timeout;
    let mut attempt = 0;
    while Instant::now() < deadline {
        attempt += 1;
        match from.send(&to_id, &format!("after {attempt}")).await {
            Ok(sent) => {
                let wait_until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < wait_until {
                    match to.next_event_timeout(Duration::from_millis(200)).await {
                        Ok(Some(ServerFrame::Message { message, .. })) => {
                            assert!(
                                !message.body.starts_with("during"),
                                "a refused send was delivered: {message:?}"
                            );
                            if message.id == sent.id {
                                return message;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => panic!("{to_id}'s connection failed after the outage: {e}"),
                    }
                }
            }
            Err(ClientError::Server {
                code: ErrorCode::Unavailable,
                ..
            }) => {}
            Err(ClientError::Server {
                code: ErrorCode::NotFound,
                ..
            }) => {
                // The restarted Redis lost the user: signing in again re-creates it.
                if let Ok(c) = token_client(url, &to_id).await {
                    c.close().await;
                }
            }
            Err(e) => panic!("send after the outage failed: {e}"),
        }
        // Pace the retries; the deadline above is what bounds the test.
        let _ = from.next_event_timeout(Duration::from_millis(100)).await;
    }
    panic!(
        "no delivery from {} to {to_id} within {timeout:?}",
        from.user_id()
    );
}

#[tokio::test]
async fn sends_fail_loudly_and_delivery_resumes() {
    let mut cluster = Cluster::start(Engine::Redis, 2, &[]);
    let (a, b) = (cluster.addr(0), cluster.addr(1));
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let (alice_id, bob_id) = (format!("alice-{tag}"), format!("bob-{tag}"));
    let mut alice = token_client(&cluster.url(0), &alice_id)
        .await
        .expect("alice");
    let mut bob = token_client(&cluster.url(1), &bob_id).await.expect("bob");
    for node in [a, b] {
        assert_eq!(
            get_status(node, "/readyz").await,
            200,
            "ready before the outage"
        );
    }
    let m = alice
        .send(&bob_id, "before")
        .await
        .expect("send before the outage");
    assert_eq!(
        expect_message(&mut bob, "message before the outage").await,
        m
    );

    cluster.redis.as_mut().expect("redis").kill();

    alice.set_timeout(Duration::from_secs(20));
    for i in 0..3 {
        let started = Instant::now();
        match alice.send(&bob_id, &format!("during {i}")).await {
            Err(ClientError::Server {
                code: ErrorCode::Unavailable,
                ..
            }) => {}
            other => panic!(
                "send {i} while Redis is down: expected unavailable, got {other:?}\n{}",
                cluster.logs()
            ),
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "unavailable took {:?}",
            started.elapsed()
        );
    }
    for node in [a, b] {
        eventually(
            "/readyz 503 while Redis is down",
            Duration::from_secs(15),
            || async move { (get_status(node, "/readyz").await == 503).then_some(()) },
        )
        .await;
    }
    // The connections stay open while the backend is down.
    alice.ping().await.expect("alice still connected");
    bob.ping().await.expect("bob still connected");

    cluster.redis.as_mut().expect("redis").restart();
    for node in [a, b] {
        eventually(
            "/readyz 200 after Redis is back",
            Duration::from_secs(30),
            || async move { (get_status(node, "/readyz").await == 200).then_some(()) },
        )
        .await;
    }

    // Redis lost its data: sign both users in again (new connections), then check
    // the connections that stayed open all along.
    for (url, id) in [(cluster.url(0), &alice_id), (cluster.url(1), &bob_id)] {
        let c = eventually(
            "token sign-in after the restart",
            Duration::from_secs(20),
            || {
                let url = url.clone();
                async move { token_client(&url, id).await.ok() }
            },
        )
        .await;
        c.close().await;
    }
    let url0 = cluster.url(0);
    let url1 = cluster.url(1);
    let to_bob = until_delivered(&mut alice, &mut bob, &url1, Duration::from_secs(30)).await;
    assert_eq!(to_bob.from, alice_id);
    let to_alice = until_delivered(&mut bob, &mut alice, &url0, Duration::from_secs(30)).await;
    assert_eq!(to_alice.from, bob_id);

    // Nothing sent during the outage was stored.
    let (history, _) = alice.history(&bob_id, None, 100).await.expect("history");
    assert!(
        history.iter().all(|m| !m.body.starts_with("during")),
        "a refused send was stored: {history:?}"
    );
    // And new sign-ins work on both nodes.
    let mut carol = guest(&cluster.url(0), "carol").await;
    let mut dave = guest(&cluster.url(1), "dave").await;
    let m = carol
        .send(dave.user_id(), "new users after the outage")
        .await
        .expect("send");
    assert_eq!(
        expect_message(&mut dave, "dave gets carol's message").await,
        m
    );
    let _ = &mut carol;
}

/// A connection that closes while Redis is down cannot decrement its presence count
/// (and retrying a decrement is unsafe). Redis comes back with the old count (from its
/// append-only file): the node, which knows it has no connection of the user any
/// more, drops its count and the user goes offline.
#[tokio::test]
async fn presence_count_left_by_a_close_during_an_outage_is_repaired() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let cluster = Cluster::on_redis_url(&redis.url(), 1, &[]);
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let alice_id = format!("alice-{tag}");
    let alice = token_client(&cluster.url(0), &alice_id)
        .await
        .expect("alice");
    let pres = format!("chat:{{u:{alice_id}}}:pres");
    let user = format!("chat:user:{alice_id}");
    assert_eq!(redis.command(&["HLEN", &pres]).as_deref(), Some(":1\r\n"));
    assert_eq!(
        redis.command(&["HEXISTS", &user, "seen"]).as_deref(),
        Some(":0\r\n"),
        "never offline yet"
    );

    redis.kill();
    drop(alice);
    eventually(
        "the node failed to count the close",
        Duration::from_secs(30),
        || {
            let logs = cluster.logs();
            async move { logs.contains("will repair").then_some(()) }
        },
    )
    .await;
    redis.restart();

    eventually(
        "the stale count dropped and alice offline",
        Duration::from_secs(30),
        || {
            let left = redis.command(&["HLEN", &pres]);
            let seen = redis.command(&["HEXISTS", &user, "seen"]);
            async move {
                (left.as_deref() == Some(":0\r\n") && seen.as_deref() == Some(":1\r\n"))
                    .then_some(())
            }
        },
    )
    .await;
    let metrics = http(cluster.addr(0), "GET", "/metrics", None, None).await;
    assert!(
        metric(&metrics.1, "chat_presence_repairs_total").unwrap_or(0.0) >= 1.0,
        "repair counted"
    );
}
