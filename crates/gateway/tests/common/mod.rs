//! Shared helpers of the gateway's integration tests: the testkit's cluster on either
//! engine (in-memory single node, or a real `redis-server` with N nodes) and
//! [`both_engines!`] to run a scenario on both; sign users in, wait for expected
//! frames with deadlines, talk plain HTTP, sign JWTs.
//!
//! Never a fixed port, never a sleep standing in for an event: every wait is a
//! deadline on the frame or state the test expects.

#![allow(dead_code, unused_imports, unused_macros)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use chat_client::{
    Client, ClientError, Connection, Credential, ErrorCode, Message, RawFrame, ServerFrame,
};
pub use chat_protocol::{close, ClientFrame, StreamId};
pub use chat_testkit::{eventually, Cluster, Engine, Gateway, RedisServer, API_KEY, JWT_SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Deadline for a frame the test expects.
pub const WAIT: Duration = Duration::from_secs(10);

/// Settings that let a test send as fast as it likes.
pub const NO_RATE_LIMIT: &[(&str, &str)] = &[
    ("CHAT_LIMITS__SEND_PER_SECOND", "100000"),
    ("CHAT_LIMITS__SEND_BURST", "100000"),
];

/// Runs an `async fn scenario(engine: Engine)` as two tests, `scenario::memory` and
/// `scenario::redis`. An optional test attribute replaces `#[tokio::test]`:
/// `both_engines!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] bad_input);`
macro_rules! both_engines {
    (#[$test:meta] $scenario:ident) => {
        mod $scenario {
            #[$test]
            async fn memory() {
                super::$scenario($crate::common::Engine::Memory).await;
            }

            #[$test]
            async fn redis() {
                super::$scenario($crate::common::Engine::Redis).await;
            }
        }
    };
    ($scenario:ident) => {
        both_engines!(
            #[tokio::test]
            $scenario
        );
    };
}
pub(crate) use both_engines;

/// A node in the test's own process, from the gateway library, on 127.0.0.1 with a
/// free port: the in-memory engine, or Redis at `redis_url`. It takes the settings
/// of [`Cluster`]'s nodes (guests, [`JWT_SECRET`], [`API_KEY`]) and no drain spread.
/// Its `/metrics` is empty (the process's metrics recorder is not its own), so tests
/// of metrics, logs, signals and the command line start processes; so do tests with
/// several nodes, which must share nothing but Redis.
pub async fn in_process_node(redis_url: Option<&str>) -> chat_gateway::Node {
    let mut settings = chat_gateway::config::Settings::default();
    settings.server.listen = "127.0.0.1:0".into();
    settings.server.drain_spread_secs = 0;
    settings.auth.guests = Some(true);
    settings.auth.jwt_secret = JWT_SECRET.into();
    settings.api.key = API_KEY.into();
    if let Some(url) = redis_url {
        settings.redis.url = url.into();
    }
    chat_gateway::start(settings)
        .await
        .expect("start an in-process node")
}

/// A unique, valid guest name with this prefix.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// Signs in a new guest (name made unique from `prefix`).
pub async fn guest(url: &str, prefix: &str) -> Client {
    let name = unique_name(prefix);
    match Client::connect(url, Credential::Username(name.clone()), None).await {
        Ok(client) => {
            assert_eq!(client.welcome().user.name, name, "guest name in welcome");
            client
        }
        Err(e) => panic!("guest sign-in of {name} on {url} failed: {e}"),
    }
}

/// Reads events until an `error` frame; panics on timeout. Returns (ref, code).
pub async fn expect_error(client: &mut Client, what: &str) -> (Option<String>, ErrorCode) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_event_timeout(left).await {
            Ok(Some(ServerFrame::Error {
                reference, code, ..
            })) => return (reference, code),
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error frame within {WAIT:?} after {what}"),
            Err(e) => panic!("connection failed waiting for the error after {what}: {e}"),
        }
    }
}

/// The next `message` event; panics with `what` on timeout.
pub async fn expect_message(client: &mut Client, what: &str) -> Message {
    match client.next_message(WAIT).await {
        Ok(m) => m,
        Err(e) => panic!("waiting for {what}: {e}"),
    }
}

/// The next `message` event sent by `from` (the client's own copies are skipped).
pub async fn expect_from(client: &mut Client, from: &str, what: &str) -> Message {
    loop {
        let m = expect_message(client, what).await;
        if m.from == from {
            return m;
        }
        assert_eq!(
            m.from,
            client.user_id(),
            "{what}: a message from a third party: {m:?}"
        );
    }
}

