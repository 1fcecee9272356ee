//! Redis answers but refuses writes (out of memory: `maxmemory` reached with the
//! `noeviction` policy): a send answers `unavailable` (never `internal`, never an
//! ack), `/readyz` is 503 while it lasts and 200 again once writes succeed, and the
//! connections that stayed open deliver again.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_memory_answers_unavailable_and_flips_readyz() {
    let cluster = Cluster::start(Engine::Redis, 1, NO_RATE_LIMIT);
    let redis = cluster.redis.as_ref().expect("redis");
    let node = cluster.addr(0);
    let mut alice = guest(&cluster.url(0), "alice").await;
    let mut bob = guest(&cluster.url(0), "bob").await;
    let bob_id = bob.user_id().to_string();
    assert_eq!(get_status(node, "/readyz").await, 200);

    let set = |k: &str, v: &str| {
        let reply = redis.command(&["CONFIG", "SET", k, v]);
        assert!(
            reply.as_deref().is_some_and(|r| r.starts_with("+OK")),
            "{reply:?}"
        );
    };
    set("maxmemory-policy", "noeviction");
    set("maxmemory", "1");
    match alice.send(&bob_id, "during the refusal").await {
        Err(ClientError::Server {
            code: ErrorCode::Unavailable,
            ..
        }) => {}
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(
        get_status(node, "/readyz").await,
        503,
        "not ready while OOM"
    );

    set("maxmemory", "0");
    assert_eq!(
        get_status(node, "/readyz").await,
        200,
        "ready once writes succeed"
    );
    let sent = alice.send(&bob_id, "after").await.expect("send after");
    let got = expect_message(&mut bob, "the message after the refusal").await;
    assert_eq!(got, sent);
    let (history, _) = bob.history(alice.user_id(), None, 10).await.unwrap();
    let bodies: Vec<&str> = history.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies, ["after"], "the refused send was not stored");
}
