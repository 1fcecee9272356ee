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
    let router = crate::router::Router::new();
    let sink: Arc<dyn chat_engine::EventSink> = router.clone();
    let engine = chat_engine::memory::MemoryEngine::new(
        settings.server.node_id.clone(),
        settings.retention.to_engine(),
        sink,
    );
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    Arc::new(crate::state::AppState::new(
        settings, engine, router, metrics,
    ))
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

/// The in-memory engine, except that inbox reads fail while [`FlakyReads::fail`] is
/// set (as Redis reads do in an outage): for the paths that must survive that.
pub(crate) struct FlakyReads {
    inner: Arc<dyn chat_engine::Engine>,
    fail: AtomicBool,
}

impl FlakyReads {
    pub(crate) fn new(inner: Arc<dyn chat_engine::Engine>) -> Arc<FlakyReads> {
        Arc::new(FlakyReads {
            inner,
            fail: AtomicBool::new(false),
        })
    }

    /// Whether `read_inbox` fails from now on.
    pub(crate) fn fail(&self, fail: bool) {
        self.fail.store(fail, Ordering::Release);
    }
}

/// A node state whose engine's inbox reads can be made to fail.
pub(crate) fn flaky_state(
    settings: crate::config::Settings,
) -> (crate::state::Shared, Arc<FlakyReads>) {
    let router = crate::router::Router::new();
    let sink: Arc<dyn chat_engine::EventSink> = router.clone();
    let memory = chat_engine::memory::MemoryEngine::new(
        settings.server.node_id.clone(),
        settings.retention.to_engine(),
        sink,
    );
    let flaky = FlakyReads::new(memory);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let state = Arc::new(crate::state::AppState::new(
        settings,
        flaky.clone(),
        router,
        metrics,
    ));
    (state, flaky)
}

mod flaky_impl {
    //! Plain delegation to the in-memory engine, but for `read_inbox`.
    use async_trait::async_trait;
    use chat_engine::prelude::*;
    use chat_engine::{
        ConversationSummary, EngineError, InboxEvent, PresenceInfo, ReadOutcome, SendOutcome,
        SendRequest, Session,
    };
    use chat_protocol::{Message, StreamId, User};
    use std::sync::atomic::Ordering;

    use super::FlakyReads;

