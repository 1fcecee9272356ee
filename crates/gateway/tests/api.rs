//! The server HTTP API: every route needs the bearer key (401 without it or with a
//! wrong one, and nothing happens); without a configured key the API does not exist
//! (404). With the key: users are created and renamed, messages sent on a user's
//! behalf are delivered live (across nodes), stored and counted as unread, history is
//! read and cleared, and a user is disconnected everywhere with their sessions revoked.

mod common;

use serde_json::{json, Value};

use common::*;

const SYSTEM_ID: &str = "system-notices";

fn message_from_json(v: &Value) -> Message {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("not a message ({e}): {v}"))
}

/// Every route, with a plausible body: (method, path, body).
fn routes(bob: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        (
            "POST",
            "/api/v1/messages".into(),
            Some(json!({"from": SYSTEM_ID, "to": bob, "body": "unauthorized"})),
        ),
        (
            "GET",
            format!("/api/v1/conversations/{SYSTEM_ID}/{bob}/messages?limit=10"),
            None,
        ),
        (
            "DELETE",
            format!("/api/v1/conversations/{SYSTEM_ID}/{bob}"),
            None,
        ),
        (
            "PUT",
            format!("/api/v1/users/{SYSTEM_ID}"),
            Some(json!({"name": "Unauthorized"})),
        ),
        ("POST", format!("/api/v1/users/{bob}/disconnect"), None),
    ]
}

