//! The directory: `users {query, limit}` is a case-insensitive name-prefix search
//! that honours `limit` and carries each user's presence.

mod common;

use std::collections::BTreeMap;

use common::*;

async fn sign_in(url: &str, name: &str) -> Client {
    let client = Client::connect(url, Credential::Username(name.to_string()), None)
        .await
        .unwrap_or_else(|e| panic!("guest sign-in of {name}: {e}"));
    assert_eq!(client.welcome().user.name, name);
    client
}

/// id → (name, online)
fn by_id(items: &[chat_protocol::UserInfo]) -> BTreeMap<String, (String, bool)> {
    items
        .iter()
        .map(|u| (u.id.clone(), (u.name.clone(), u.online)))
        .collect()
}

async fn prefix_search(engine: Engine) {
    let nodes = if engine == Engine::Redis { 2 } else { 1 };
    let cluster = Cluster::start(engine, nodes, NO_RATE_LIMIT);
    let other = cluster.url(cluster.other(1));

    let alice = sign_in(&other, "Alice").await;
    let alicia = sign_in(&cluster.url(0), "alicia").await;
    let mut bob = sign_in(&cluster.url(0), "Bob").await;
    let alice_id = alice.user_id().to_string();
    let alicia_id = alicia.user_id().to_string();

    // Alicia goes offline; Bob waits until he is told so.
    watch(&mut bob, &[&alicia_id]).await;
    let (online, _) = expect_presence_within(&mut bob, &alicia_id, WAIT, "alicia online").await;
    assert!(online);
    alicia.close().await;
    let (online, _) = expect_presence_within(&mut bob, &alicia_id, WAIT, "alicia offline").await;
    assert!(!online);

    let expected: BTreeMap<String, (String, bool)> = [
        (alice_id.clone(), ("Alice".to_string(), true)),
        (alicia_id.clone(), ("alicia".to_string(), false)),
    ]
    .into_iter()
    .collect();
    for query in ["ali", "ALI", "Ali", "aLi"] {
        let items = bob.users(query, 20).await.expect("users");
        assert_eq!(items.len(), 2, "query {query:?}: exactly two: {items:#?}");
        assert_eq!(by_id(&items), expected, "query {query:?}");
    }
    let items = bob.users("alici", 20).await.expect("users");
    assert_eq!(
        by_id(&items),
        [(alicia_id.clone(), ("alicia".to_string(), false))]
            .into_iter()
            .collect(),
        "query \"alici\""
    );
    let items = bob.users("bo", 20).await.expect("users");
    assert_eq!(items.len(), 1, "{items:#?}");
    assert_eq!(
        (items[0].name.as_str(), items[0].online),
        ("Bob", true),
        "bob finds himself, online"
    );

    // `limit` is honoured.
    let items = bob.users("ali", 1).await.expect("users");
    assert_eq!(items.len(), 1, "limit 1: {items:#?}");
    assert!(
        expected.contains_key(&items[0].id),
        "limit 1 returns one of the matches: {items:#?}"
    );

    // A prefix is a prefix: no match in the middle of a name, and none at all.
    assert_eq!(bob.users("lice", 20).await.expect("users"), vec![]);
    assert_eq!(bob.users("zzz", 20).await.expect("users"), vec![]);
    drop(alice);
}

both_engines!(prefix_search);
