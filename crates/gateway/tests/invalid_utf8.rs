//! Protocol 1.1: a text frame that is not valid UTF-8 closes the socket with 1007
//! (it used to end with no close code), before and after `hello`. The frame is
//! written raw: a WebSocket client library refuses to build such a text message.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// Opens `/ws`, optionally signs in as a guest, sends a text frame holding invalid
/// UTF-8 and returns the close code the server answers with.
async fn close_code_after_invalid_utf8(url: &str, sign_in: bool) -> Option<u16> {
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("upgrade in time")
        .expect("upgrade");
    if sign_in {
        let hello = serde_json::json!({"type":"hello","username": unique_name("utf")});
        ws.send(Message::text(hello.to_string()))
            .await
            .expect("hello");
        let welcome = ws.next().await.expect("a frame").expect("welcome");
        assert!(
            welcome.to_text().unwrap_or("").contains("welcome"),
            "{welcome:?}"
        );
    }
    let payload: &[u8] = b"{\"type\":\"ping\",\"ref\":\"\xff\xfe\"}";
    let frame = Frame::message(payload.to_vec(), OpCode::Data(Data::Text), true);
    ws.send(Message::Frame(frame))
        .await
        .expect("raw frame written");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no close within {WAIT:?}"),
            Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("socket ended without a close frame: {e}"),
            Ok(None) => panic!("socket ended without a close frame"),
        }
    }
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_1007() {
    let cluster = Cluster::single(Engine::Memory, NO_RATE_LIMIT);
    let url = cluster.url(0);
    assert_eq!(
        close_code_after_invalid_utf8(&url, false).await,
        Some(1007),
        "before hello"
    );
    assert_eq!(
        close_code_after_invalid_utf8(&url, true).await,
        Some(1007),
        "after hello"
    );
    // The node is fine: a new client signs in.
    guest(&url, "after").await;
}
