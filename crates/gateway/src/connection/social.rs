//! Requests about conversations and people: the conversation list, read receipts,
//! the directory, presence watches — and the unread summary sent in `welcome`.

use chat_engine::ConversationSummary;
use chat_protocol::{ConversationItem, ErrorCode, ServerFrame, StreamId, Unread, User, UserInfo};

use super::{Conn, Socket};
use crate::errors::{on_socket, refuse, Refused};
use crate::state::AppState;

/// Most conversations listed (and unread entries in `welcome`).
const MAX_CONVERSATIONS: usize = 100;
/// Most users one connection may watch.
const MAX_WATCH: usize = 200;

impl<S: Socket> Conn<S> {
    pub(super) async fn conversations(
        &mut self,
        reference: Option<String>,
    ) -> Result<Option<ServerFrame>, Refused> {
        let items = conversation_items(&self.state, &self.user.id).await?;
        Ok(Some(ServerFrame::Conversations { reference, items }))
    }

    pub(super) async fn read(
        &mut self,
        with: String,
        up_to: String,
    ) -> Result<Option<ServerFrame>, Refused> {
        self.peer(&with, "with")?;
        let up_to = StreamId::parse(&up_to)
            .ok_or_else(|| refuse(ErrorCode::BadRequest, "up_to is not a message id"))?;
        // The read events reach this and the peer's connections through the inboxes.
        self.state
            .engine
            .mark_read(&self.user.id, &with, up_to)
            .await
            .map_err(on_socket)?;
        Ok(None)
    }

    pub(super) async fn users(
        &mut self,
        reference: Option<String>,
        query: String,
        limit: Option<u32>,
    ) -> Result<Option<ServerFrame>, Refused> {
        let limit = limit.unwrap_or(20);
        if !(1..=100).contains(&limit) {
            return Err(refuse(ErrorCode::BadRequest, "limit must be 1-100"));
        }
        let query = query.trim();
        if query.chars().count() > 64 {
            return Err(refuse(
                ErrorCode::BadRequest,
                "query is longer than 64 characters",
            ));
        }
        let users = self
            .state
            .engine
            .search_users(query, limit as usize)
            .await
            .map_err(on_socket)?;
        let items = with_presence(&self.state, users).await.map_err(on_socket)?;
        Ok(Some(ServerFrame::Users { reference, items }))
    }

    /// Replaces the watch list and sends the watched users' current presence.
    pub(super) async fn watch(
        &mut self,
        users: Vec<String>,
    ) -> Result<Option<ServerFrame>, Refused> {
        if users.len() > MAX_WATCH {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("at most {MAX_WATCH} users can be watched"),
            ));
        }
        if let Some(bad) = users.iter().find(|u| !chat_protocol::valid_user_id(u)) {
            return Err(refuse(
                ErrorCode::BadRequest,
                format!("{bad:?} is not a valid user id"),
            ));
        }
        let mut users = users;
        users.sort();
        users.dedup();
        let presence = self
            .state
            .engine
            .presence(&users)
            .await
            .map_err(on_socket)?;
        self.state
            .router
            .set_watch(&self.handle, &self.watching, &users);
        for (user, p) in users.iter().zip(presence) {
            let frame = ServerFrame::Presence {
                user: user.clone(),
                online: p.online,
                last_seen_at: if p.online { None } else { p.last_seen_at },
            };
            let _ = self
                .handle
                .tx
                .try_send(crate::router::Out::Frame(std::sync::Arc::new(
                    frame.to_json().into(),
                )));
        }
        self.watching = users;
        Ok(None)
    }
}

/// The conversation list with the peers' presence.
async fn conversation_items(
    state: &AppState,
    user: &str,
) -> Result<Vec<ConversationItem>, Refused> {
    let list = state
        .engine
        .conversations(user, MAX_CONVERSATIONS)
        .await
        .map_err(on_socket)?;
    let peers: Vec<String> = list.iter().map(|c| c.peer.id.clone()).collect();
    let presence = state.engine.presence(&peers).await.map_err(on_socket)?;
    Ok(list
        .into_iter()
        .zip(presence)
        .map(|(c, p)| ConversationItem {
            conversation: c.conversation,
            peer: UserInfo {
                id: c.peer.id,
                name: c.peer.name,
                online: p.online,
            },
            last: c.last,
            unread: c.unread,
            read_up_to: c.read_up_to,
            peer_read_up_to: c.peer_read_up_to,
        })
        .collect())
}

/// Users with their online flags (the directory, room members).
pub(super) async fn with_presence(
    state: &AppState,
    users: Vec<User>,
) -> Result<Vec<UserInfo>, chat_engine::EngineError> {
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    let presence = state.engine.presence(&ids).await?;
    Ok(users
        .into_iter()
        .zip(presence)
        .map(|(u, p)| UserInfo {
            id: u.id,
            name: u.name,
            online: p.online,
        })
        .collect())
}

/// `welcome.unread`: every conversation with unread messages, newest first.
pub(super) async fn unread_summary(
    state: &AppState,
    user: &str,
) -> Result<Vec<Unread>, chat_engine::EngineError> {
    let list: Vec<ConversationSummary> =
        state.engine.conversations(user, MAX_CONVERSATIONS).await?;
    Ok(list
        .into_iter()
        .filter(|c| c.unread > 0)
        .filter_map(|c| {
            Some(Unread {
                peer: c.peer,
                count: c.unread,
                last: c.last?,
                room: None,
            })
        })
        .collect())
}
