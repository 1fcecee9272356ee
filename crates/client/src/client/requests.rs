//! 1:1 requests of [`Client`]: `send` (with a nonce for retries), `history` (and the
//! paging rooms share), `conversations`, `users`, `ping` and `logout`. Each sends one request
//! frame through [`Client::request`] and reads its reply.

use chat_protocol::{ClientFrame, ConversationItem, Message, ServerFrame, UserInfo};

use super::Client;
use crate::ClientError;

impl Client {
    /// Ends this connection's session on every node (protocol 1.2 `logout`): waits
    /// for `logged_out`, then for the server's close (1000), which it returns. The
    /// session cannot be resumed afterwards; the user's other sessions live on. On an
    /// `error` reply (e.g. `unavailable`) the session is still valid and the client is
    /// handed back for a retry.
    pub async fn logout(mut self) -> Result<Option<u16>, (Client, ClientError)> {
        match self.request(ClientFrame::Logout { reference: None }).await {
            Ok(ServerFrame::LoggedOut { .. }) => {}
            Ok(other) => return Err((self, ClientError::Unexpected(Box::new(other)))),
            Err(e) => return Err((self, e)),
        }
        let timeout = self.timeout;
        match self.conn.wait_closed(timeout).await {
            Ok(code) => Ok(code),
            Err(_) => Err((
                self,
                ClientError::Timeout("the close after logged_out".into()),
            )),
        }
    }

    /// Sends a message with a random nonce and waits for its `ack`.
    pub async fn send(&mut self, to: &str, body: &str) -> Result<Message, ClientError> {
        let nonce = uuid::Uuid::new_v4().to_string();
        self.send_with_nonce(to, body, &nonce).await
    }

    /// Sends a message with this nonce (a retry of an earlier send reuses it) and
    /// waits for its `ack`.
    pub async fn send_with_nonce(
        &mut self,
        to: &str,
        body: &str,
        nonce: &str,
    ) -> Result<Message, ClientError> {
        let frame = ClientFrame::Send {
            reference: None,
            to: to.to_string(),
            body: body.to_string(),
            nonce: Some(nonce.to_string()),
        };
        match self.request(frame).await? {
            ServerFrame::Ack { message, .. } => Ok(message),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// A page of history with `with`: up to `limit` messages older than `before`,
    /// ascending, and whether older ones exist.
    pub async fn history(
        &mut self,
        with: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Message>, bool), ClientError> {
        self.history_page(Thread::Peer(with), before, limit).await
    }

    /// The whole history with `with`, oldest first, paging backwards by 100.
    pub async fn full_history(&mut self, with: &str) -> Result<Vec<Message>, ClientError> {
        self.full_history_of(Thread::Peer(with)).await
    }

    /// One `history` request, for a 1:1 conversation or a room.
    pub(super) async fn history_page(
        &mut self,
        thread: Thread<'_>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Message>, bool), ClientError> {
        let before = before.map(str::to_string);
        let frame = match thread {
            Thread::Peer(with) => ClientFrame::History {
                reference: None,
                with: with.to_string(),
                before,
                limit: Some(limit),
            },
            Thread::Room(room) => ClientFrame::RoomHistory {
                reference: None,
                room: room.to_string(),
                before,
                limit: Some(limit),
            },
        };
        match self.request(frame).await? {
            ServerFrame::History { messages, more, .. } => Ok((messages, more)),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Every page of a history, oldest first, paging backwards by 100.
    pub(super) async fn full_history_of(
        &mut self,
        thread: Thread<'_>,
    ) -> Result<Vec<Message>, ClientError> {
        let mut all: Vec<Message> = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let (mut page, more) = self.history_page(thread, before.as_deref(), 100).await?;
            before = page.first().map(|m| m.id.clone());
            page.append(&mut all);
            all = page;
            if !more || before.is_none() {
                return Ok(all);
            }
        }
    }

    /// The user's conversations, newest activity first.
    pub async fn conversations(&mut self) -> Result<Vec<ConversationItem>, ClientError> {
        match self
            .request(ClientFrame::Conversations { reference: None })
            .await?
        {
            ServerFrame::Conversations { items, .. } => Ok(items),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// Directory lookup by name prefix.
    pub async fn users(&mut self, query: &str, limit: u32) -> Result<Vec<UserInfo>, ClientError> {
        let frame = ClientFrame::Users {
            reference: None,
            query: query.to_string(),
            limit: Some(limit),
        };
        match self.request(frame).await? {
            ServerFrame::Users { items, .. } => Ok(items),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }

    /// `ping` → `pong`: proves the connection is open and the server reads it.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        match self.request(ClientFrame::Ping { reference: None }).await? {
            ServerFrame::Pong { .. } => Ok(()),
            other => Err(ClientError::Unexpected(Box::new(other))),
        }
    }
}

/// What a `history` request reads: a 1:1 conversation (by peer) or a room.
#[derive(Debug, Clone, Copy)]
pub(super) enum Thread<'a> {
    /// The conversation with this user.
    Peer(&'a str),
    /// This room.
    Room(&'a str),
}
