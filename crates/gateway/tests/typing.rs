//! Typing indicators: `typing {to}` reaches every connection of the peer, on every
//! node, as `{"type":"typing","from"}`; it is ephemeral — never in history, never
//! replayed by recovery.

mod common;

use std::time::Duration;

use common::*;

/// A little more than the second between two typing frames to one recipient.
const TYPING_GAP: Duration = Duration::from_millis(1100);

async fn typing_is_live_and_ephemeral(engine: Engine) {
    let nodes = if engine == Engine::Redis { 2 } else { 1 };
    let cluster = Cluster::start(engine, nodes, NO_RATE_LIMIT);
    let (a, b) = (0, cluster.other(1));

    let mut alice = guest(&cluster.url(a), "alice").await;
    let alice_id = alice.user_id().to_string();
    // Bob has a connection on each node.
    let mut bob = guest(&cluster.url(b), "bob").await;
    let bob_id = bob.user_id().to_string();
    let mut bob2 = device(&cluster.url(a), bob.session()).await;

    send_typing(&mut alice, &bob_id).await;
    for (who, client) in [("bob (other node)", &mut bob), ("bob2", &mut bob2)] {
        let frame = expect_frame(client, &format!("{who} gets typing"), |f| {
            matches!(f, ServerFrame::Typing { .. })
        })
        .await;
        assert_eq!(
            frame,
            ServerFrame::Typing {
                from: alice_id.clone()
            },
            "{who}"
        );
    }

    // A real message gives Bob a cursor; then he goes away.
    let m1 = alice.send(&bob_id, "first").await.expect("send");
    assert_eq!(expect_message(&mut bob, "bob gets m1").await, m1);
    assert_eq!(expect_message(&mut bob2, "bob2 gets m1").await, m1);
    let state = bob.resume_state();
    assert!(state.cursor.is_some(), "bob has a cursor");
    bob.close().await;

    // While Bob is away: typing, a message, typing again. Bob's remaining device
    // proves each was published.
    // (At most one typing a second goes to one recipient: protocol 1.1.)
    tokio::time::sleep(TYPING_GAP).await;
    send_typing(&mut alice, &bob_id).await;
    let m2 = alice.send(&bob_id, "second").await.expect("send");
    tokio::time::sleep(TYPING_GAP).await;
    send_typing(&mut alice, &bob_id).await;
    expect_frame(&mut bob2, "bob2 gets the first typing", |f| {
        matches!(f, ServerFrame::Typing { .. })
    })
    .await;
    assert_eq!(expect_message(&mut bob2, "bob2 gets m2").await, m2);
    expect_frame(&mut bob2, "bob2 gets the second typing", |f| {
        matches!(f, ServerFrame::Typing { .. })
    })
    .await;

    // Bob resumes on Alice's node with the older cursor: m2 is replayed, no typing.
    let mut bob = Client::resume(&cluster.url(a), state)
        .await
        .expect("bob resumes");
    assert!(bob.welcome().recovered, "cursor inside the inbox");
    let m3 = alice.send(&bob_id, "third, live").await.expect("send");
    let mut frames = Vec::new();
    loop {
        let frame = expect_frame(&mut bob, "bob's replay and live m3", |_| true).await;
        let done = matches!(&frame, ServerFrame::Message { message, .. } if message.id == m3.id);
        frames.push(frame);
        if done {
            break;
        }
    }
    let messages: Vec<&Message> = frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Message { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(messages, [&m2, &m3], "replay then live: {frames:#?}");
    assert!(
        !frames
            .iter()
            .any(|f| matches!(f, ServerFrame::Typing { .. })),
        "typing must never be replayed: {frames:#?}"
    );
    // Nothing else trails in either.
    expect_no_frame(
        &mut bob,
        Duration::from_millis(300),
        "after recovery",
        |f| matches!(f, ServerFrame::Typing { .. }),
    )
    .await;

    // Not stored: history holds the three messages only.
    for (who, client, peer) in [("alice", &mut alice, &bob_id), ("bob", &mut bob, &alice_id)] {
        let (history, more) = client.history(peer, None, 100).await.expect("history");
        assert!(!more);
        assert_eq!(
            history,
            vec![m1.clone(), m2.clone(), m3.clone()],
            "{who}'s history"
        );
    }
    let item = conversation_with(&mut bob, &alice_id, "bob's conversations").await;
    assert_eq!(
        item.last.as_ref(),
        Some(&m3),
        "typing is not a conversation's last"
    );
}

both_engines!(typing_is_live_and_ephemeral);

/// Typing to oneself or to a malformed id is refused with `bad_request`.
#[tokio::test]
async fn typing_to_oneself_is_refused() {
    let cluster = Cluster::single(Engine::Memory, &[]);
    let mut alice = guest(&cluster.url(0), "alice").await;
    let alice_id = alice.user_id().to_string();
    let result = alice
        .request(ClientFrame::Typing {
            reference: None,
            to: alice_id,
        })
        .await;
    assert_code(result, &[ErrorCode::BadRequest], "typing to oneself");
}