/// Asserts that the request failed with one of `codes`.
pub fn assert_code<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    codes: &[ErrorCode],
    what: &str,
) {
    match result {
        Err(ClientError::Server { code, .. }) if codes.contains(&code) => {}
        other => panic!("{what}: expected an error with code {codes:?}, got {other:?}"),
    }
}

/// Compares two stream ids numerically.
pub fn sid(id: &str) -> StreamId {
    StreamId::parse(id).unwrap_or_else(|| panic!("not a stream id: {id:?}"))
}

/// Asserts ids strictly increase.
pub fn assert_increasing(ids: &[String], what: &str) {
    for pair in ids.windows(2) {
        assert!(
            sid(&pair[0]) < sid(&pair[1]),
            "{what}: ids not strictly increasing: {} then {}",
            pair[0],
            pair[1]
        );
    }
}

/// Connects without sending `hello`.
pub async fn raw(url: &str) -> Connection {
    Connection::open(url, WAIT)
        .await
        .expect("websocket upgrade")
}

/// A plain HTTP/1.1 request; returns (status, body). Status 0 when the node does
/// not answer (connection refused, timeout): callers poll with `eventually`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(key) = bearer {
            req.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        let body = body.unwrap_or("");
        if !body.is_empty() || method != "GET" {
            req.push_str("Content-Type: application/json\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, rest) = text.split_once("\r\n\r\n")?;
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        Some((
            status,
            if chunked {
                dechunk(rest)
            } else {
                rest.to_string()
            },
        ))
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or((0, String::new()))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// `GET path` → status.
pub async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    http(addr, "GET", path, None, None).await.0
}

/// The value of a Prometheus counter or gauge (summed over label sets), if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if let Some(v) = value {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A JWT with `sub`, `name` and `exp` = now + `exp_in` seconds.
pub fn jwt(
    sub: &str,
    name: &str,
    exp_in: i64,
    alg: jsonwebtoken::Algorithm,
    secret: &str,
) -> String {
    let claims = serde_json::json!({
        "sub": sub, "name": name, "iat": now_secs(), "exp": now_secs() + exp_in,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign jwt")
}

/// base64url without padding (JWT segments).
pub fn b64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned `alg: none` token for `sub`.
pub fn alg_none_token(sub: &str, name: &str) -> String {
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = serde_json::json!({"sub": sub, "name": name, "exp": now_secs() + 3600});
    format!("{header}.{}.", b64url(claims.to_string().as_bytes()))
}

/// Asserts that connecting with `cred` is refused: `error` `unauthorized`, close 4001.
pub async fn assert_refused(url: &str, cred: Credential, what: &str) {
    match Client::connect(url, cred, None).await {
        Err(ClientError::Refused {
            code: ErrorCode::Unauthorized,
            close_code: Some(close::UNAUTHORIZED),
            ..
        }) => {}
        Err(e) => panic!("{what}: expected unauthorized + close 4001, got {e}"),
        Ok(c) => panic!("{what}: expected a refusal, got welcome {:?}", c.welcome()),
    }
}

// ---------------------------------------------------------------------------
// Helpers of the chat-feature tests (unread, typing, presence, directory, API,
// limits).
// ---------------------------------------------------------------------------

/// Reads events until one matches `pred` (others are collected); panics with `what`
/// and every frame seen when none does within `timeout`.
pub async fn expect_frame_within<F>(
    client: &mut Client,
    timeout: Duration,
    what: &str,
    mut pred: F,
) -> ServerFrame
where
    F: FnMut(&ServerFrame) -> bool,
{
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_event_timeout(left).await {
            Ok(Some(frame)) if pred(&frame) => return frame,
            Ok(Some(frame)) => seen.push(frame),
            Ok(None) => {
                panic!("{what}: no matching frame within {timeout:?}; frames seen: {seen:#?}")
            }
            Err(e) => panic!("{what}: connection failed ({e}); frames seen: {seen:#?}"),
        }
    }
}

/// [`expect_frame_within`] with the default deadline.
pub async fn expect_frame<F>(client: &mut Client, what: &str, pred: F) -> ServerFrame
where
    F: FnMut(&ServerFrame) -> bool,
{
    expect_frame_within(client, WAIT, what, pred).await
}

/// Reads events for `window` and panics if one matches `pred`. Returns the others.
pub async fn expect_no_frame<F>(
    client: &mut Client,
    window: Duration,
    what: &str,
    mut pred: F,
) -> Vec<ServerFrame>
where
    F: FnMut(&ServerFrame) -> bool,
{
    let deadline = Instant::now() + window;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return seen;
        }
        match client.next_event_timeout(left).await {
            Ok(Some(frame)) if pred(&frame) => {
                panic!("{what}: unexpected frame {frame:?}; frames before it: {seen:#?}")
            }
            Ok(Some(frame)) => seen.push(frame),
            Ok(None) => return seen,
            Err(e) => panic!("{what}: connection failed ({e}); frames seen: {seen:#?}"),
        }
    }
}

