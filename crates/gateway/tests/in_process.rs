//! A node started from the library inside the test's process (`chat_gateway::start`):
//! it serves the same routes and sockets as the binary, and `Node::stop` shuts it
//! down in the binary's order (sockets closed with 1001, then the listener gone).

mod common;

use std::time::Duration;

use common::*;

async fn chats_then_stops(engine: Engine) {
    let redis = (engine == Engine::Redis).then(RedisServer::start);
    let node = in_process_node(redis.as_ref().map(RedisServer::url).as_deref()).await;
    let addr = node.addr();
    let url = format!("ws://{addr}/ws");
    eventually("/readyz 200", WAIT, || async move {
        (get_status(addr, "/readyz").await == 200).then_some(())
    })
    .await;

    let mut alice = guest(&url, "alice").await;
    let alice_id = alice.user_id().to_string();
    let mut bob = guest(&url, "bob").await;
    let bob_id = bob.user_id().to_string();
    let m = alice.send(&bob_id, "in process").await.expect("send");
    assert_eq!(expect_message(&mut bob, "bob gets the message").await, m);
    assert_eq!(expect_message(&mut alice, "alice's own copy").await, m);
    let path = format!("/api/v1/conversations/{alice_id}/{bob_id}/messages");
    let (status, body) = api(addr, "GET", &path, Some(API_KEY), None).await;
    assert_eq!(status, 200, "the server API is routed: {body}");
    assert!(body.to_string().contains("in process"), "{body}");

    let stopping = tokio::spawn(node.stop());
    for (who, client) in [("alice", &mut alice), ("bob", &mut bob)] {
        let code = client
            .connection()
            .wait_closed(Duration::from_secs(10))
            .await;
        assert_eq!(code, Ok(Some(close::GOING_AWAY)), "{who}'s close code");
    }
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the node stops within 10 s")
        .expect("the stop task")
        .expect("the node stops cleanly");
    assert_eq!(
        get_status(addr, "/healthz").await,
        0,
        "nothing listens any more"
    );
}

both_engines!(chats_then_stops);
