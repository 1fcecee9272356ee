//! Unread counts and read receipts: messages sent while a user is away are listed in
//! `welcome.unread` and counted in `conversations`; a `read` from one device moves
//! the marker forward only, reaches the peer (on another node) and the reader's other
//! devices with a cursor, and the counts everywhere follow. Under concurrent sends
//! and reads the final count is exactly the messages after the final marker.

mod common;

use std::time::Duration;

use common::*;

async fn unread_and_read_receipts(engine: Engine) {
    // Alice on node A, Bob's devices on B and C: every read event crosses nodes.
    let nodes = if engine == Engine::Redis { 3 } else { 1 };
    let cluster = Cluster::start(engine, nodes, NO_RATE_LIMIT);
    let (a, b, c) = (0, cluster.other(1), cluster.other(2));

    let mut alice = guest(&cluster.url(a), "alice").await;
    let alice_id = alice.user_id().to_string();
    let alice_name = alice.welcome().user.name.clone();
    // Bob exists (signed in once), then goes away.
    let bob = guest(&cluster.url(a), "bob").await;
    let bob_id = bob.user_id().to_string();
    let bob_session = bob.session().to_string();
    bob.close().await;

    let mut sent = Vec::new();
    for i in 1..=5 {
        let m = alice
            .send(&bob_id, &format!("while you were away {i}"))
            .await
            .expect("alice → offline bob");
        sent.push(m);
    }
    let last = sent[4].clone();

    // Bob signs in on the other node: welcome lists Alice with 5 unread.
    let mut bob = device(&cluster.url(b), &bob_session).await;
    let unread = &bob.welcome().unread;
    let entry = unread
        .iter()
        .find(|u| u.peer.id == alice_id)
        .unwrap_or_else(|| panic!("welcome.unread has no entry for alice: {unread:#?}"));
    assert_eq!(entry.count, 5, "welcome.unread count: {unread:#?}");
    assert_eq!(entry.last, last, "welcome.unread last message");
    assert_eq!(entry.peer.name, alice_name, "welcome.unread peer name");
    assert_eq!(
        unread.len(),
        1,
        "only alice's conversation is unread: {unread:#?}"
    );

    let bob_item = conversation_with(&mut bob, &alice_id, "bob's conversations").await;
    assert_eq!(bob_item.unread, 5, "bob's unread: {bob_item:#?}");
    assert_eq!(bob_item.last.as_ref(), Some(&last), "bob's last message");
    assert_eq!(bob_item.conversation, last.conversation);
    let alice_item = conversation_with(&mut alice, &bob_id, "alice's conversations").await;
    assert_eq!(
        alice_item.unread, 0,
        "own messages are never unread: {alice_item:#?}"
    );
    assert_eq!(
        alice_item.read_up_to.as_deref(),
        Some(last.id.as_str()),
        "sending moves the sender's own marker: {alice_item:#?}"
    );

    // Bob's second device (on a third node) marks read up to the 3rd message.
    let mut bob2 = device(&cluster.url(c), &bob_session).await;
    let third = sent[2].id.clone();
    mark_read(&mut bob2, &alice_id, &third).await;

    for (who, client) in [("alice", &mut alice), ("bob's other device", &mut bob)] {
        let (conversation, by, up_to, cursor) =
            expect_read_event(client, &format!("{who} gets bob's read")).await;
        assert_eq!(conversation, last.conversation, "{who}: read conversation");
        assert_eq!(by, bob_id, "{who}: read by");
        assert_eq!(up_to, third, "{who}: read up_to");
        assert!(cursor.is_some(), "{who}: the read event carries a cursor");
    }
    for (who, client) in [("bob", &mut bob), ("bob2", &mut bob2)] {
        let item = conversation_with(client, &alice_id, who).await;
        assert_eq!(
            item.unread, 2,
            "{who}: unread after reading 3 of 5: {item:#?}"
        );
        assert_eq!(item.read_up_to.as_deref(), Some(third.as_str()), "{who}");
    }
    let alice_item = conversation_with(&mut alice, &bob_id, "alice").await;
    assert_eq!(
        alice_item.peer_read_up_to.as_deref(),
        Some(third.as_str()),
        "alice sees how far bob read: {alice_item:#?}"
    );

    // An older id changes nothing.
    mark_read(&mut bob2, &alice_id, &sent[0].id).await;
    let item = conversation_with(&mut bob2, &alice_id, "bob2 after an older read").await;
    assert_eq!(item.unread, 2, "an older marker is ignored: {item:#?}");
    assert_eq!(item.read_up_to.as_deref(), Some(third.as_str()));
    // The next read event Alice sees is the next forward move, not the older id.
    let fourth = sent[3].id.clone();
    mark_read(&mut bob2, &alice_id, &fourth).await;
    let (_, _, up_to, _) = expect_read_event(&mut alice, "alice gets the next read").await;
    assert_eq!(
        up_to, fourth,
        "the older read must not produce an event (or move the marker back)"
    );
    let item = conversation_with(&mut bob, &alice_id, "bob after reading 4").await;
    assert_eq!(item.unread, 1, "{item:#?}");
    let alice_item = conversation_with(&mut alice, &bob_id, "alice").await;
    assert_eq!(alice_item.peer_read_up_to.as_deref(), Some(fourth.as_str()));

    // Alice's reply does not count for Bob, and moves nothing of his.
    let reply = alice.send(&bob_id, "one more").await.expect("send");
    expect_frame(
        &mut bob,
        "bob gets the reply",
        |f| matches!(f, ServerFrame::Message { message, .. } if message.id == reply.id),
    )
    .await;
    let item = conversation_with(&mut bob, &alice_id, "bob after one more").await;
    assert_eq!(item.unread, 2, "{item:#?}");
    // Bob answering moves his own marker: nothing is unread for him any more.
    let answer = bob.send(&alice_id, "thanks").await.expect("bob answers");
    let item = conversation_with(&mut bob, &alice_id, "bob after answering").await;
    assert_eq!(
        item.unread, 0,
        "sending marks the conversation read: {item:#?}"
    );
    assert_eq!(item.read_up_to.as_deref(), Some(answer.id.as_str()));
    let alice_item = conversation_with(&mut alice, &bob_id, "alice").await;
    assert_eq!(
        alice_item.unread, 1,
        "bob's answer is unread for alice: {alice_item:#?}"
    );
}

