//! An in-memory [`Socket`](super::Socket) for unit tests: the connection's end reads
//! what the test's [`Peer`] sends and writes into a channel the peer reads. Never
//! used outside tests.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::ws::{Message as WsMessage, Utf8Bytes};
use futures_util::{Sink, Stream};
use tokio::sync::mpsc;

/// The connection's end.
pub(crate) struct MemSocket {
    incoming: mpsc::UnboundedReceiver<WsMessage>,
    outgoing: mpsc::UnboundedSender<WsMessage>,
}

/// The client's end, driven by the test.
pub(crate) struct Peer {
    tx: mpsc::UnboundedSender<WsMessage>,
    rx: mpsc::UnboundedReceiver<WsMessage>,
}

/// A connected pair.
pub(crate) fn pair() -> (MemSocket, Peer) {
    let (to_conn, incoming) = mpsc::unbounded_channel();
    let (outgoing, to_peer) = mpsc::unbounded_channel();
    (
        MemSocket { incoming, outgoing },
        Peer {
            tx: to_conn,
            rx: to_peer,
        },
    )
}

impl Peer {
    /// Sends a text frame to the connection.
    pub(crate) fn send_text(&self, text: &str) {
        let _ = self
            .tx
            .send(WsMessage::Text(Utf8Bytes::from(text.to_string())));
    }

    /// Every frame the connection has written so far, without waiting.
    pub(crate) fn written(&mut self) -> Vec<WsMessage> {
        let mut out = Vec::new();
        while let Ok(msg) = self.rx.try_recv() {
            out.push(msg);
        }
        out
    }

    /// The next frame the connection writes (`None` once it dropped its end).
    pub(crate) async fn next(&mut self) -> Option<WsMessage> {
        self.rx.recv().await
    }
}

impl Stream for MemSocket {
    type Item = Result<WsMessage, axum::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.incoming.poll_recv(cx).map(|m| m.map(Ok))
    }
}

impl Sink<WsMessage> for MemSocket {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: WsMessage) -> Result<(), Self::Error> {
        self.outgoing
            .send(item)
            .map_err(|_| axum::Error::new("the peer is gone"))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}
