//! The `[limits]` settings and the request kinds they budget: plain data, read by
//! the limiter (request budgets per user), the admission (caps at the upgrade), the
//! connection (connections per user, room caps) and checked by `config`.
//!
//! Nothing here counts or enforces anything: that is `limiter.rs` and `admission.rs`.

use serde::Deserialize;

/// The `[limits]` section: the request budgets per user, the caps at the upgrade,
/// connections per user and the room caps.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Each request kind has a budget per user, shared by the user's connections on
    /// a node (a node enforces its own share): `<kind>_per_second` sustained,
    /// `<kind>_burst` at once. Over it: `rate_limited`, nothing done.
    pub send_per_second: u32,
    pub send_burst: u32,
    pub typing_per_second: u32,
    pub typing_burst: u32,
    pub history_per_second: u32,
    pub history_burst: u32,
    /// `conversations` reads every conversation's presence: a small budget.
    pub conversations_per_second: u32,
    pub conversations_burst: u32,
    /// `users` (directory look-ups with presence).
    pub users_per_second: u32,
    pub users_burst: u32,
    /// `watch` costs one token per watched id.
    pub watch_ids_per_second: u32,
    pub watch_ids_burst: u32,
    pub read_per_second: u32,
    pub read_burst: u32,
    /// `join`, `leave`, `members` and `rooms` requests.
    pub rooms_per_second: u32,
    pub rooms_burst: u32,
    pub ping_per_second: u32,
    pub ping_burst: u32,
    pub max_connections_per_user: usize,
    /// Sockets open at once from one client address (429 at the upgrade).
    pub max_connections_per_ip: usize,
    /// Sockets on a node that have not completed `hello` (503 at the upgrade).
    pub max_sockets_before_hello: usize,
    /// Sign-ins (WebSocket upgrades) per client address: sustained rate and burst
    /// (429 at the upgrade).
    pub sign_ins_per_ip_per_second: u32,
    pub sign_ins_per_ip_burst: u32,
    // Rooms (protocol 1.1): caps checked by every join, each refusal a `forbidden`.
    /// Rooms one user may be a member of.
    pub max_rooms_per_user: u64,
    /// Members one room may have.
    pub max_room_members: u64,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            send_per_second: 10,
            send_burst: 20,
            typing_per_second: 5,
            typing_burst: 10,
            history_per_second: 10,
            history_burst: 30,
            conversations_per_second: 2,
            conversations_burst: 20,
            users_per_second: 5,
            users_burst: 20,
            watch_ids_per_second: 100,
            watch_ids_burst: 400,
            read_per_second: 20,
            read_burst: 50,
            rooms_per_second: 10,
            rooms_burst: 30,
            ping_per_second: 5,
            ping_burst: 20,
            max_connections_per_user: 20,
            max_connections_per_ip: 500,
            max_sockets_before_hello: 1000,
            sign_ins_per_ip_per_second: 20,
            sign_ins_per_ip_burst: 200,
            max_rooms_per_user: 500,
            max_room_members: 10_000,
        }
    }
}

/// The kinds of request with a budget of their own. `watch` costs one token per
/// watched id (each id is a presence read and a subscription), every other request
/// one token; `conversations` (a presence read per conversation) has a small budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Send,
    Typing,
    History,
    Conversations,
    Users,
    Watch,
    Read,
    Ping,
    /// `join`, `leave`, `members` and `rooms` (room messages, histories and reads
    /// draw on `send`, `history` and `read`).
    Rooms,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Send,
        Kind::Typing,
        Kind::History,
        Kind::Conversations,
        Kind::Users,
        Kind::Watch,
        Kind::Read,
        Kind::Ping,
        Kind::Rooms,
    ];

    /// The `kind` label of the rate-limit metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Send => "send",
            Kind::Typing => "typing",
            Kind::History => "history",
            Kind::Conversations => "conversations",
            Kind::Users => "users",
            Kind::Watch => "watch",
            Kind::Read => "read",
            Kind::Ping => "ping",
            Kind::Rooms => "rooms",
        }
    }

    /// (tokens per second, burst) of this kind in the settings.
    pub fn budget(self, l: &LimitSettings) -> (u32, u32) {
        match self {
            Kind::Send => (l.send_per_second, l.send_burst),
            Kind::Typing => (l.typing_per_second, l.typing_burst),
            Kind::History => (l.history_per_second, l.history_burst),
            Kind::Conversations => (l.conversations_per_second, l.conversations_burst),
            Kind::Users => (l.users_per_second, l.users_burst),
            Kind::Watch => (l.watch_ids_per_second, l.watch_ids_burst),
            Kind::Read => (l.read_per_second, l.read_burst),
            Kind::Ping => (l.ping_per_second, l.ping_burst),
            Kind::Rooms => (l.rooms_per_second, l.rooms_burst),
        }
    }

    /// The kind's place in [`Kind::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}
