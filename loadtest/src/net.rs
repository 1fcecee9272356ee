//! Opening signed-in WebSockets at scale: the client's TCP socket is bound to a chosen
//! 127.0.0.X source address before connecting (so one machine gets past the
//! ephemeral-port range towards one node), then the WebSocket handshake runs on it
//! with chat-sized buffers, then `hello` → `welcome` with the protocol crate's frames.
//!
//! It never retries: a failure is counted by the caller, never hidden.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use chat_protocol::{ClientFrame, ServerFrame};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// How the harness spreads its source addresses over 127.0.0.0/8.
#[derive(Debug, Clone, Copy)]
pub struct SourceIps {
    /// How many addresses (127.0.0.1 .. 127.0.0.N); 0 lets the kernel choose.
    pub count: u32,
    /// Offset so worker processes use disjoint addresses where they can.
    pub offset: u32,
}

impl SourceIps {
    /// The source address of the `i`-th connection, or `None` to let the kernel pick.
    pub fn pick(&self, i: u64) -> Option<Ipv4Addr> {
        if self.count == 0 {
            return None;
        }
        // 127.0.0.1 .. up through 127.0.255.254 (skipping .0 and .255 octets).
        let n = (u64::from(self.offset) + i) % u64::from(self.count);
        let hi = (n / 254) as u8;
        let lo = (n % 254) as u8 + 1;
        Some(Ipv4Addr::new(127, 0, hi, lo))
    }
}

/// Socket buffers sized for chat frames (tungstenite's defaults are 128 KiB+).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// Opens the WebSocket at `url` from `source` (when the target is on loopback).
pub async fn open(url: &str, source: Option<Ipv4Addr>) -> Result<Ws> {
    let request = url.into_client_request().context("bad target URL")?;
    let uri = request.uri().clone();
    let host = uri
        .host()
        .ok_or_else(|| anyhow!("target URL has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let addr: SocketAddr = tokio::net::lookup_host((host, port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| anyhow!("no IPv4 address for {host}"))?;
    let socket = TcpSocket::new_v4()?;
    if let (Some(src), IpAddr::V4(dst)) = (source, addr.ip()) {
        if dst.is_loopback() {
            socket
                .bind(SocketAddr::new(IpAddr::V4(src), 0))
                .with_context(|| format!("binding source address {src}"))?;
        }
    }
    let stream = socket
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (ws, _response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config()))
            .await
            .context("WebSocket handshake")?;
    Ok(ws)
}

/// What the harness keeps of a `welcome`.
#[derive(Debug, Clone)]
pub struct Welcome {
    pub session: String,
    pub user_id: String,
    pub node: String,
    pub recovered: bool,
    pub cursor: Option<String>,
    pub send_per_second: u32,
}

/// Sends `hello` and waits for `welcome` (other frames before it are ignored).
pub async fn hello(ws: &mut Ws, frame: ClientFrame, timeout: Duration) -> Result<Welcome> {
    send(ws, &frame).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| anyhow!("no welcome within {timeout:?}"))?;
        let text = match msg {
            Some(Ok(WsMessage::Text(t))) => t,
            Some(Ok(WsMessage::Close(c))) => bail!("closed before welcome: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("socket error before welcome: {e}"),
            None => bail!("connection ended before welcome"),
        };
        match serde_json::from_str::<ServerFrame>(&text) {
            Ok(ServerFrame::Welcome {
                session,
                user,
                node,
                recovered,
                cursor,
                limits,
                ..
            }) => {
                return Ok(Welcome {
                    session,
                    user_id: user.id,
                    node,
                    recovered,
                    cursor,
                    send_per_second: limits.send_per_second,
                })
            }
            Ok(ServerFrame::Error { code, message, .. }) => {
                bail!("hello refused: {code:?}: {message}")
            }
            _ => continue,
        }
    }
}

pub fn guest_hello(username: String) -> ClientFrame {
    ClientFrame::Hello {
        token: None,
        session: None,
        username: Some(username),
        last_seen: None,
        client: Some(client_name()),
        reference: None,
        rooms: None,
    }
}

pub fn resume_hello(session: String, last_seen: Option<String>) -> ClientFrame {
    ClientFrame::Hello {
        token: None,
        session: Some(session),
        username: None,
        last_seen,
        client: Some(client_name()),
        reference: None,
        rooms: None,
    }
}

fn client_name() -> String {
    concat!("chat-loadtest/", env!("CARGO_PKG_VERSION")).to_string()
}

pub async fn send(ws: &mut Ws, frame: &ClientFrame) -> Result<()> {
    let text = serde_json::to_string(frame)?;
    ws.send(WsMessage::Text(text.into())).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_stay_in_loopback_and_skip_broadcast_octets() {
        let ips = SourceIps {
            count: 600,
            offset: 0,
        };
        assert_eq!(ips.pick(0), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(ips.pick(253), Some(Ipv4Addr::new(127, 0, 0, 254)));
        assert_eq!(ips.pick(254), Some(Ipv4Addr::new(127, 0, 1, 1)));
        assert_eq!(ips.pick(600), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(
            SourceIps {
                count: 0,
                offset: 0
            }
            .pick(5),
            None
        );
    }
}
