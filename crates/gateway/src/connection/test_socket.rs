//! An in-memory [`Socket`](super::Socket) for unit tests: the connection's end reads
//! what the test's [`Peer`] sends and writes into a channel the peer reads. Never
//! used outside tests.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::ws::Message as WsMessage;
use futures_util::{Sink, Stream};
use tokio::sync::mpsc;

/// The connection's end.
pub(crate) struct MemSocket {
    incoming: mpsc::UnboundedReceiver<WsMessage>,
    outgoing: mpsc::UnboundedSender<WsMessage>,
    /// Set by [`Peer::stop_reading`]: the socket accepts no more bytes.
    stalled: Arc<AtomicBool>,
}

/// The client's end, driven by the test.
pub(crate) struct Peer {
    tx: mpsc::UnboundedSender<WsMessage>,
    rx: mpsc::UnboundedReceiver<WsMessage>,
    stalled: Arc<AtomicBool>,
}

/// A connected pair.
pub(crate) fn pair() -> (MemSocket, Peer) {
    let (to_conn, incoming) = mpsc::unbounded_channel();
    let (outgoing, to_peer) = mpsc::unbounded_channel();
    let stalled = Arc::new(AtomicBool::new(false));
    (
        MemSocket {
            incoming,
            outgoing,
            stalled: stalled.clone(),
        },
        Peer {
            tx: to_conn,
            rx: to_peer,
            stalled,
        },
    )
}

impl Peer {
    /// From now on the connection's writes never complete, like a TCP peer that
    /// stopped reading once its window filled (for good: nothing wakes them).
    pub(crate) fn stop_reading(&self) {
        self.stalled.store(true, Ordering::Release);
    }

    /// Sends a frame to the connection.
    pub(crate) fn send(&self, msg: WsMessage) {
        let _ = self.tx.send(msg);
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
        if self.stalled.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: WsMessage) -> Result<(), Self::Error> {
        self.outgoing
            .send(item)
            .map_err(|_| axum::Error::new("the peer is gone"))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.stalled.load(Ordering::Acquire) {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// A node state on the in-memory engine with these settings; the engine's live
/// events go to the state's router.
pub(crate) fn state(settings: crate::config::Settings) -> crate::state::Shared {
    faulty_state(settings).0
}

/// A signed-in [`Conn`](super::Conn) of `user` on an in-memory socket, before
/// `welcome`: its outbox sender (what the router would push into) and the client's
/// end of the socket.
pub(crate) fn conn(
    state: crate::state::Shared,
    user: chat_protocol::User,
) -> (
    super::Conn<MemSocket>,
    mpsc::Sender<crate::router::Out>,
    Peer,
) {
    let (socket, peer) = pair();
    let (sink, stream) = futures_util::StreamExt::split(socket);
    let (tx, rx) = mpsc::channel(state.settings.server.outbox);
    let handle = crate::router::ConnHandle {
        id: state.router.next_conn_id(),
        tx: tx.clone(),
        closer: Arc::new(crate::router::Closer::default()),
    };
    let conn = super::Conn {
        budget: state.budgets.of(&user.id, &state.settings.limits),
        state: state.clone(),
        user,
        session: String::new(),
        sink,
        stream,
        rx,
        handle,
        watching: Vec::new(),
        last_sent: chat_protocol::StreamId::ZERO,
        last_heard: std::time::Instant::now(),
        received_at: std::time::Instant::now(),
        unflushed: false,
        held: None,
        rooms: Default::default(),
    };
    (conn, tx, peer)
}

/// A node state on the in-memory engine, and the engine's faults: a test makes its
/// reads fail (`faults.fail(Op::ReadInbox)`), as Redis reads do in an outage, for
/// the paths that must survive that.
pub(crate) fn faulty_state(
    settings: crate::config::Settings,
) -> (crate::state::Shared, chat_engine::memory::Faults) {
    let router = crate::router::Router::new();
    let sink: Arc<dyn chat_engine::EventSink> = router.clone();
    let engine = chat_engine::memory::MemoryEngine::new(
        settings.server.node_id.clone(),
        settings.engine_retention(),
        sink,
    );
    let faults = engine.faults();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let state = Arc::new(crate::state::AppState::new(
        settings, engine, router, metrics,
    ));
    (state, faults)
}
