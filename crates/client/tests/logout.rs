//! `Client::logout` and `chat-cli`'s `/logout` (protocol 1.2): the session ends on
//! every node; a resume with it is refused with `unauthorized` and 4001.

mod common;

use chat_client::ResumeState;
use common::{both_engines, guest, Client, ClientError, Cluster, Engine, ErrorCode, NO_RATE_LIMIT};

/// A resume with this state is refused as a session that no longer exists.
async fn assert_refused(url: &str, state: ResumeState) {
    match Client::resume(url, state).await {
        Err(ClientError::Refused {
            code, close_code, ..
        }) => {
            assert_eq!(code, ErrorCode::Unauthorized);
            assert_eq!(close_code, Some(4001));
        }
        Err(e) => panic!("expected unauthorized, got {e}"),
        Ok(c) => panic!("the logged-out session resumed as {}", c.user_id()),
    }
}

async fn logout_ends_the_session(engine: Engine) {
    let cluster = Cluster::single(engine, NO_RATE_LIMIT);
    let url = cluster.url(0);
    let alice = guest(&url, "alice").await;
    let state = alice.resume_state();
    // Before the logout the session resumes (and that connection stays open).
    let again = Client::resume(&url, state.clone()).await.expect("resume");
    let code = alice.logout().await.map_err(|(_, e)| e).expect("logout");
    assert_eq!(code, Some(1000), "logged_out is followed by a normal close");
    assert_refused(&url, state).await;
    again.close().await;
}
both_engines!(logout_ends_the_session);

/// Logged out on one node, refused on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_holds_on_every_node() {
    let cluster = Cluster::start(Engine::Redis, 2, NO_RATE_LIMIT);
    let alice = guest(&cluster.url(0), "alice").await;
    let state = alice.resume_state();
    alice.logout().await.map_err(|(_, e)| e).expect("logout");
    assert_refused(&cluster.url(1), state).await;
}