    #[async_trait]
    impl Node for FlakyReads {
        fn kind(&self) -> &'static str {
            self.inner.kind()
        }
        async fn ready(&self) -> bool {
            self.inner.ready().await
        }
        fn node_id(&self) -> &str {
            self.inner.node_id()
        }
    }

    #[async_trait]
    impl Accounts for FlakyReads {
        async fn get_user(&self, id: &str) -> Result<Option<User>, EngineError> {
            self.inner.get_user(id).await
        }
        async fn upsert_user(&self, id: &str, name: &str) -> Result<bool, EngineError> {
            self.inner.upsert_user(id, name).await
        }
        async fn create_guest(&self, name: &str) -> Result<User, EngineError> {
            self.inner.create_guest(name).await
        }
        async fn create_session(
            &self,
            user_id: &str,
            rooms: Option<&[String]>,
            ttl: u64,
        ) -> Result<String, EngineError> {
            self.inner.create_session(user_id, rooms, ttl).await
        }
        async fn resume_session(&self, s: &str, ttl: u64) -> Result<Option<Session>, EngineError> {
            self.inner.resume_session(s, ttl).await
        }
        async fn revoke_sessions(&self, user_id: &str) -> Result<(), EngineError> {
            self.inner.revoke_sessions(user_id).await
        }
    }

    #[async_trait]
    impl Messages for FlakyReads {
        async fn send(&self, request: SendRequest) -> Result<SendOutcome, EngineError> {
            self.inner.send(request).await
        }
        async fn history(
            &self,
            a: &str,
            b: &str,
            before: Option<StreamId>,
            limit: usize,
        ) -> Result<(Vec<Message>, bool), EngineError> {
            self.inner.history(a, b, before, limit).await
        }
        async fn clear_conversation(
            &self,
            a: &str,
            b: &str,
        ) -> Result<Option<StreamId>, EngineError> {
            self.inner.clear_conversation(a, b).await
        }
        async fn inbox_head(&self, user_id: &str) -> Result<StreamId, EngineError> {
            self.inner.inbox_head(user_id).await
        }
        async fn read_inbox(
            &self,
            user_id: &str,
            after: StreamId,
            count: usize,
        ) -> Result<Vec<InboxEvent>, EngineError> {
            if self.fail.load(Ordering::Acquire) {
                return Err(EngineError::Unavailable("read refused by the test".into()));
            }
            self.inner.read_inbox(user_id, after, count).await
        }
    }

    #[async_trait]
    impl Live for FlakyReads {
        async fn subscribe(&self, user_id: &str) -> Result<(), EngineError> {
            self.inner.subscribe(user_id).await
        }
        async fn unsubscribe(&self, user_id: &str) -> Result<(), EngineError> {
            self.inner.unsubscribe(user_id).await
        }
        async fn publish_ephemeral(&self, user_id: &str, frame: &str) -> Result<(), EngineError> {
            self.inner.publish_ephemeral(user_id, frame).await
        }
        async fn disconnect_user(&self, user_id: &str) -> Result<(), EngineError> {
            self.inner.disconnect_user(user_id).await
        }
    }

    #[async_trait]
    impl Receipts for FlakyReads {
        async fn mark_read(
            &self,
            reader: &str,
            peer: &str,
            up_to: StreamId,
        ) -> Result<Option<ReadOutcome>, EngineError> {
            self.inner.mark_read(reader, peer, up_to).await
        }
        async fn conversations(
            &self,
            user_id: &str,
            limit: usize,
        ) -> Result<Vec<ConversationSummary>, EngineError> {
            self.inner.conversations(user_id, limit).await
        }
    }

    #[async_trait]
    impl Presence for FlakyReads {
        async fn connection_opened(&self, user_id: &str, node: &str) -> Result<u64, EngineError> {
            self.inner.connection_opened(user_id, node).await
        }
        async fn connection_closed(&self, user_id: &str, node: &str) -> Result<(), EngineError> {
            self.inner.connection_closed(user_id, node).await
        }
        async fn drop_presence(&self, user_id: &str, node: &str) -> Result<(), EngineError> {
            self.inner.drop_presence(user_id, node).await
        }
        async fn heartbeat(&self, node: &str, ttl_secs: u64) -> Result<(), EngineError> {
            self.inner.heartbeat(node, ttl_secs).await
        }
        async fn reap_dead_nodes(&self) -> Result<usize, EngineError> {
            self.inner.reap_dead_nodes().await
        }
        async fn reset_node(&self, node: &str) -> Result<(), EngineError> {
            self.inner.reset_node(node).await
        }
        async fn presence(&self, user_ids: &[String]) -> Result<Vec<PresenceInfo>, EngineError> {
            self.inner.presence(user_ids).await
        }
    }

    #[async_trait]
    impl Directory for FlakyReads {
        async fn search_users(&self, prefix: &str, limit: usize) -> Result<Vec<User>, EngineError> {
            self.inner.search_users(prefix, limit).await
        }
    }

    #[async_trait]
    impl Rooms for FlakyReads {
        async fn join_room(
            &self,
            room: &str,
            user: &User,
            name: Option<&str>,
            limits: chat_engine::RoomLimits,
        ) -> Result<chat_engine::JoinOutcome, EngineError> {
            self.inner.join_room(room, user, name, limits).await
        }
        async fn leave_room(&self, room: &str, user: &User) -> Result<bool, EngineError> {
            self.inner.leave_room(room, user).await
        }
        async fn room(&self, room: &str) -> Result<Option<chat_engine::RoomState>, EngineError> {
            self.inner.room(room).await
        }
        async fn is_member(&self, room: &str, user: &str) -> Result<bool, EngineError> {
            self.inner.is_member(room, user).await
        }
        async fn room_members(
            &self,
            room: &str,
            after: Option<&str>,
            limit: usize,
        ) -> Result<(Vec<User>, bool), EngineError> {
            self.inner.room_members(room, after, limit).await
        }
        async fn user_rooms(&self, user: &str) -> Result<Vec<String>, EngineError> {
            self.inner.user_rooms(user).await
        }
        async fn room_summaries(
            &self,
            user: &str,
        ) -> Result<Vec<chat_engine::RoomSummary>, EngineError> {
            self.inner.room_summaries(user).await
        }
        async fn room_send(
            &self,
            request: chat_engine::RoomSendRequest,
        ) -> Result<Option<SendOutcome>, EngineError> {
            self.inner.room_send(request).await
        }
        async fn room_history(
            &self,
            room: &str,
            before: Option<StreamId>,
            limit: usize,
        ) -> Result<(Vec<Message>, bool), EngineError> {
            self.inner.room_history(room, before, limit).await
        }
        async fn room_mark_read(
            &self,
            room: &str,
            user: &str,
            up_to: StreamId,
        ) -> Result<Option<String>, EngineError> {
            self.inner.room_mark_read(room, user, up_to).await
        }
        async fn read_room(
            &self,
            room: &str,
            after: StreamId,
            count: usize,
        ) -> Result<Vec<chat_engine::RoomEvent>, EngineError> {
            if self.fail.load(Ordering::Acquire) {
                return Err(EngineError::Unavailable("read refused by the test".into()));
            }
            self.inner.read_room(room, after, count).await
        }
        async fn room_head(&self, room: &str) -> Result<StreamId, EngineError> {
            self.inner.room_head(room).await
        }
        async fn subscribe_room(&self, room: &str) -> Result<(), EngineError> {
            self.inner.subscribe_room(room).await
        }
        async fn unsubscribe_room(&self, room: &str) -> Result<(), EngineError> {
            self.inner.unsubscribe_room(room).await
        }
    }
}
