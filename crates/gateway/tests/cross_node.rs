//! Two nodes on one Redis: messages cross nodes both ways, every connection of both
//! participants gets them, and a retried send (same nonce, even from the other node
//! after a reconnect) is acked with the original message and stored once.

mod common;

use common::*;

#[tokio::test]
async fn messages_cross_nodes_and_reach_every_connection() {
    let cluster = Cluster::start(Engine::Redis, 2, &[]);
    let mut alice = guest(&cluster.url(0), "alice").await;
    let mut bob = guest(&cluster.url(1), "bob").await;
    let alice_id = alice.user_id().to_string();
    let bob_id = bob.user_id().to_string();
    // Alice's second device, on the other node.
    let mut alice2 = Client::connect(
        &cluster.url(1),
        Credential::Session(alice.session().into()),
        None,
    )
    .await
    .expect("alice's second connection");
    assert_eq!(alice2.user_id(), alice_id);
    assert_eq!(alice2.welcome().node, "gw-b");

    let m1 = alice
        .send(&bob_id, "hello bob, from node A")
        .await
        .expect("alice → bob");
    assert_eq!(
        (m1.from.as_str(), m1.to.as_str()),
        (alice_id.as_str(), bob_id.as_str())
    );
    assert_eq!(m1.body, "hello bob, from node A");
    assert_eq!(expect_message(&mut bob, "bob gets m1").await, m1);
    assert_eq!(
        expect_message(&mut alice2, "alice2 gets her own m1").await,
        m1
    );
    assert_eq!(
        expect_message(&mut alice, "the sending connection gets m1 too").await,
        m1
    );

    let m2 = bob
        .send(&alice_id, "hello alice, from node B")
        .await
        .expect("bob → alice");
    assert_eq!(
        m2.conversation, m1.conversation,
        "one conversation for both directions"
    );
    assert!(
        sid(&m2.id) > sid(&m1.id),
        "ids increase: {} then {}",
        m1.id,
        m2.id
    );
    assert_eq!(expect_message(&mut alice, "alice gets m2").await, m2);
    assert_eq!(expect_message(&mut alice2, "alice2 gets m2").await, m2);
    assert_eq!(expect_message(&mut bob, "bob gets his own m2").await, m2);

    // Bodies are stored and delivered exactly as sent.
    let odd = "<b>not html</b> & \"quotes\" \\ emoji 😀 \t\n  line two  ";
    let m3 = alice2.send(&bob_id, odd).await.expect("send odd body");
    assert_eq!(m3.body, odd);
    assert_eq!(expect_message(&mut bob, "bob gets m3").await.body, odd);

    let (history, more) = bob.history(&alice_id, None, 50).await.expect("history");
    assert!(!more);
    assert_eq!(history, vec![m1, m2, m3]);
}

#[tokio::test]
async fn retried_send_is_stored_and_delivered_once() {
    let cluster = Cluster::start(Engine::Redis, 2, &[]);
    let mut alice = guest(&cluster.url(0), "alice").await;
    let mut bob = guest(&cluster.url(1), "bob").await;
    let alice_id = alice.user_id().to_string();
    let bob_id = bob.user_id().to_string();

    let nonce = uuid::Uuid::new_v4().to_string();
    let first = alice
        .send_with_nonce(&bob_id, "exactly once", &nonce)
        .await
        .expect("first send");
    let retry = alice
        .send_with_nonce(&bob_id, "exactly once", &nonce)
        .await
        .expect("retry");
    assert_eq!(
        retry, first,
        "a retry on the same connection is acked with the original"
    );

    // The connection is lost before the ack arrived (as far as Alice knows): she
    // resumes on the other node and retries with the same nonce.
    let mut alice = alice
        .reconnect(&cluster.url(1))
        .await
        .expect("alice resumes on node B");
    assert_eq!(alice.welcome().node, "gw-b");
    let retry2 = alice
        .send_with_nonce(&bob_id, "exactly once", &nonce)
        .await
        .expect("retry after reconnect");
    assert_eq!(
        retry2, first,
        "a retry from the other node is acked with the original"
    );

    // A different nonce is a different message.
    let marker = alice.send(&bob_id, "marker").await.expect("marker");
    assert_ne!(marker.id, first.id);

    // Bob's raw frames: the retried message is delivered once, then the marker.
    let mut deliveries_of_first = 0;
    loop {
        let frame = tokio::time::timeout(WAIT, bob.next_raw())
            .await
            .unwrap_or_else(|_| panic!("bob: no marker within {WAIT:?}"));
        let RawFrame::Text(text) = frame else {
            panic!("bob's connection ended: {frame:?}")
        };
        let Ok(ServerFrame::Message { message, .. }) = serde_json::from_str(&text) else {
            continue;
        };
        if message.id == first.id {
            deliveries_of_first += 1;
            assert_eq!(message, first);
        } else {
            assert_eq!(message, marker, "unexpected message to bob");
            break;
        }
    }
    assert_eq!(
        deliveries_of_first, 1,
        "the retried message must be delivered once"
    );

    for (who, client, peer) in [("alice", &mut alice, &bob_id), ("bob", &mut bob, &alice_id)] {
        let (history, _) = client.history(peer, None, 100).await.expect("history");
        let bodies: Vec<&str> = history.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(
            bodies,
            ["exactly once", "marker"],
            "{who}'s history: stored once"
        );
        assert_eq!(history[0], first);
    }
}

