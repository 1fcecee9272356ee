//! One send policy for both ways in: the same send (peer, body, nonce) is accepted by
//! the socket exactly when the HTTP API accepts it, and refused with the same code
//! (the API's status being that code's), so the two paths cannot drift apart.

mod common;

use chat_client::ClientError;
use chat_protocol::{ClientFrame, ErrorCode, ServerFrame, MAX_NONCE};
use serde_json::{json, Value};

use common::*;

/// `server.max_body` on the test node: small, so the limit is cheap to cross.
const MAX_BODY: usize = 20;

/// What one path answered: the message id, or the refusal's code.
type Outcome = Result<String, ErrorCode>;

/// A send to try on both paths: to, body, nonce, and the expected verdict.
type Case<'a> = (&'a str, &'a str, Option<&'a str>, Result<(), ErrorCode>);

fn code_of(v: &Value) -> ErrorCode {
    serde_json::from_value(v["error"]["code"].clone())
        .unwrap_or_else(|e| panic!("not an API error ({e}): {v}"))
}

fn http_status(code: ErrorCode) -> u16 {
    match code {
        ErrorCode::BadRequest => 400,
        ErrorCode::Unauthorized => 401,
        ErrorCode::Forbidden => 403,
        ErrorCode::NotFound => 404,
        ErrorCode::TooLarge => 413,
        ErrorCode::RateLimited => 429,
        ErrorCode::Unavailable => 503,
        ErrorCode::Internal => 500,
    }
}

async fn socket_send(client: &mut Client, to: &str, body: &str, nonce: Option<&str>) -> Outcome {
    let frame = ClientFrame::Send {
        reference: None,
        to: to.to_string(),
        body: body.to_string(),
        nonce: nonce.map(str::to_string),
    };
    match client.request(frame).await {
        Ok(ServerFrame::Ack { message, .. }) => Ok(message.id),
        Err(ClientError::Server { code, .. }) => Err(code),
        other => panic!("send to {to:?}: unexpected reply {other:?}"),
    }
}

async fn api_send(
    addr: std::net::SocketAddr,
    from: &str,
    to: &str,
    body: &str,
    nonce: Option<&str>,
) -> Outcome {
    let mut request = json!({"from": from, "to": to, "body": body});
    if let Some(n) = nonce {
        request["nonce"] = json!(n);
    }
    let (status, reply) = api(
        addr,
        "POST",
        "/api/v1/messages",
        Some(API_KEY),
        Some(request),
    )
    .await;
    if status == 201 {
        return Ok(reply["id"].as_str().expect("message id").to_string());
    }
    let code = code_of(&reply);
    assert_eq!(status, http_status(code), "status of {code}: {reply}");
    Err(code)
}

async fn same_policy(engine: Engine) {
    let max_body = MAX_BODY.to_string();
    let env = [
        ("CHAT_LIMITS__SEND_PER_SECOND", "100000"),
        ("CHAT_LIMITS__SEND_BURST", "100000"),
        ("CHAT_SERVER__MAX_BODY", max_body.as_str()),
    ];
    let cluster = Cluster::single(engine, &env);
    let addr = cluster.addr(0);
    let mut alice = guest(&cluster.url(0), "alice").await;
    let bob = guest(&cluster.url(0), "bob").await;
    let (alice_id, bob_id) = (alice.user_id().to_string(), bob.user_id().to_string());

    let longest_nonce = "n".repeat(MAX_NONCE);
    let too_long_nonce = "n".repeat(MAX_NONCE + 1);
    let wide_nonce = "é".repeat(MAX_NONCE);
    let full_body = "é".repeat(MAX_BODY);
    let long_body = "é".repeat(MAX_BODY + 1);
    // (to, body, nonce, expected). The same nonce is sent on both paths: the socket's
    // and the API's nonces live in different namespaces, so both are stored.
    let cases: Vec<Case<'_>> = vec![
        (&bob_id, "hello", None, Ok(())),
        (&bob_id, "hello", Some("n"), Ok(())),
        (&bob_id, "hello", Some(&longest_nonce), Ok(())),
        (&bob_id, "hello", Some(&wide_nonce), Ok(())),
        (&bob_id, &full_body, None, Ok(())),
        (&bob_id, " padded ", Some("n-x_y.z:1"), Ok(())),
        ("not a user id", "hello", None, Err(ErrorCode::BadRequest)),
        ("", "hello", None, Err(ErrorCode::BadRequest)),
        (&alice_id, "to myself", None, Err(ErrorCode::BadRequest)),
        (&bob_id, "", None, Err(ErrorCode::BadRequest)),
        (&bob_id, " \n\t", None, Err(ErrorCode::BadRequest)),
        (&bob_id, &long_body, None, Err(ErrorCode::TooLarge)),
        (&bob_id, "hello", Some(""), Err(ErrorCode::BadRequest)),
        (
            &bob_id,
            "hello",
            Some(&too_long_nonce),
            Err(ErrorCode::BadRequest),
        ),
        (
            &bob_id,
            "hello",
            Some("with space"),
            Err(ErrorCode::BadRequest),
        ),
        (
            &bob_id,
            "hello",
            Some("tab\there"),
            Err(ErrorCode::BadRequest),
        ),
        (
            &bob_id,
            "hello",
            Some("nbsp\u{a0}"),
            Err(ErrorCode::BadRequest),
        ),
        (&bob_id, "hello", Some(" "), Err(ErrorCode::BadRequest)),
        ("nobody-here", "hello", None, Err(ErrorCode::NotFound)),
    ];
    for (i, (to, body, nonce, expected)) in cases.into_iter().enumerate() {
        let nonce = nonce.map(str::to_string);
        let socket = socket_send(&mut alice, to, body, nonce.as_deref()).await;
        let http = api_send(addr, &alice_id, to, body, nonce.as_deref()).await;
        let what = format!("case {i}: to {to:?}, body {body:?}, nonce {nonce:?}");
        assert_eq!(socket.clone().map(|_| ()), expected, "socket, {what}");
        assert_eq!(http.clone().map(|_| ()), expected, "API, {what}");
        if let (Ok(a), Ok(b)) = (&socket, &http) {
            assert_ne!(a, b, "two sends, two messages: {what}");
        }
    }

    // The nonce makes either path idempotent: a retry returns the stored message.
    let first = socket_send(&mut alice, &bob_id, "once", Some("retry-s")).await;
    let again = socket_send(&mut alice, &bob_id, "once", Some("retry-s")).await;
    assert!(
        first.is_ok() && first == again,
        "socket retry: {first:?} {again:?}"
    );
    let first = api_send(addr, &alice_id, &bob_id, "once", Some("retry-a")).await;
    let again = api_send(addr, &alice_id, &bob_id, "once", Some("retry-a")).await;
    assert!(
        first.is_ok() && first == again,
        "API retry: {first:?} {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_and_api_apply_one_send_policy_memory() {
    same_policy(Engine::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_and_api_apply_one_send_policy_redis() {
    same_policy(Engine::Redis).await;
}