/// The next `read` event: (conversation, by, up_to, cursor).
pub async fn expect_read_event(
    client: &mut Client,
    what: &str,
) -> (String, String, String, Option<String>) {
    match expect_frame(client, what, |f| matches!(f, ServerFrame::Read { .. })).await {
        ServerFrame::Read {
            conversation,
            by,
            up_to,
            cursor,
        } => (conversation, by, up_to, cursor),
        _ => unreachable!(),
    }
}

/// The next `presence` event about `user`: (online, last_seen_at).
pub async fn expect_presence_within(
    client: &mut Client,
    user: &str,
    timeout: Duration,
    what: &str,
) -> (bool, Option<String>) {
    let frame = expect_frame_within(
        client,
        timeout,
        what,
        |f| matches!(f, ServerFrame::Presence { user: u, .. } if u == user),
    )
    .await;
    match frame {
        ServerFrame::Presence {
            online,
            last_seen_at,
            ..
        } => (online, last_seen_at),
        _ => unreachable!(),
    }
}

/// Sends `read {with, up_to}` (no reply expected).
pub async fn mark_read(client: &mut Client, with: &str, up_to: &str) {
    client
        .send_frame(&ClientFrame::Read {
            reference: None,
            with: with.to_string(),
            up_to: up_to.to_string(),
        })
        .await
        .expect("send read");
}

/// Sends `typing {to}` (no reply expected).
pub async fn send_typing(client: &mut Client, to: &str) {
    client
        .send_frame(&ClientFrame::Typing {
            reference: None,
            to: to.to_string(),
        })
        .await
        .expect("send typing");
}

/// Sends `watch {users}` (no reply expected).
pub async fn watch(client: &mut Client, users: &[&str]) {
    client
        .send_frame(&ClientFrame::Watch {
            reference: None,
            users: users.iter().map(|u| u.to_string()).collect(),
        })
        .await
        .expect("send watch");
}

/// The `conversations` item whose peer is `peer`; panics if there is none.
pub async fn conversation_with(
    client: &mut Client,
    peer: &str,
    what: &str,
) -> chat_protocol::ConversationItem {
    let items = client
        .conversations()
        .await
        .unwrap_or_else(|e| panic!("{what}: conversations failed: {e}"));
    items
        .iter()
        .find(|c| c.peer.id == peer)
        .cloned()
        .unwrap_or_else(|| panic!("{what}: no conversation with {peer} in {items:#?}"))
}

/// Signs in with a session (another device of the same user).
pub async fn device(url: &str, session: &str) -> Client {
    Client::connect(url, Credential::Session(session.to_string()), None)
        .await
        .unwrap_or_else(|e| panic!("session sign-in on {url} failed: {e}"))
}

/// A server-API call with the test key (or `key`), JSON body; returns (status, JSON
/// body or `Null` when empty / not JSON).
pub async fn api(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let body = body.map(|b| b.to_string());
    let (status, text) = http(addr, method, path, key, body.as_deref()).await;
    let json = if text.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    (status, json)
}

/// Opens `/ws` with this `Origin` header (or none): the upgrade's HTTP status (101 when
/// accepted).
pub async fn upgrade_status(ws_url: &str, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = ws_url.into_client_request().expect("ws request");
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert("Origin", origin.parse().expect("origin header value"));
    }
    let attempt = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .unwrap_or_else(|_| panic!("upgrade of {ws_url} with origin {origin:?} timed out"));
    match attempt {
        Ok((mut socket, response)) => {
            let _ = socket.close(None).await;
            response.status().as_u16()
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade of {ws_url} with origin {origin:?} failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64url() {
        assert_eq!(super::b64url(b"f"), "Zg");
        assert_eq!(super::b64url(b"fo"), "Zm8");
        assert_eq!(super::b64url(b"foo"), "Zm9v");
        assert_eq!(super::b64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn metric_sums_label_sets() {
        let text = "# HELP x\nchat_x_total 2\nchat_x_total{a=\"1\"} 3\nchat_x_totalx 9\n";
        assert_eq!(super::metric(text, "chat_x_total"), Some(5.0));
        assert_eq!(super::metric(text, "chat_y"), None);
    }
}