async fn api_routes(engine: Engine) {
    let nodes = if engine == Engine::Redis { 2 } else { 1 };
    let cluster = Cluster::start(engine, nodes, NO_RATE_LIMIT);
    let api_node = cluster.addr(0);
    // Bob is connected on both nodes.
    let mut bob = guest(&cluster.url(cluster.other(1)), "bob").await;
    let bob_id = bob.user_id().to_string();
    let bob_session = bob.session().to_string();
    let mut bob2 = device(&cluster.url(0), &bob_session).await;

    // No key, a wrong key: 401 on every route, and nothing happens.
    for (method, path, body) in routes(&bob_id) {
        for key in [None, Some("wrong-key"), Some(&API_KEY[..API_KEY.len() - 1])] {
            let (status, reply) = api(api_node, method, &path, key, body.clone()).await;
            assert_eq!(status, 401, "{method} {path} with key {key:?}: {reply}");
        }
    }
    bob.ping().await.expect("bob still connected");
    bob2.ping().await.expect("bob2 still connected");
    let (status, reply) = api(
        api_node,
        "POST",
        "/api/v1/messages",
        Some(API_KEY),
        Some(json!({"from": SYSTEM_ID, "to": bob_id, "body": "before the user exists"})),
    )
    .await;
    assert_eq!(
        status, 404,
        "the unauthorized PUT created nobody: sending from them is not_found: {reply}"
    );

    // PUT creates the user.
    let (status, user) = api(
        api_node,
        "PUT",
        &format!("/api/v1/users/{SYSTEM_ID}"),
        Some(API_KEY),
        Some(json!({"name": "System Notices"})),
    )
    .await;
    assert_eq!(status, 200, "PUT user: {user}");
    assert_eq!(user, json!({"id": SYSTEM_ID, "name": "System Notices"}));

    // POST a message from them to Bob (connected on the other node): delivered live.
    let nonce = uuid::Uuid::new_v4().to_string();
    let send_body =
        json!({"from": SYSTEM_ID, "to": bob_id, "body": "your order shipped", "nonce": nonce});
    let (status, reply) = api(
        api_node,
        "POST",
        "/api/v1/messages",
        Some(API_KEY),
        Some(send_body.clone()),
    )
    .await;
    assert_eq!(status, 201, "POST message: {reply}");
    let m1 = message_from_json(&reply);
    assert_eq!(
        (m1.from.as_str(), m1.to.as_str(), m1.body.as_str()),
        (SYSTEM_ID, bob_id.as_str(), "your order shipped")
    );
    assert_eq!(
        expect_message(&mut bob, "bob gets the API message").await,
        m1
    );
    assert_eq!(
        expect_message(&mut bob2, "bob2 gets the API message").await,
        m1
    );
    // The same nonce again: the same message, not a second one.
    let (status, reply) = api(
        api_node,
        "POST",
        "/api/v1/messages",
        Some(API_KEY),
        Some(send_body),
    )
    .await;
    assert_eq!(status, 201, "retried POST message: {reply}");
    assert_eq!(message_from_json(&reply), m1, "same nonce → same message");
    let (status, reply) = api(
        api_node,
        "POST",
        "/api/v1/messages",
        Some(API_KEY),
        Some(json!({"from": SYSTEM_ID, "to": bob_id, "body": "second notice"})),
    )
    .await;
    assert_eq!(status, 201, "POST message: {reply}");
    let m2 = message_from_json(&reply);
    assert!(sid(&m2.id) > sid(&m1.id));
    assert_eq!(expect_message(&mut bob, "bob gets m2").await, m2);

    // History through the API and through the socket; unread for Bob.
    let history_path = format!("/api/v1/conversations/{SYSTEM_ID}/{bob_id}/messages");
    let (status, page) = api(api_node, "GET", &history_path, Some(API_KEY), None).await;
    assert_eq!(status, 200, "GET history: {page}");
    assert_eq!(page["more"], json!(false), "{page}");
    let messages: Vec<Message> =
        serde_json::from_value(page["messages"].clone()).expect("messages");
    assert_eq!(messages, vec![m1.clone(), m2.clone()], "stored once each");
    let (status, page) = api(
        api_node,
        "GET",
        &format!("{history_path}?limit=1"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["more"], json!(true), "{page}");
    assert_eq!(page["messages"], json!([m2]), "newest page first: {page}");
    let (status, page) = api(
        api_node,
        "GET",
        &format!("{history_path}?limit=1&before={}", m2.id),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"], json!([m1]), "{page}");
    assert_eq!(page["more"], json!(false), "{page}");
    // Either order of the two users names the same conversation.
    let (status, page) = api(
        api_node,
        "GET",
        &format!("/api/v1/conversations/{bob_id}/{SYSTEM_ID}/messages"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["messages"], json!([m1, m2]), "{page}");

    let (history, _) = bob.history(SYSTEM_ID, None, 50).await.expect("history");
    assert_eq!(history, vec![m1.clone(), m2.clone()]);
    let item = conversation_with(&mut bob, SYSTEM_ID, "bob's conversations").await;
    assert_eq!(item.unread, 2, "API messages count as unread: {item:#?}");
    assert_eq!(item.peer.name, "System Notices");
    assert_eq!(item.last.as_ref(), Some(&m2));
    let bob3 = device(&cluster.url(0), &bob_session).await;
    let unread = &bob3.welcome().unread;
    assert!(
        unread
            .iter()
            .any(|u| u.peer.id == SYSTEM_ID && u.count == 2 && u.last == m2),
        "welcome.unread lists the API sender: {unread:#?}"
    );
    bob3.close().await;

    // Renaming shows up for Bob.
    let (status, user) = api(
        api_node,
        "PUT",
        &format!("/api/v1/users/{SYSTEM_ID}"),
        Some(API_KEY),
        Some(json!({"name": "Shop"})),
    )
    .await;
    assert_eq!(status, 200, "rename: {user}");
    assert_eq!(user, json!({"id": SYSTEM_ID, "name": "Shop"}));
    let item = conversation_with(&mut bob, SYSTEM_ID, "after the rename").await;
    assert_eq!(item.peer.name, "Shop");

    // DELETE clears the history.
    let (status, reply) = api(
        api_node,
        "DELETE",
        &format!("/api/v1/conversations/{SYSTEM_ID}/{bob_id}"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 204, "DELETE conversation: {reply}");
    assert_eq!(reply, Value::Null, "204 has no body");
    let (status, page) = api(api_node, "GET", &history_path, Some(API_KEY), None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page, json!({"messages": [], "more": false}));
    let (history, more) = bob.history(SYSTEM_ID, None, 50).await.expect("history");
    assert_eq!((history, more), (vec![], false), "bob's history is cleared");

    // Disconnect: both of Bob's sockets close with 4001, his session is revoked.
    let (status, reply) = api(
        api_node,
        "POST",
        &format!("/api/v1/users/{bob_id}/disconnect"),
        Some(API_KEY),
        None,
    )
    .await;
    assert_eq!(status, 204, "disconnect: {reply}");
    for (who, client) in [
        ("bob (other node)", &mut bob),
        ("bob2 (API node)", &mut bob2),
    ] {
        match client.connection().wait_closed(WAIT).await {
            Ok(code) => assert_eq!(code, Some(close::UNAUTHORIZED), "{who}: close code"),
            Err(frames) => panic!("{who}: not closed within {WAIT:?}; frames: {frames:#?}"),
        }
    }
    for i in 0..cluster.nodes.len() {
        assert_refused(
            &cluster.url(i),
            Credential::Session(bob_session.clone()),
            &format!("resuming bob's revoked session on node {i}"),
        )
        .await;
    }
}

both_engines!(api_routes);

/// Without `CHAT_API__KEY` the API does not exist: 404 on every route, key or not.
#[tokio::test]
async fn api_unset_is_not_found() {
    let node = Gateway::start(&[
        ("CHAT_SERVER__NODE_ID", "gw-nokey"),
        ("CHAT_AUTH__GUESTS", "true"),
    ]);
    let mut bob = guest(&node.ws_url(), "bob").await;
    let bob_id = bob.user_id().to_string();
    for (method, path, body) in routes(&bob_id) {
        for key in [None, Some(API_KEY), Some("")] {
            let (status, reply) = api(node.addr, method, &path, key, body.clone()).await;
            assert_eq!(status, 404, "{method} {path} with key {key:?}: {reply}");
        }
    }
    bob.ping().await.expect("bob was not disconnected");
    let (history, _) = bob.history(SYSTEM_ID, None, 10).await.expect("history");
    assert!(history.is_empty(), "nothing was sent: {history:?}");
}
