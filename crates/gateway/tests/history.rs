//! History paging and isolation: pages of at most `limit`, ascending within a page,
//! `more` until the oldest; nobody reads a conversation they are not part of.

mod common;

use std::collections::HashSet;

use common::*;

async fn pages_backwards(engine: Engine) {
    let cluster = Cluster::single(engine, NO_RATE_LIMIT);
    let url = cluster.url(0);
    let mut alice = guest(&url, "alice").await;
    let mut bob = guest(&url, "bob").await;
    let alice_id = alice.user_id().to_string();
    let bob_id = bob.user_id().to_string();

    let mut acked = Vec::new();
    for i in 0..250 {
        // Both directions, in one conversation.
        let m = if i % 3 == 2 {
            bob.send(&alice_id, &format!("n{i}")).await
        } else {
            alice.send(&bob_id, &format!("n{i}")).await
        };
        acked.push(m.expect("send"));
    }
    let acked_ids: Vec<String> = acked.iter().map(|m| m.id.clone()).collect();
    assert_increasing(&acked_ids, "acked ids");

    let mut pages = Vec::new();
    let mut before: Option<String> = None;
    for (want_len, want_more) in [(100, true), (100, true), (50, false)] {
        let (page, more) = alice
            .history(&bob_id, before.as_deref(), 100)
            .await
            .expect("history");
        let ids: Vec<String> = page.iter().map(|m| m.id.clone()).collect();
        assert_eq!(page.len(), want_len, "page {} length", pages.len());
        assert_eq!(more, want_more, "page {} more", pages.len());
        assert_increasing(&ids, "ids within a page");
        if let Some(b) = &before {
            assert!(
                sid(ids.last().expect("last")) < sid(b),
                "page older than `before`"
            );
        }
        before = page.first().map(|m| m.id.clone());
        pages.push(page);
    }
    let all: Vec<Message> = pages.into_iter().rev().flatten().collect();
    let distinct: HashSet<&str> = all.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(distinct.len(), 250, "all ids distinct");
    assert_eq!(
        all, acked,
        "the pages together are exactly the acked messages"
    );

    // The peer sees the same conversation; small limits and `before` in the middle.
    let (newest, more) = bob.history(&alice_id, None, 1).await.expect("history");
    assert_eq!(newest, vec![acked[249].clone()]);
    assert!(more);
    let (middle, more) = bob
        .history(&alice_id, Some(&acked[10].id), 5)
        .await
        .expect("history");
    assert_eq!(middle, acked[5..10].to_vec());
    assert!(more);
    let (oldest, more) = bob
        .history(&alice_id, Some(&acked[3].id), 100)
        .await
        .expect("history");
    assert_eq!(oldest, acked[..3].to_vec());
    assert!(!more);
}

both_engines!(pages_backwards);

/// Carol cannot read or write Alice and Bob's conversation by any id she can forge.
async fn outsiders_read_nothing(engine: Engine) {
    let cluster = Cluster::single(engine, &[]);
    let url = cluster.url(0);
    let mut alice = guest(&url, "alice").await;
    let bob = guest(&url, "bob").await;
    let mut carol = guest(&url, "carol").await;
    let alice_id = alice.user_id().to_string();
    let bob_id = bob.user_id().to_string();
    let carol_id = carol.user_id().to_string();
    let secret = alice.send(&bob_id, "for bob only").await.expect("send");
    let conversation = secret.conversation.clone();

    // With Alice's or Bob's id Carol gets her own (empty) conversation with them.
    for peer in [&alice_id, &bob_id] {
        let (messages, more) = carol
            .history(peer, None, 100)
            .await
            .expect("own conversation");
        assert!(
            messages.is_empty() && !more,
            "carol's conversation with {peer}: {messages:?}"
        );
    }
    // Strings shaped like conversation ids, or pairs of ids: refused.
    let forged = [
        conversation.clone(),
        chat_protocol::dm_conversation(&alice_id, &bob_id),
        format!("{alice_id}:{bob_id}"),
        format!("{bob_id}:{alice_id}"),
        format!("{carol_id}:{alice_id}:{bob_id}"),
        format!("dm:{alice_id}"),
        format!("conv:{{c:{alice_id}:{bob_id}}}"),
        format!("{alice_id}\u{0}{bob_id}"),
        "*".to_string(),
        String::new(),
    ];
    for with in &forged {
        let result = carol.history(with, None, 100).await;
        if let Ok((messages, _)) = &result {
            assert!(
                messages.iter().all(|m| m.conversation != conversation),
                "carol read alice–bob through with={with:?}"
            );
        }
        assert_code(
            result,
            &[ErrorCode::BadRequest, ErrorCode::NotFound],
            &format!("history with={with:?}"),
        );
        let sent = carol.send(with, "intrusion").await;
        assert_code(
            sent,
            &[ErrorCode::BadRequest, ErrorCode::NotFound],
            &format!("send to={with:?}"),
        );
    }
    assert_code(
        carol.send("no-such-user-0123456789", "hello?").await,
        &[ErrorCode::NotFound],
        "send to a user the cluster never saw",
    );
    assert_code(
        carol.send(&carol_id, "me").await,
        &[ErrorCode::BadRequest],
        "send to oneself",
    );

    let items = carol.conversations().await.expect("conversations");
    assert!(items.is_empty(), "carol has no conversations: {items:?}");
    // Nothing Carol did reached Alice's conversation with Bob.
    let (messages, _) = alice.history(&bob_id, None, 100).await.expect("history");
    assert_eq!(messages, vec![secret]);
}

both_engines!(outsiders_read_nothing);
