//! Recovery: a user who was offline reconnects (on another node) with their last
//! cursor while messages keep coming, and receives every message exactly once, in
//! order, the missed ones before any live one. A cursor older than the retained
//! inbox gives `recovered: false`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;

const MISSED: usize = 1000;
const LIVE: usize = 200;

async fn recovers_while_live(engine: Engine) {
    let nodes = if engine == Engine::Redis { 2 } else { 1 };
    let cluster = Cluster::start(engine, nodes, NO_RATE_LIMIT);
    let mut alice = guest(&cluster.url(0), "alice").await;
    let mut bob = guest(&cluster.url(cluster.other(1)), "bob").await;
    let bob_id = bob.user_id().to_string();

    // Bob reads one message, so his cursor is a real inbox position, then goes away.
    let first = alice
        .send(&bob_id, "before bob leaves")
        .await
        .expect("send");
    assert_eq!(expect_message(&mut bob, "the first message").await, first);
    let state = bob.resume_state();
    assert!(state.cursor.is_some(), "bob has a cursor after a message");
    bob.close().await;

    let started = std::time::Instant::now();
    let mut acked = Vec::with_capacity(MISSED + LIVE);
    for i in 0..MISSED {
        let m = alice
            .send(&bob_id, &format!("missed {i}"))
            .await
            .expect("send while bob is away");
        acked.push(m.id);
        if i % 100 == 0 {
            while let Ok(Some(_)) = alice.next_event_timeout(Duration::ZERO).await {}
        }
    }
    assert_increasing(&acked, "acked ids");
    eprintln!("{MISSED} sends took {:?}", started.elapsed());

    // Alice keeps sending while Bob reconnects: the first few before he does, the
    // rest during and after his recovery.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let sender = tokio::spawn({
        let bob_id = bob_id.clone();
        async move {
            let mut ids = Vec::with_capacity(LIVE);
            let mut started = Some(started_tx);
            for i in 0..LIVE {
                let m = alice
                    .send(&bob_id, &format!("live {i}"))
                    .await
                    .expect("live send");
                ids.push(m.id);
                if i == 10 {
                    if let Some(tx) = started.take() {
                        let _ = tx.send(());
                    }
                }
                while let Ok(Some(_)) = alice.next_event_timeout(Duration::ZERO).await {}
            }
            ids
        }
    });
    started_rx.await.expect("sender started");

    // Node 0: the other node than before on Redis (the only node on memory).
    let mut bob = Client::resume(&cluster.url(0), state)
        .await
        .expect("bob resumes");
    assert!(
        bob.welcome().recovered,
        "recovered must be true: cursor inside the inbox"
    );
    assert_eq!(bob.user_id(), bob_id);

    let mut received: Vec<Message> = Vec::new();
    while received.len() < MISSED + LIVE {
        match bob.next_event_timeout(Duration::from_secs(15)).await {
            Ok(Some(ServerFrame::Message { message, .. })) => {
                assert_eq!(message.to, bob_id);
                received.push(message);
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!(
                "bob stalled after {} of {} messages\n{}",
                received.len(),
                MISSED + LIVE,
                cluster.logs()
            ),
            Err(e) => panic!("bob's connection failed: {e}"),
        }
    }
    eprintln!(
        "bob received everything {:?} after the first send",
        started.elapsed()
    );
    let live = sender.await.expect("sender task");
    assert_increasing(&live, "live acked ids");
    let mut expected = acked.clone();
    expected.extend(live);
    let ids: Vec<String> = received.iter().map(|m| m.id.clone()).collect();
    assert_increasing(&ids, "bob's deliveries");
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "no message twice");
    // The 1,000 missed ones come first, then the live ones; nothing missing or extra.
    assert_eq!(
        &ids[..MISSED],
        &acked[..],
        "replay first, in order, complete"
    );
    assert_eq!(ids, expected, "every acked message exactly once, in order");
    for (i, m) in received[..MISSED].iter().enumerate() {
        assert_eq!(m.body, format!("missed {i}"));
    }
    // Nothing else arrives afterwards.
    if let Ok(Some(ServerFrame::Message { message, .. })) =
        bob.next_event_timeout(Duration::from_millis(300)).await
    {
        panic!("unexpected extra message {message:?}");
    }
}

both_engines!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    recovers_while_live
);

/// With an inbox of 10 events, a cursor 250 events back cannot be proven complete
/// (250, not 11: approximate stream trimming may keep a few dozen extra):
/// `recovered: false`. A cursor inside the window recovers exactly what was missed.
async fn cursor_older_than_inbox(engine: Engine) {
    let mut env = NO_RATE_LIMIT.to_vec();
    env.push(("CHAT_RETENTION__INBOX_MAX_LEN", "10"));
    let cluster = Cluster::single(engine, &env);
    let url = cluster.url(0);
    let mut alice = guest(&url, "alice").await;
    let mut bob = guest(&url, "bob").await;
    let bob_id = bob.user_id().to_string();

    let m = alice.send(&bob_id, "seen").await.expect("send");
    assert_eq!(expect_message(&mut bob, "first message").await, m);
    let state = bob.resume_state();
    bob.close().await;
    for i in 0..250 {
        alice.send(&bob_id, &format!("m{i}")).await.expect("send");
    }
    let bob = Client::resume(&url, state).await.expect("resume");
    assert!(
        !bob.welcome().recovered,
        "cursor older than the retained inbox"
    );
    assert_eq!(bob.user_id(), bob_id);

    // Starting from the cursor the server gave, a short absence recovers exactly.
    let state = bob.resume_state();
    assert!(
        state.cursor.is_some(),
        "welcome.cursor after a failed recovery"
    );
    bob.close().await;
    let mut missed = Vec::new();
    for i in 0..3 {
        missed.push(
            alice
                .send(&bob_id, &format!("short {i}"))
                .await
                .expect("send"),
        );
    }
    let mut bob = Client::resume(&url, state).await.expect("resume again");
    assert!(
        bob.welcome().recovered,
        "cursor inside the window must recover"
    );
    for m in &missed {
        assert_eq!(&expect_message(&mut bob, "recovered message").await, m);
    }
}

both_engines!(cursor_older_than_inbox);
