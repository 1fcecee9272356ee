//! A client that stops reading is cut off (close 4010, counted in
//! `chat_slow_consumer_closes_total`) instead of growing the node's memory or slowing
//! anyone else: users on the same node keep chatting during and after.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

const FLOOD_MAX: usize = 20_000;
const BODY_CHARS: usize = 3_900;

/// Alice sends `n` messages to Carol and Carol answers; both must arrive.
async fn exchange(alice: &mut Client, carol: &mut Client, n: usize, what: &str) {
    let (alice_id, carol_id) = (alice.user_id().to_string(), carol.user_id().to_string());
    for i in 0..n {
        let m = alice
            .send(&carol_id, &format!("{what} {i}"))
            .await
            .expect("alice → carol");
        assert_eq!(
            expect_from(carol, &alice_id, &format!("{what}: carol gets {i}")).await,
            m
        );
        let r = carol
            .send(&alice_id, &format!("re: {what} {i}"))
            .await
            .expect("carol → alice");
        assert_eq!(
            expect_from(
                alice,
                &carol_id,
                &format!("{what}: alice gets the reply {i}")
            )
            .await,
            r
        );
    }
}

async fn slow_consumer(engine: Engine) {
    let mut env = NO_RATE_LIMIT.to_vec();
    env.push(("CHAT_SERVER__OUTBOX", "64"));
    let cluster = Cluster::single(engine, &env);
    let url = cluster.url(0);
    let addr = cluster.addr(0);
    let before = metric(
        &http(addr, "GET", "/metrics", None, None).await.1,
        "chat_slow_consumer_closes_total",
    )
    .unwrap_or(0.0);

    // Bob signs in and then never reads until the end of the test.
    let mut bob = guest(&url, "bob").await;
    let bob_id = bob.user_id().to_string();
    let mut alice = guest(&url, "alice").await;
    let mut carol = guest(&url, "carol").await;
    exchange(&mut alice, &mut carol, 2, "before").await;

    let stop = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn({
        let stop = stop.clone();
        async move {
            let body = "w".repeat(BODY_CHARS);
            let mut sent = 0;
            while !stop.load(Ordering::Relaxed) && sent < FLOOD_MAX {
                alice.send(&bob_id, &body).await.expect("flood send");
                sent += 1;
                // Alice reads her own copies; only Bob is slow.
                while let Ok(Some(_)) = alice.next_event_timeout(Duration::ZERO).await {}
                if sent % 500 == 0 {
                    exchange(&mut alice, &mut carol, 1, "during").await;
                }
            }
            (alice, carol, sent)
        }
    });

    eventually(
        "chat_slow_consumer_closes_total to grow",
        Duration::from_secs(90),
        || async move {
            let (status, text) = http(addr, "GET", "/metrics", None, None).await;
            (status == 200
                && metric(&text, "chat_slow_consumer_closes_total").unwrap_or(0.0) >= before + 1.0)
                .then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let (mut alice, mut carol, sent) = flood.await.expect("flood task");
    assert!(sent < FLOOD_MAX, "bob was never cut off");

    // Bob reads now: whatever was buffered, then the end — 4010 or an abrupt end.
    let ended = bob.connection().wait_closed(Duration::from_secs(30)).await;
    eprintln!(
        "flooded {sent} messages; bob's connection ended with {:?}",
        ended.as_ref().map_err(Vec::len)
    );
    match ended {
        Ok(None) | Ok(Some(close::SLOW_CONSUMER)) => {}
        Ok(Some(code)) => panic!("slow consumer closed with {code}, expected 4010"),
        Err(frames) => panic!(
            "bob's connection did not end ({} frames read)",
            frames.len()
        ),
    }
    exchange(&mut alice, &mut carol, 3, "after").await;
    alice.ping().await.expect("alice still connected");
}

both_engines!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    slow_consumer
);
