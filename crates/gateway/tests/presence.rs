//! Presence: a user is online while any of their connections is open anywhere in the
//! cluster. Transitions reach conversation partners and watchers; closing one of two
//! tabs is not a transition; a SIGKILLed node's users go offline within 30 s.

mod common;

use std::time::Duration;

use common::*;

/// How long "no offline event" is watched for after closing one of two tabs.
const QUIET: Duration = Duration::from_millis(1500);

fn directory_entry(items: &[chat_protocol::UserInfo], id: &str) -> chat_protocol::UserInfo {
    items
        .iter()
        .find(|u| u.id == id)
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in the directory answer {items:#?}"))
}

both_engines!(online_while_any_tab_is_open);

async fn online_while_any_tab_is_open(engine: Engine) {
    let nodes = if engine == Engine::Redis { 2 } else { 1 };
    let cluster = Cluster::start(engine, nodes, NO_RATE_LIMIT);

    // Alice's first tab on node A; Bob (on node B) becomes her partner.
    let mut alice1 = guest(&cluster.url(0), "alice").await;
    let alice_id = alice1.user_id().to_string();
    let alice_name = alice1.welcome().user.name.clone();
    let alice_session = alice1.session().to_string();
    let mut bob = guest(&cluster.url(cluster.other(1)), "bob").await;
    let bob_id = bob.user_id().to_string();
    let m = alice1.send(&bob_id, "hi bob").await.expect("send");
    assert_eq!(expect_message(&mut bob, "bob gets the message").await, m);

    // Carol (node A) watches Alice: she is told Alice's presence at once.
    let mut carol = guest(&cluster.url(0), "carol").await;
    watch(&mut carol, &[&alice_id]).await;
    let (online, _) =
        expect_presence_within(&mut carol, &alice_id, WAIT, "carol's watch answer").await;
    assert!(online, "carol sees alice online");

    // Alice's second tab, on node B.
    let alice2 = device(&cluster.url(cluster.other(1)), &alice_session).await;

    let item = conversation_with(&mut bob, &alice_id, "bob's conversations").await;
    assert!(item.peer.online, "bob sees alice online: {item:#?}");
    let found = bob.users(&alice_name, 10).await.expect("users");
    assert!(
        directory_entry(&found, &alice_id).online,
        "directory: online"
    );

    // Closing one tab is not a transition.
    alice1.close().await;
    let offline = |f: &ServerFrame| matches!(f, ServerFrame::Presence { user, online: false, .. } if *user == alice_id);
    tokio::join!(
        expect_no_frame(&mut bob, QUIET, "bob after one tab closed", offline),
        expect_no_frame(&mut carol, QUIET, "carol after one tab closed", offline),
    );
    let item = conversation_with(&mut bob, &alice_id, "bob's conversations").await;
    assert!(
        item.peer.online,
        "alice still online with one tab: {item:#?}"
    );
    let found = carol.users(&alice_name, 10).await.expect("users");
    assert!(
        directory_entry(&found, &alice_id).online,
        "directory: still online with one tab"
    );

    // Closing the last tab is: both get offline with last_seen_at.
    alice2.close().await;
    for (who, client) in [("bob", &mut bob), ("carol", &mut carol)] {
        let (online, last_seen_at) =
            expect_presence_within(client, &alice_id, WAIT, &format!("{who}: alice offline")).await;
        assert!(!online, "{who}: the transition is to offline");
        let at = last_seen_at.unwrap_or_else(|| panic!("{who}: offline without last_seen_at"));
        assert!(
            at.contains('T') && at.len() >= 20,
            "{who}: last_seen_at is a timestamp: {at:?}"
        );
    }
    let item = conversation_with(&mut bob, &alice_id, "bob's conversations").await;
    assert!(
        !item.peer.online,
        "alice offline in conversations: {item:#?}"
    );
    let found = bob.users(&alice_name, 10).await.expect("users");
    assert!(
        !directory_entry(&found, &alice_id).online,
        "directory: offline"
    );

    // Watching her now reports her offline, with last_seen_at.
    let mut dave = guest(&cluster.url(cluster.other(1)), "dave").await;
    watch(&mut dave, &[&alice_id]).await;
    let (online, last_seen_at) =
        expect_presence_within(&mut dave, &alice_id, WAIT, "dave's watch answer").await;
    assert!(!online, "dave sees alice offline");
    assert!(
        last_seen_at.is_some(),
        "offline presence carries last_seen_at"
    );

    // She comes back: online again for her partner and her watchers.
    let _alice = device(&cluster.url(0), &alice_session).await;
    for (who, client) in [
        ("bob", &mut bob),
        ("carol", &mut carol),
        ("dave", &mut dave),
    ] {
        let (online, _) =
            expect_presence_within(client, &alice_id, WAIT, &format!("{who}: alice back")).await;
        assert!(online, "{who}: the transition is to online");
    }
}

/// A node dies (SIGKILL, no cleanup): its users go offline within 30 s.
#[tokio::test]
async fn users_of_a_killed_node_go_offline() {
    let mut cluster = Cluster::start(Engine::Redis, 2, NO_RATE_LIMIT);
    let mut bob = guest(&cluster.url(0), "bob").await;
    let bob_id = bob.user_id().to_string();
    // Alice is connected only to the node that will die.
    let mut alice = guest(&cluster.url(1), "alice").await;
    let alice_id = alice.user_id().to_string();
    let alice_name = alice.welcome().user.name.clone();
    let m = alice.send(&bob_id, "about to vanish").await.expect("send");
    assert_eq!(expect_message(&mut bob, "bob gets the message").await, m);
    let item = conversation_with(&mut bob, &alice_id, "before the kill").await;
    assert!(item.peer.online, "alice online before the kill: {item:#?}");

    let killed_at = std::time::Instant::now();
    cluster.nodes[1].kill();
    let (online, last_seen_at) = expect_presence_within(
        &mut bob,
        &alice_id,
        Duration::from_secs(35),
        "alice offline after her node was killed",
    )
    .await;
    eprintln!("offline after {:?}", killed_at.elapsed());
    assert!(!online, "the transition is to offline");
    assert!(
        last_seen_at.is_some(),
        "offline presence carries last_seen_at"
    );
    assert!(
        killed_at.elapsed() <= Duration::from_secs(30),
        "offline within 30 s, took {:?}",
        killed_at.elapsed()
    );
    let found = bob.users(&alice_name, 10).await.expect("users");
    assert!(
        !directory_entry(&found, &alice_id).online,
        "directory shows alice offline: {found:#?}"
    );
    let item = conversation_with(&mut bob, &alice_id, "after the kill").await;
    assert!(
        !item.peer.online,
        "conversations show alice offline: {item:#?}"
    );
}
