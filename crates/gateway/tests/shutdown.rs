//! Graceful shutdown: on SIGTERM a node closes its WebSockets with 1001 and exits 0
//! within 10 s; on Redis the client resumes on another node with session and cursor.

mod common;

use std::time::Duration;

use common::*;

async fn sigterm(engine: Engine) {
    let nodes = if engine == Engine::Redis { 2 } else { 1 };
    let mut cluster = Cluster::start(engine, nodes, &[]);
    let addr = cluster.addr(0);
    eventually("/readyz 200", WAIT, || async move {
        (get_status(addr, "/readyz").await == 200).then_some(())
    })
    .await;
    assert_eq!(get_status(addr, "/healthz").await, 200);

    let mut alice = guest(&cluster.url(0), "alice").await;
    let mut bob = guest(&cluster.url(0), "bob").await;
    let bob_id = bob.user_id().to_string();
    let m = alice.send(&bob_id, "before shutdown").await.expect("send");
    assert_eq!(expect_message(&mut bob, "message before shutdown").await, m);
    let bob_state = bob.resume_state();

    cluster.nodes[0].signal(15);
    for (who, client) in [("alice", &mut alice), ("bob", &mut bob)] {
        let code = client
            .connection()
            .wait_closed(Duration::from_secs(10))
            .await;
        assert_eq!(
            code,
            Ok(Some(close::GOING_AWAY)),
            "{who}'s close code on SIGTERM"
        );
    }
    let status = tokio::task::block_in_place(|| cluster.nodes[0].wait(Duration::from_secs(10)));
    assert_eq!(
        status,
        Some(Some(0)),
        "exit code 0 within 10 s\n{}",
        cluster.logs()
    );

    if engine == Engine::Redis {
        // Reconnect elsewhere with session and cursor: nothing lost in between.
        let m2 = Client::connect(
            &cluster.url(1),
            Credential::Session(alice.session().into()),
            None,
        )
        .await
        .expect("alice on node B")
        .send(&bob_id, "while bob was reconnecting")
        .await
        .expect("send");
        let mut bob = Client::resume(&cluster.url(1), bob_state)
            .await
            .expect("bob resumes on node B");
        assert!(bob.welcome().recovered);
        assert_eq!(bob.user_id(), bob_id);
        assert_eq!(
            expect_message(&mut bob, "the message sent while away").await,
            m2
        );
    }
}

both_engines!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    sigterm
);