/// Reads `n` message frames from a connection that sends nothing and checks the
/// stream a client sees: cursors strictly increase, no message twice.
async fn read_messages_raw(client: &mut Client, n: usize, what: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut last: Option<StreamId> = None;
    while ids.len() < n {
        let frame = tokio::time::timeout(WAIT, client.next_raw())
            .await
            .unwrap_or_else(|_| panic!("{what}: only {} of {n} messages", ids.len()));
        let RawFrame::Text(text) = frame else {
            panic!("{what}: connection ended: {frame:?}")
        };
        let v: serde_json::Value = serde_json::from_str(&text).expect("JSON frame");
        if v["type"] != "message" {
            continue;
        }
        let cursor = sid(v["cursor"].as_str().expect("cursor"));
        assert!(
            last.is_none_or(|prev| cursor > prev),
            "{what}: cursor {cursor} after {last:?}"
        );
        last = Some(cursor);
        let id = v["message"]["id"].as_str().expect("id").to_string();
        assert!(!ids.contains(&id), "{what}: message {id} twice");
        ids.push(id);
    }
    ids
}

/// Both sides send at once while each has a second tab on the sending node: the
/// sender's own copy comes back with the reply to the send while the peer's arrives
/// by pub/sub, and every connection still sees each message once, in cursor order.
#[tokio::test]
async fn concurrent_sends_reach_every_tab_once_in_order() {
    let limits = [
        ("CHAT_LIMITS__SEND_PER_SECOND", "1000"),
        ("CHAT_LIMITS__SEND_BURST", "1000"),
    ];
    let cluster = Cluster::start(Engine::Redis, 2, &limits);
    let mut alice = guest(&cluster.url(0), "alice").await;
    let mut bob = guest(&cluster.url(1), "bob").await;
    let alice_id = alice.user_id().to_string();
    let bob_id = bob.user_id().to_string();
    let tab = |client: &Client, node: usize| {
        let session = client.session().to_string();
        let url = cluster.url(node);
        async move {
            Client::connect(&url, Credential::Session(session), None)
                .await
                .expect("second tab")
        }
    };
    // Alice's second tab is on her own node (no other node has her: her copy is not
    // published); Bob's is on the other node (his copy is).
    let mut alice_tab = tab(&alice, 0).await;
    let mut bob_tab = tab(&bob, 0).await;

    const N: usize = 40;
    let (sent_by_alice, sent_by_bob) = tokio::join!(
        async {
            let mut ids = Vec::new();
            for i in 0..N {
                ids.push(alice.send(&bob_id, &format!("a{i}")).await.expect("a").id);
            }
            ids
        },
        async {
            let mut ids = Vec::new();
            for i in 0..N {
                ids.push(bob.send(&alice_id, &format!("b{i}")).await.expect("b").id);
            }
            ids
        }
    );
    let mut all: Vec<String> = sent_by_alice.iter().chain(&sent_by_bob).cloned().collect();
    all.sort_by_key(|id| sid(id));
    for (client, what) in [(&mut alice_tab, "alice's tab"), (&mut bob_tab, "bob's tab")] {
        let mut got = read_messages_raw(client, 2 * N, what).await;
        got.sort_by_key(|id| sid(id));
        assert_eq!(got, all, "{what}");
    }
    for (client, what) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        let mut got = Vec::new();
        while got.len() < 2 * N {
            got.push(expect_message(client, what).await.id);
        }
        got.sort_by_key(|id| sid(id));
        assert_eq!(got, all, "{what} gets every message, her own included");
    }
}