both_engines!(unread_and_read_receipts);

const PER_SENDER: usize = 50;
/// The reader stops marking after this many messages, so the final marker is
/// somewhere in the middle of the burst.
const READER_STOPS_AFTER: usize = 60;

async fn concurrent_sends_and_reads(engine: Engine) {
    let nodes = if engine == Engine::Redis { 2 } else { 1 };
    let cluster = Cluster::start(engine, nodes, NO_RATE_LIMIT);
    let (a, b) = (0, cluster.other(1));

    let alice = guest(&cluster.url(a), "alice").await;
    let alice_id = alice.user_id().to_string();
    let alice2 = device(&cluster.url(b), alice.session()).await;
    let mut bob = guest(&cluster.url(b), "bob").await;
    let bob_id = bob.user_id().to_string();

    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let mut senders = Vec::new();
    for (n, mut client) in [alice, alice2].into_iter().enumerate() {
        let bob_id = bob_id.clone();
        let mut go = go_rx.clone();
        senders.push(tokio::spawn(async move {
            let _ = go.wait_for(|g| *g).await;
            for i in 0..PER_SENDER {
                client
                    .send(&bob_id, &format!("sender {n} message {i}"))
                    .await
                    .expect("concurrent send");
                // Keep the own copies from piling up.
                while let Ok(Some(_)) = client.next_event_timeout(Duration::ZERO).await {}
            }
            client
        }));
    }

    let reader = tokio::spawn({
        let alice_id = alice_id.clone();
        async move {
            let _ = go_tx.send(true);
            let mut marker: Option<String> = None;
            for received in 1..=READER_STOPS_AFTER {
                let m = expect_message(&mut bob, "bob receives the burst").await;
                if received % 3 == 0 || received == READER_STOPS_AFTER {
                    mark_read(&mut bob, &alice_id, &m.id).await;
                    if marker.as_ref().is_none_or(|old| sid(old) < sid(&m.id)) {
                        marker = Some(m.id.clone());
                    }
                }
            }
            (bob, marker.expect("the reader marked something"))
        }
    });

    let (mut bob, marker) = reader.await.expect("reader task");
    for s in senders {
        s.await.expect("sender task");
    }

    let history = bob.full_history(&alice_id).await.expect("history");
    assert_eq!(history.len(), 2 * PER_SENDER, "every message is stored");
    let after = history.iter().filter(|m| sid(&m.id) > sid(&marker)).count();
    assert!(after > 0, "the marker is inside the burst");
    let item = conversation_with(&mut bob, &alice_id, "bob after the burst").await;
    assert_eq!(
        item.read_up_to.as_deref(),
        Some(marker.as_str()),
        "bob's marker is the furthest he marked: {item:#?}"
    );
    assert_eq!(
        item.unread as usize, after,
        "unread must be exactly the messages after the final marker {marker}"
    );
    let summary = Client::connect(
        &cluster.url(a),
        Credential::Session(bob.session().to_string()),
        None,
    )
    .await
    .expect("bob's new device");
    let entry = summary
        .welcome()
        .unread
        .iter()
        .find(|u| u.peer.id == alice_id)
        .cloned()
        .expect("welcome.unread lists alice");
    assert_eq!(entry.count as usize, after, "welcome.unread count");
    assert_eq!(Some(&entry.last), history.last(), "welcome.unread last");
}

both_engines!(concurrent_sends_and_reads);
