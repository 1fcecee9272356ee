//! The caps checked at the WebSocket upgrade: sockets per client address (429),
//! sockets that have not completed `hello` (503), sign-ins per address (429), each
//! counted in `chat_admission_refusals_total{reason}`; `X-Forwarded-For` names the
//! client only when the peer is a trusted proxy.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/ws` (with `X-Forwarded-For: forwarded` if given): the socket, or the
/// refusal's HTTP status.
async fn open(url: &str, forwarded: Option<&str>) -> Result<Ws, u16> {
    let mut request = url.into_client_request().expect("ws request");
    if let Some(f) = forwarded {
        request
            .headers_mut()
            .insert("X-Forwarded-For", f.parse().expect("header"));
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("upgrade in time")
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

async fn refusals(cluster: &Cluster, reason: &str) -> f64 {
    let (status, text) = http(cluster.addr(0), "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    metric(
        &text,
        &format!("chat_admission_refusals_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

async fn hello(ws: &mut Ws) {
    let hello = serde_json::json!({"type":"hello","username": unique_name("adm")});
    ws.send(Message::text(hello.to_string()))
        .await
        .expect("hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_per_address_are_capped() {
    let cluster = Cluster::single(
        Engine::Memory,
        &[("CHAT_LIMITS__MAX_CONNECTIONS_PER_IP", "3")],
    );
    let url = cluster.url(0);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut ws = open(&url, None).await.expect("within the cap");
        hello(&mut ws).await;
        held.push(ws);
    }
    assert_eq!(open(&url, None).await.err(), Some(429), "a 4th socket");
    assert_eq!(refusals(&cluster, "per_ip").await, 1.0);
    // A closed socket frees its place.
    let mut first = held.remove(0);
    first.close(None).await.expect("close");
    drop(first);
    eventually("a place is free again", WAIT, || async {
        open(&url, None).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_before_hello_are_capped() {
    let cluster = Cluster::single(
        Engine::Memory,
        &[("CHAT_LIMITS__MAX_SOCKETS_BEFORE_HELLO", "2")],
    );
    let url = cluster.url(0);
    let mut a = open(&url, None).await.expect("1st");
    let _b = open(&url, None).await.expect("2nd");
    assert_eq!(
        open(&url, None).await.err(),
        Some(503),
        "a 3rd silent socket"
    );
    assert_eq!(refusals(&cluster, "before_hello").await, 1.0);
    // Once one signs in, its place before hello is free (it stays connected).
    hello(&mut a).await;
    eventually("a place before hello is free", WAIT, || async {
        open(&url, None).await.ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_per_address_are_rate_limited() {
    let cluster = Cluster::single(
        Engine::Memory,
        &[
            ("CHAT_LIMITS__SIGN_INS_PER_IP_PER_SECOND", "1"),
            ("CHAT_LIMITS__SIGN_INS_PER_IP_BURST", "3"),
        ],
    );
    let url = cluster.url(0);
    for i in 0..3 {
        let ws = open(&url, None)
            .await
            .unwrap_or_else(|s| panic!("sign-in {i}: {s}"));
        drop(ws);
    }
    assert_eq!(
        open(&url, None).await.err(),
        Some(429),
        "a 4th sign-in at once"
    );
    assert_eq!(refusals(&cluster, "sign_in").await, 1.0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    open(&url, None)
        .await
        .expect("a token is back after a second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
    let cap = ("CHAT_LIMITS__MAX_CONNECTIONS_PER_IP", "1");
    let trusting = Cluster::single(
        Engine::Memory,
        &[cap, ("CHAT_SERVER__TRUSTED_PROXIES", "127.0.0.0/8,::1")],
    );
    let url = trusting.url(0);
    let _one = open(&url, Some("203.0.113.1")).await.expect("client 1");
    let _two = open(&url, Some("203.0.113.2"))
        .await
        .expect("client 2: another address");
    assert_eq!(
        open(&url, Some("203.0.113.1")).await.err(),
        Some(429),
        "client 1 again"
    );

    // Without trusted proxies the header is the client's word: ignored.
    let plain = Cluster::single(Engine::Memory, &[cap]);
    let url = plain.url(0);
    let _one = open(&url, Some("203.0.113.1")).await.expect("first");
    assert_eq!(
        open(&url, Some("203.0.113.2")).await.err(),
        Some(429),
        "same peer"
    );
}
