//! The start of a signed-in connection: `welcome`, then the recovery replay of what
//! the client missed since `hello.last_seen`, and of the rooms of `hello.rooms`.
//!
//! Recovery is proven, never assumed: the replay starts only if the first event after
//! the client's cursor names that cursor as its `prev` (or nothing came after it);
//! otherwise `welcome` says `recovered:false` and the connection starts at the head
//! of the inbox. Either way `last_sent` is left where live delivery (`delivery.rs`)
//! takes over. Tested with the live delivery, on the same fixtures
//! (`delivery/tests.rs`).

use chat_protocol::{ServerFrame, StreamId};

use super::delivery::PAGE;
use super::hello::SignedIn;
use super::{rooms, social, unavailable, Conn, Socket, Stop};

impl<S: Socket> Conn<S> {
    /// Sends `welcome`, then replays what the client missed since `last_seen`.
    pub(super) async fn welcome(&mut self, signed: &SignedIn) -> Result<(), Stop> {
        let engine = self.state.engine.clone();
        let user = self.user.id.clone();
        self.attach_rooms(&signed.rooms).await?;
        // A cursor no event can follow (the largest id) proves nothing: no replay,
        // `recovered:false` (protocol 1.1), without a read that would overflow.
        let cursor = signed
            .last_seen
            .as_deref()
            .and_then(StreamId::parse)
            .filter(|c| c.ms != u64::MAX || c.seq != u64::MAX);
        let mut first_page = Vec::new();
        let mut recovered = false;
        let start = match cursor {
            Some(cursor) => {
                let mut proven = None;
                // An empty page proves nothing if an event landed between the read
                // and the head check: look again.
                for _ in 0..3 {
                    let page = engine
                        .read_inbox(&user, cursor, PAGE)
                        .await
                        .map_err(unavailable)?;
                    if let Some(first) = page.first() {
                        proven = Some(first.prev == cursor);
                        first_page = page;
                        break;
                    }
                    let head = engine.inbox_head(&user).await.map_err(unavailable)?;
                    if head <= cursor {
                        proven = Some(head == cursor);
                        break;
                    }
                }
                recovered = proven == Some(true);
                if recovered {
                    cursor
                } else {
                    first_page.clear();
                    engine.inbox_head(&user).await.map_err(unavailable)?
                }
            }
            None => engine.inbox_head(&user).await.map_err(unavailable)?,
        };
        self.last_sent = start;
        let mut unread = social::unread_summary(&self.state, &user)
            .await
            .map_err(unavailable)?;
        unread.extend(
            rooms::room_unread(&self.state, &user)
                .await
                .map_err(unavailable)?,
        );
        let (rooms, room_replay) = self.recover_rooms(&signed.rooms).await?;
        let welcome = ServerFrame::Welcome {
            session: signed.session.clone(),
            user: self.user.clone(),
            resumed: signed.resumed,
            recovered,
            node: self.state.node_id.clone(),
            limits: self.state.limits.clone(),
            unread,
            cursor: Some(start.to_string()),
            rooms,
        };
        self.write_frame(&welcome).await?;
        if recovered {
            metrics::counter!(crate::metric::RECOVERY_REPLAYS).increment(1);
            let full = first_page.len() == PAGE;
            for event in first_page {
                self.last_sent = event.id;
                metrics::counter!(crate::metric::MESSAGES_DELIVERED).increment(1);
                self.write_bytes(event.frame()).await?;
            }
            if full {
                self.catch_up().await?;
            }
        }
        self.write_room_replay(room_replay).await
    }
}
