//! Clearing a conversation (`DELETE /api/v1/conversations/{a}/{b}`): every connection
//! of both users receives `{"type":"cleared","conversation","up_to"}` (with a cursor),
//! and a later recovery from a cursor older than the cleared messages replays the
//! `cleared` event but none of the cleared messages, and still proves itself
//! (`recovered: true`).

mod common;

use std::time::Duration;

use common::*;

fn is_cleared(frame: &ServerFrame, conversation: &str, up_to: &str) -> bool {
    matches!(
        frame,
        ServerFrame::Cleared { conversation: c, up_to: u, cursor: Some(_) }
            if c == conversation && u == up_to
    )
}

async fn cleared_is_told_and_never_replayed(engine: Engine) {
    let nodes = if engine == Engine::Redis { 2 } else { 1 };
    let cluster = Cluster::start(engine, nodes, NO_RATE_LIMIT);
    let mut alice = guest(&cluster.url(0), "alice").await;
    let alice_id = alice.user_id().to_string();
    let bob = guest(&cluster.url(cluster.other(0)), "bob").await;
    let bob_id = bob.user_id().to_string();
    let mut bob2 = device(&cluster.url(0), bob.session()).await;

    // Bob's first device goes away with the cursor of its welcome.
    let state = bob.resume_state();
    assert!(state.cursor.is_some());
    bob.close().await;

    let mut last = None;
    for i in 0..3 {
        last = Some(alice.send(&bob_id, &format!("secret {i}")).await.unwrap());
    }
    let last = last.unwrap();
    let conversation = last.conversation.clone();
    for i in 0..3 {
        let m = expect_message(&mut bob2, "bob2 gets the message live").await;
        assert_eq!(m.body, format!("secret {i}"));
    }

    let (status, reply) = api(
        cluster.addr(0),
        "DELETE",
        &format!("/api/v1/conversations/{alice_id}/{bob_id}"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 204, "{reply}");
    for (client, who) in [(&mut alice, "alice"), (&mut bob2, "bob2")] {
        expect_frame(client, &format!("{who} is told"), |f| {
            is_cleared(f, &conversation, &last.id)
        })
        .await;
    }

    // Bob's first device comes back from before the three messages: recovered, and
    // it gets the clear, not the messages.
    let mut bob = Client::resume(&cluster.url(0), state)
        .await
        .expect("bob resumes");
    assert!(bob.welcome().recovered, "the chain stays provable");
    let first = bob
        .next_event_timeout(WAIT)
        .await
        .unwrap()
        .expect("the cleared event is recovered");
    assert!(is_cleared(&first, &conversation, &last.id), "{first:?}");
    expect_no_frame(
        &mut bob,
        Duration::from_millis(500),
        "no cleared message is replayed",
        |f| matches!(f, ServerFrame::Message { .. }),
    )
    .await;

    // The conversation goes on: a new message arrives, history holds only it.
    let after = alice.send(&bob_id, "after the clear").await.unwrap();
    assert_eq!(expect_message(&mut bob, "the new message").await, after);
    let (history, more) = bob.history(&alice_id, None, 50).await.unwrap();
    assert_eq!((history, more), (vec![after], false));

    // A fresh device of Bob recovering from the very start sees no cleared message.
    let mut fresh = bob.resume_state();
    fresh.cursor = Some("0-0".into());
    fresh.seen = Default::default();
    let mut bob3 = Client::resume(&cluster.url(0), fresh).await.unwrap();
    let mut bodies = Vec::new();
    while let Some(frame) = bob3
        .next_event_timeout(Duration::from_millis(500))
        .await
        .unwrap()
    {
        if let ServerFrame::Message { message, .. } = frame {
            bodies.push(message.body);
        }
    }
    assert!(
        bodies.iter().all(|b| !b.starts_with("secret")),
        "{bodies:?}"
    );
    assert!(
        bodies.contains(&"after the clear".to_string()),
        "{bodies:?}"
    );
}

both_engines!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    cleared_is_told_and_never_replayed
);
