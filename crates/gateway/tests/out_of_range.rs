//! Protocol 1.1, "Limits and bad input": cursors and ids that are well-formed but out
//! of range never answer `internal` nor close 1011. `history before:"0"` is an empty
//! page (socket and API), and a `hello.last_seen` beyond every event (the largest
//! stream id) signs in with `recovered:false` — on both engines.

mod common;

use common::*;

const MAX_ID: &str = "18446744073709551615-18446744073709551615";

async fn out_of_range(engine: Engine) {
    let cluster = Cluster::single(engine, NO_RATE_LIMIT);
    let url = cluster.url(0);
    let mut alice = guest(&url, "alice").await;
    let mut bob = guest(&url, "bob").await;
    let alice_id = alice.user_id().to_string();
    let bob_id = bob.user_id().to_string();
    let sent = alice.send(&bob_id, "hello").await.expect("send");
    expect_message(&mut bob, "bob's copy").await;

    for before in ["0", "0-0"] {
        let (page, more) = alice
            .history(&bob_id, Some(before), 50)
            .await
            .unwrap_or_else(|e| panic!("history before {before}: {e}"));
        assert!(page.is_empty() && !more, "before {before}: {page:?} {more}");
    }
    let (page, _) = alice
        .history(&bob_id, Some(MAX_ID), 50)
        .await
        .expect("history before the largest id");
    assert_eq!(
        page,
        vec![sent.clone()],
        "a before above every id: everything"
    );

    let path = format!("/api/v1/conversations/{alice_id}/{bob_id}/messages?before=0");
    let (status, body) = api(cluster.addr(0), "GET", &path, Some(API_KEY), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["messages"], serde_json::json!([]), "{body}");
    assert_eq!(body["more"], false, "{body}");

    // A cursor beyond every event: a welcome without recovery, not a 1011.
    let session = bob.session().to_string();
    let resumed = Client::connect(&url, Credential::Session(session), Some(MAX_ID.into()))
        .await
        .expect("sign-in with a cursor beyond every event");
    assert!(!resumed.welcome().recovered, "{:?}", resumed.welcome());
    let mut resumed = resumed;
    resumed.ping().await.expect("the connection stays up");
    // And the connection works: the next message arrives.
    let next = alice.send(&bob_id, "after").await.expect("send");
    assert_eq!(
        expect_message(&mut resumed, "live after resume").await,
        next
    );
}

both_engines!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    out_of_range
);
