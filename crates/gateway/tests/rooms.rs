//! Rooms (protocol 1.1), frame by frame on the wire: join/joined/member/leave/left,
//! delivery to every tab of every member, `forbidden` for non-members (nothing
//! stored), history paging, the rooms list and unread (also in `welcome.unread`),
//! recovery through `hello.rooms` after a disconnect with traffic during it, the JWT
//! `rooms` claim (kept by a resumed session), the server API and the caps — on both engines where one node
//! suffices, and across two nodes on Redis.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// A signed-in connection speaking raw JSON: frames the test did not ask for yet are
/// kept in order, so every assertion is on the wire frames themselves.
struct Tab {
    conn: Connection,
    pending: VecDeque<Value>,
    next_ref: u32,
    welcome: Value,
}

impl Tab {
    async fn hello(url: &str, hello: Value) -> Tab {
        let mut conn = raw(url).await;
        conn.send_text(&hello.to_string())
            .await
            .expect("send hello");
        let mut tab = Tab {
            conn,
            pending: VecDeque::new(),
            next_ref: 0,
            welcome: Value::Null,
        };
        let welcome = tab.read().await.expect("welcome");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        tab.welcome = welcome;
        tab
    }

    async fn guest(url: &str, prefix: &str) -> Tab {
        Tab::hello(url, json!({"type":"hello","username": unique_name(prefix)})).await
    }

    /// Another tab of the same user (resuming its session), with optional rooms.
    async fn another(&self, url: &str, rooms: Option<Value>) -> Tab {
        let mut hello = json!({"type":"hello","session": self.welcome["session"]});
        if let Some(rooms) = rooms {
            hello["rooms"] = rooms;
        }
        Tab::hello(url, hello).await
    }

    fn id(&self) -> String {
        self.welcome["user"]["id"].as_str().unwrap().to_string()
    }

    async fn read(&mut self) -> Option<Value> {
        match self.conn.next_frame_timeout_raw(WAIT).await {
            Some(RawFrame::Text(t)) => Some(serde_json::from_str(&t).expect("JSON frame")),
            Some(other) => panic!("unexpected {other:?}"),
            None => None,
        }
    }

    /// Sends `frame` with a fresh `ref` and returns the reply carrying it.
    async fn req(&mut self, mut frame: Value) -> Value {
        self.next_ref += 1;
        let r = format!("r{}", self.next_ref);
        frame["ref"] = json!(r);
        self.conn.send_text(&frame.to_string()).await.expect("send");
        loop {
            let f = self
                .read()
                .await
                .unwrap_or_else(|| panic!("no reply to {frame}"));
            if f["ref"] == json!(r) {
                return f;
            }
            self.pending.push_back(f);
        }
    }

    async fn send_raw(&mut self, frame: Value) {
        self.conn.send_text(&frame.to_string()).await.expect("send");
    }

    /// The next frame (queued or new) matching `pred`; frames before it are dropped.
    async fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        while let Some(f) = self.pending.pop_front() {
            if pred(&f) {
                return f;
            }
        }
        loop {
            let f = self
                .read()
                .await
                .unwrap_or_else(|| panic!("timed out waiting for {what}"));
            if pred(&f) {
                return f;
            }
        }
    }

    /// Asserts no frame matching `pred` arrives within `wait` (a ping round trip
    /// first, so anything already sent has arrived).
    async fn quiet(&mut self, what: &str, wait: Duration, pred: impl Fn(&Value) -> bool) {
        let _ = self.req(json!({"type":"ping"})).await;
        if let Some(f) = self.pending.iter().find(|f| pred(f)) {
            panic!("{what}: got {f}");
        }
        if let Ok(Some(RawFrame::Text(t))) =
            tokio::time::timeout(wait, async { Some(self.conn.next_raw().await) }).await
        {
            let f: Value = serde_json::from_str(&t).unwrap();
            assert!(!pred(&f), "{what}: got {f}");
            self.pending.push_back(f);
        }
    }

    async fn member_event(&mut self, room: &str, event: &str, user: &str) -> Value {
        let what = format!("member {event} {user} in {room}");
        self.expect(&what, |f| {
            f["type"] == "member"
                && f["room"] == room
                && f["event"] == event
                && f["user"]["id"] == user
        })
        .await
    }

    async fn room_message(&mut self, room: &str, body: &str) -> Value {
        let what = format!("message {body:?} in {room}");
        self.expect(&what, |f| {
            f["type"] == "message" && f["message"]["room"] == room && f["message"]["body"] == body
        })
        .await
    }
}

trait NextRaw {
    async fn next_frame_timeout_raw(&mut self, wait: Duration) -> Option<RawFrame>;
}

impl NextRaw for Connection {
    async fn next_frame_timeout_raw(&mut self, wait: Duration) -> Option<RawFrame> {
        tokio::time::timeout(wait, self.next_raw()).await.ok()
    }
}

fn unique_room(prefix: &str) -> String {
    unique_name(prefix).to_lowercase()
}

fn is_error(f: &Value, code: &str) -> bool {
    f["type"] == "error" && f["code"] == code
}

/// Every room frame on one node.
async fn room_frames(engine: Engine) {
    let cluster = Cluster::single(engine, NO_RATE_LIMIT);
    let url = cluster.url(0);
    let room = unique_room("lobby");
    let mut alice = Tab::guest(&url, "alice").await;
    let mut alice2 = alice.another(&url, None).await;
    let mut bob = Tab::guest(&url, "bob").await;
    let mut carol = Tab::guest(&url, "carol").await;
    let (a, b, c) = (alice.id(), bob.id(), carol.id());

    let joined = alice
        .req(json!({"type":"join","room": room,"name":"The lobby"}))
        .await;
    assert_eq!(joined["type"], "joined", "{joined}");
    assert_eq!(joined["room"]["id"], room);
    assert_eq!(joined["room"]["name"], "The lobby");
    assert_eq!(joined["room"]["member_count"], 1);
    assert_eq!(
        joined["room"]["members"],
        json!([{"id": a, "name": alice.welcome["user"]["name"], "online": true}])
    );
    assert_eq!(joined["room"]["last"], Value::Null);
    // The joiner's other tab hears of it too.
    let ev = alice2.member_event(&room, "joined", &a).await;
    assert!(ev["id"].is_string(), "{ev}");

    let joined = bob
        .req(json!({"type":"join","room": room,"name":"ignored"}))
        .await;
    assert_eq!(joined["room"]["name"], "The lobby");
    assert_eq!(joined["room"]["member_count"], 2);
    let bob_name = bob.welcome["user"]["name"].clone();
    for tab in [&mut alice, &mut alice2, &mut bob] {
        let ev = tab.member_event(&room, "joined", &b).await;
        assert_eq!(ev["user"]["name"], bob_name);
    }
    // Joining again answers joined and changes nothing.
    let again = bob.req(json!({"type":"join","room": room})).await;
    assert_eq!(again["room"]["member_count"], 2);

    // A message reaches every tab of every member, the sender's included.
    let ack = bob
        .req(json!({"type":"send","room": room,"body":"hi all","nonce":"n-1"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let m = &ack["message"];
    assert_eq!(m["room"], room);
    assert_eq!(m["conversation"], format!("room:{room}"));
    assert_eq!(m["from"], b);
    assert!(m.get("to").is_none(), "a room message has no to: {m}");
    for tab in [&mut alice, &mut alice2, &mut bob] {
        let got = tab.room_message(&room, "hi all").await;
        assert_eq!(&got["message"], m);
        assert!(
            got.get("cursor").is_none(),
            "room events carry no cursor: {got}"
        );
    }
    // A retried nonce returns the original.
    let retry = bob
        .req(json!({"type":"send","room": room,"body":"other","nonce":"n-1"}))
        .await;
    assert_eq!(&retry["message"], m);

    // Not a member: forbidden, nothing stored.
    for frame in [
        json!({"type":"send","room": room,"body":"intruder"}),
        json!({"type":"history","room": room}),
        json!({"type":"read","room": room,"up_to": m["id"]}),
        json!({"type":"members","room": room}),
    ] {
        let reply = carol.req(frame.clone()).await;
        assert!(is_error(&reply, "forbidden"), "{frame} → {reply}");
    }
    let bad = carol.req(json!({"type":"join","room":"Not Valid"})).await;
    assert!(is_error(&bad, "bad_request"), "{bad}");

    // History pages.
    let mut ids = vec![m["id"].clone()];
    for i in 0..5 {
        let ack = alice
            .req(json!({"type":"send","room": room,"body": format!("m{i}")}))
            .await;
        ids.push(ack["message"]["id"].clone());
    }
    let page = bob
        .req(json!({"type":"history","room": room,"limit":4}))
        .await;
    assert_eq!(page["type"], "history");
    assert_eq!(page["conversation"], format!("room:{room}"));
    let got: Vec<Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(got, ids[2..], "the newest 4, ascending");
    assert_eq!(page["more"], true);
    let page = bob
        .req(json!({"type":"history","room": room,"limit":4,"before": ids[2]}))
        .await;
    let got: Vec<Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(got, ids[..2]);
    assert_eq!(page["more"], false);
    assert!(
        !page.to_string().contains("intruder"),
        "nothing of the non-member was stored"
    );

    // The rooms list and unread: bob has 5 unread (alice's), alice none.
    let rooms = bob.req(json!({"type":"rooms"})).await;
    let item = &rooms["items"][0];
    assert_eq!(item["id"], room);
    assert_eq!(item["name"], "The lobby");
    assert_eq!(item["member_count"], 2);
    assert_eq!(item["unread"], 5, "{rooms}");
    assert_eq!(item["last"]["id"], ids[5]);
    let rooms = alice.req(json!({"type":"rooms"})).await;
    // Her marker moved to her own last message, past bob's.
    assert_eq!(rooms["items"][0]["unread"], 0, "{rooms}");
    // welcome.unread lists the room for a new tab of bob.
    let bob2 = bob.another(&url, None).await;
    let entry = bob2.welcome["unread"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["room"]["id"] == room)
        .cloned()
        .unwrap_or_else(|| panic!("no room in welcome.unread: {}", bob2.welcome));
    assert_eq!(entry["count"], 5);
    assert_eq!(entry["room"]["name"], "The lobby");
    assert_eq!(entry["last"]["id"], ids[5]);
    assert!(entry.get("peer").is_none(), "{entry}");
    // read moves the marker; only bob's own connections hear of it.
    bob.send_raw(json!({"type":"read","room": room,"up_to": ids[3]}))
        .await;
    let read = bob.expect("read event", |f| f["type"] == "read").await;
    assert_eq!(read["conversation"], format!("room:{room}"));
    assert_eq!(read["by"], b);
    assert_eq!(read["up_to"], ids[3]);
    let rooms = bob.req(json!({"type":"rooms"})).await;
    assert_eq!(rooms["items"][0]["unread"], 2);
    alice
        .quiet(
            "no read receipt to the room",
            Duration::from_millis(200),
            |f| f["type"] == "read",
        )
        .await;

    // The roster.
    carol.req(json!({"type":"join","room": room})).await;
    let members = carol.req(json!({"type":"members","room": room})).await;
    assert_eq!(members["type"], "members", "{members}");
    assert_eq!(members["room"], room);
    assert_eq!(members["more"], false);
    let mut listed: Vec<String> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["online"], true, "{m}");
            m["id"].as_str().unwrap().to_string()
        })
        .collect();
    listed.sort();
    let mut expected = vec![a.clone(), b.clone(), c.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    let after = members["items"][0]["id"].as_str().unwrap().to_string();
    let rest = carol
        .req(json!({"type":"members","room": room,"after": after}))
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 2);

    // Leave: left to the leaver, member left to the others and the leaver's tabs;
    // then nothing more from the room.
    let left = bob.req(json!({"type":"leave","room": room})).await;
    assert_eq!(left, json!({"type":"left","ref": left["ref"],"room": room}));
    alice.member_event(&room, "left", &b).await;
    carol.member_event(&room, "left", &b).await;
    bob.member_event(&room, "left", &b).await;
    let reply = bob
        .req(json!({"type":"send","room": room,"body":"still here?"}))
        .await;
    assert!(is_error(&reply, "forbidden"), "{reply}");
    alice
        .req(json!({"type":"send","room": room,"body":"after bob left"}))
        .await;
    carol.room_message(&room, "after bob left").await;
    bob.quiet("nothing after leaving", Duration::from_millis(300), |f| {
        f["type"] == "message" || f["type"] == "member"
    })
    .await;
    // Joining again: the room's events reach bob once more, from the join on.
    let joined = bob.req(json!({"type":"join","room": room})).await;
    assert_eq!(joined["room"]["member_count"], 3, "{joined}");
    bob.member_event(&room, "joined", &b).await;
    alice
        .req(json!({"type":"send","room": room,"body":"welcome back"}))
        .await;
    bob.room_message(&room, "welcome back").await;
    drop(bob2);
}

both_engines!(room_frames);

/// Recovery: a tab that was away gets every room event after its last id, in order,
/// before newer live events; an id outside the retained stream is not recovered.
async fn room_recovery(engine: Engine) {
    let cluster = Cluster::single(engine, NO_RATE_LIMIT);
    let url = cluster.url(0);
    let room = unique_room("rec");
    let mut alice = Tab::guest(&url, "alice").await;
    let mut bob = Tab::guest(&url, "bob").await;
    alice.req(json!({"type":"join","room": room})).await;
    bob.req(json!({"type":"join","room": room})).await;
    alice
        .req(json!({"type":"send","room": room,"body":"before"}))
        .await;
    let seen = bob.room_message(&room, "before").await["message"]["id"].clone();
    let session = bob.welcome["session"].clone();
    drop(bob);

    let mut sent = Vec::new();
    for i in 0..3 {
        let ack = alice
            .req(json!({"type":"send","room": room,"body": format!("away {i}")}))
            .await;
        sent.push(ack["message"]["id"].clone());
    }
    let carol = Tab::guest(&url, "carol").await;
    let mut carol = carol;
    carol.req(json!({"type":"join","room": room})).await;
    let carol_id = carol.id();

    let hello = json!({"type":"hello","session": session,"rooms": {room.clone(): seen, "not-a-member": "1-0"}});
    let mut bob = Tab::hello(&url, hello).await;
    assert_eq!(
        bob.welcome["rooms"],
        json!({room.clone(): {"recovered": true}}),
        "{}",
        bob.welcome
    );
    alice
        .req(json!({"type":"send","room": room,"body":"live"}))
        .await;
    // Exactly the missed events, in order, then the live one.
    let mut got = Vec::new();
    while got.len() < 5 {
        let f = bob
            .expect("replayed room events", |f| {
                f["type"] == "message" || f["type"] == "member"
            })
            .await;
        got.push(f);
    }
    assert_eq!(got[0]["message"]["id"], sent[0]);
    assert_eq!(got[1]["message"]["id"], sent[1]);
    assert_eq!(got[2]["message"]["id"], sent[2]);
    assert_eq!(got[3]["type"], "member");
    assert_eq!(got[3]["user"]["id"], carol_id);
    assert_eq!(got[4]["message"]["body"], "live");

    // Beyond the newest event, or before the first one retained: not recovered.
    let head = got[4]["message"]["id"].as_str().unwrap().to_string();
    let beyond = format!("{}-0", sid(&head).ms + 60_000);
    for last in [beyond.as_str(), "1-0"] {
        let hello = json!({"type":"hello","session": session,"rooms": {room.clone(): last}});
        let mut tab = Tab::hello(&url, hello).await;
        assert_eq!(
            tab.welcome["rooms"][&room]["recovered"], false,
            "{last}: {}",
            tab.welcome
        );
        // Live from the newest: the next message arrives, nothing older.
        alice
            .req(json!({"type":"send","room": room,"body": format!("next {last}")}))
            .await;
        let f = tab
            .expect("next message", |f| {
                f["type"] == "message" || f["type"] == "member"
            })
            .await;
        assert_eq!(f["message"]["body"], format!("next {last}"));
    }
}

both_engines!(room_recovery);

/// A token for `sub` signed with the test clusters' secret, with this `rooms` claim
/// (none when `None`).
fn token(sub: &str, rooms: Option<Value>) -> String {
    let mut claims = json!({"sub": sub, "name": sub, "exp": now_secs() + 600});
    if let Some(rooms) = rooms {
        claims["rooms"] = rooms;
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// The JWT `rooms` claim restricts joins; guests join anything.
async fn rooms_claim(engine: Engine) {
    let cluster = Cluster::single(engine, &[]);
    let url = cluster.url(0);
    let sub = unique_name("claim").to_lowercase();
    let allowed = unique_room("allowed");
    let other = unique_room("other");
    let mut limited = Tab::hello(
        &url,
        json!({"type":"hello","token": token(&format!("{sub}-1"), Some(json!([allowed])))}),
    )
    .await;
    let ok = limited.req(json!({"type":"join","room": allowed})).await;
    assert_eq!(ok["type"], "joined", "{ok}");
    let no = limited.req(json!({"type":"join","room": other})).await;
    assert!(is_error(&no, "forbidden"), "{no}");
    for (n, rooms) in [(2, Some(json!(["*"]))), (3, None)] {
        let mut any = Tab::hello(
            &url,
            json!({"type":"hello","token": token(&format!("{sub}-{n}"), rooms)}),
        )
        .await;
        let ok = any.req(json!({"type":"join","room": other})).await;
        assert_eq!(ok["type"], "joined", "{ok}");
    }
    let mut guest = Tab::guest(&url, "guest").await;
    let ok = guest.req(json!({"type":"join","room": allowed})).await;
    assert_eq!(ok["type"], "joined", "{ok}");
}

both_engines!(rooms_claim);

/// A session keeps the `rooms` claim of the token that created it: resuming it (in a
/// new connection, later) does not lift the restriction. A session from a token
/// without the claim, or with an empty one, resumes as it was issued.
async fn rooms_claim_survives_a_resumed_session(engine: Engine) {
    let cluster = Cluster::single(engine, &[]);
    let url = cluster.url(0);
    let sub = unique_name("resumed").to_lowercase();
    let lobby = unique_room("lobby");
    let other = unique_room("other");

    let signed = Tab::hello(
        &url,
        json!({"type":"hello","token": token(&format!("{sub}-1"), Some(json!([lobby])))}),
    )
    .await;
    let session = signed.welcome["session"].clone();
    drop(signed);
    let mut resumed = Tab::hello(&url, json!({"type":"hello","session": session})).await;
    assert_eq!(resumed.welcome["resumed"], true, "{}", resumed.welcome);
    let ok = resumed.req(json!({"type":"join","room": lobby})).await;
    assert_eq!(ok["type"], "joined", "{ok}");
    let no = resumed.req(json!({"type":"join","room": other})).await;
    assert!(is_error(&no, "forbidden"), "{no}");
    // A tab opened from the resumed one's session (the same session) as well.
    let mut again = resumed.another(&url, None).await;
    let no = again.req(json!({"type":"join","room": other})).await;
    assert!(is_error(&no, "forbidden"), "{no}");

    // An empty claim: the resumed session may join no room.
    let none = Tab::hello(
        &url,
        json!({"type":"hello","token": token(&format!("{sub}-2"), Some(json!([])))}),
    )
    .await;
    let mut none = none.another(&url, None).await;
    let no = none.req(json!({"type":"join","room": lobby})).await;
    assert!(is_error(&no, "forbidden"), "{no}");

    // No claim: the resumed session may join anything.
    let free = Tab::hello(
        &url,
        json!({"type":"hello","token": token(&format!("{sub}-3"), None)}),
    )
    .await;
    let mut free = free.another(&url, None).await;
    let ok = free.req(json!({"type":"join","room": other})).await;
    assert_eq!(ok["type"], "joined", "{ok}");
}

both_engines!(rooms_claim_survives_a_resumed_session);

/// Room `send` and `history` check the sign-in's `rooms` claim too, not only `join`:
/// a user who joined a room under a token without the claim, then resumes a session
/// of a token limited to another room, may neither write (nothing stored) nor read it.
async fn rooms_claim_limits_send_and_history(engine: Engine) {
    let cluster = Cluster::single(engine, &[]);
    let url = cluster.url(0);
    let sub = unique_name("limited").to_lowercase();
    let lobby = unique_room("lobby");
    let other = unique_room("other");

    let mut wide = Tab::hello(&url, json!({"type":"hello","token": token(&sub, None)})).await;
    let ok = wide.req(json!({"type":"join","room": other})).await;
    assert_eq!(ok["type"], "joined", "{ok}");
    let signed = Tab::hello(
        &url,
        json!({"type":"hello","token": token(&sub, Some(json!([lobby])))}),
    )
    .await;
    let mut narrow = signed.another(&url, None).await;
    assert_eq!(narrow.welcome["resumed"], true, "{}", narrow.welcome);
    let no = narrow
        .req(json!({"type":"send","room": other,"body":"outside the claim"}))
        .await;
    assert!(is_error(&no, "forbidden"), "{no}");
    let no = narrow.req(json!({"type":"history","room": other})).await;
    assert!(is_error(&no, "forbidden"), "{no}");
    let page = wide.req(json!({"type":"history","room": other})).await;
    assert_eq!(page["messages"], json!([]), "nothing stored: {page}");
}

both_engines!(rooms_claim_limits_send_and_history);

/// The server API's room calls; members are told as for a client's join/leave.
async fn room_api(engine: Engine) {
    let cluster = Cluster::single(engine, &[]);
    let url = cluster.url(0);
    let addr = cluster.addr(0);
    let key = Some(API_KEY);
    let room = unique_room("api");
    let mut alice = Tab::guest(&url, "alice").await;
    alice
        .req(json!({"type":"join","room": room,"name":"Support"}))
        .await;
    let sys = unique_name("system").to_lowercase();
    let (status, _) = http(
        addr,
        "PUT",
        &format!("/api/v1/users/{sys}"),
        key,
        Some(r#"{"name":"System"}"#),
    )
    .await;
    assert_eq!(status, 200);

    let (status, body) = http(addr, "GET", &format!("/api/v1/rooms/{room}"), key, None).await;
    assert_eq!(status, 200, "{body}");
    let got: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        got,
        json!({"id": room, "name": "Support", "member_count": 1})
    );
    let (status, _) = http(addr, "GET", "/api/v1/rooms/no-such-room", key, None).await;
    assert_eq!(status, 404);
    let (status, _) = http(addr, "GET", &format!("/api/v1/rooms/{room}"), None, None).await;
    assert_eq!(status, 401);

    // Not a member yet: 403, nothing stored.
    let post = format!("/api/v1/rooms/{room}/messages");
    let body = json!({"from": sys, "body": "notice"}).to_string();
    let (status, _) = http(addr, "POST", &post, key, Some(&body)).await;
    assert_eq!(status, 403);

    let (status, body_text) = http(
        addr,
        "PUT",
        &format!("/api/v1/rooms/{room}/members/{sys}"),
        key,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body_text}");
    alice.member_event(&room, "joined", &sys).await;
    let (status, _) = http(
        addr,
        "PUT",
        &format!("/api/v1/rooms/{room}/members/nobody-here"),
        key,
        None,
    )
    .await;
    assert_eq!(status, 404);

    let (status, created) = http(addr, "POST", &post, key, Some(&body)).await;
    assert_eq!(status, 201, "{created}");
    let created: Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["room"], room);
    let got = alice.room_message(&room, "notice").await;
    assert_eq!(got["message"], created);

    let (status, page) = http(addr, "GET", &format!("{post}?limit=10"), key, None).await;
    assert_eq!(status, 200);
    let page: Value = serde_json::from_str(&page).unwrap();
    assert_eq!(page, json!({"messages": [created], "more": false}));
    // Paging arguments are checked as for conversations: a clear 400.
    for (query, says) in [
        ("limit=0", "limit must be 1-100"),
        ("limit=101", "limit must be 1-100"),
        ("before=not-an-id", "before is not a message id"),
    ] {
        let (status, text) = http(addr, "GET", &format!("{post}?{query}"), key, None).await;
        assert_eq!(status, 400, "{query}: {text}");
        assert!(text.contains(says), "{query}: {text}");
    }

    let (status, _) = http(
        addr,
        "DELETE",
        &format!("/api/v1/rooms/{room}/members/{sys}"),
        key,
        None,
    )
    .await;
    assert_eq!(status, 204);
    alice.member_event(&room, "left", &sys).await;
    let (status, _) = http(addr, "POST", &post, key, Some(&body)).await;
    assert_eq!(status, 403);
}

both_engines!(room_api);

/// The caps: members per room and rooms per user, each a clear `forbidden`.
async fn room_caps(engine: Engine) {
    let cluster = Cluster::single(
        engine,
        &[
            ("CHAT_LIMITS__MAX_ROOM_MEMBERS", "2"),
            ("CHAT_LIMITS__MAX_ROOMS_PER_USER", "1"),
        ],
    );
    let url = cluster.url(0);
    let room = unique_room("small");
    let mut tabs = Vec::new();
    for name in ["a", "b", "c"] {
        tabs.push(Tab::guest(&url, name).await);
    }
    for tab in tabs.iter_mut().take(2) {
        let ok = tab.req(json!({"type":"join","room": room})).await;
        assert_eq!(ok["type"], "joined");
    }
    let full = tabs[2].req(json!({"type":"join","room": room})).await;
    assert!(is_error(&full, "forbidden"), "{full}");
    assert!(full["message"].as_str().unwrap().contains("full"), "{full}");
    let second = tabs[0]
        .req(json!({"type":"join","room": unique_room("second")}))
        .await;
    assert!(is_error(&second, "forbidden"), "{second}");
    assert!(
        second["message"]
            .as_str()
            .unwrap()
            .contains("too many rooms"),
        "{second}"
    );
    // The refused user is no member: the room's traffic does not reach them.
    tabs[0]
        .req(json!({"type":"send","room": room,"body":"members only"}))
        .await;
    tabs[1].room_message(&room, "members only").await;
    tabs[2]
        .quiet(
            "nothing for a refused joiner",
            Duration::from_millis(300),
            |f| f["type"] == "message",
        )
        .await;
}

both_engines!(room_caps);

/// Two nodes on Redis: joins, leaves and messages reach every tab on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_across_two_nodes() {
    let cluster = Cluster::start(Engine::Redis, 2, NO_RATE_LIMIT);
    let (n0, n1) = (cluster.url(0), cluster.url(1));
    let room = unique_room("x");
    let mut alice0 = Tab::guest(&n0, "alice").await;
    let mut alice1 = alice0.another(&n1, None).await;
    let mut bob1 = Tab::guest(&n1, "bob").await;
    let mut carol0 = Tab::guest(&n0, "carol").await;
    let (a, b) = (alice0.id(), bob1.id());

    // Alice joins on node 0: her tab on node 1 is told and follows the room there.
    alice0.req(json!({"type":"join","room": room})).await;
    alice1.member_event(&room, "joined", &a).await;
    bob1.req(json!({"type":"join","room": room})).await;
    alice0.member_event(&room, "joined", &b).await;
    alice1.member_event(&room, "joined", &b).await;
    carol0.req(json!({"type":"join","room": room})).await;

    bob1.req(json!({"type":"send","room": room,"body":"from node 1"}))
        .await;
    for tab in [&mut alice0, &mut alice1, &mut carol0, &mut bob1] {
        tab.room_message(&room, "from node 1").await;
    }
    carol0
        .req(json!({"type":"send","room": room,"body":"from node 0"}))
        .await;
    for tab in [&mut alice0, &mut alice1, &mut bob1] {
        tab.room_message(&room, "from node 0").await;
    }

    // Alice leaves on node 1: her node-0 tab is told and gets nothing more.
    alice1.req(json!({"type":"leave","room": room})).await;
    alice0.member_event(&room, "left", &a).await;
    bob1.member_event(&room, "left", &a).await;
    carol0.member_event(&room, "left", &a).await;
    bob1.req(json!({"type":"send","room": room,"body":"after alice"}))
        .await;
    carol0.room_message(&room, "after alice").await;
    for tab in [&mut alice0, &mut alice1] {
        tab.quiet("nothing after leaving", Duration::from_millis(300), |f| {
            f["type"] == "message"
        })
        .await;
    }

    // Recovery across nodes: bob was on node 1, comes back on node 0.
    let seen = bob1.room_message(&room, "after alice").await["message"]["id"].clone();
    let session = bob1.welcome["session"].clone();
    drop(bob1);
    carol0
        .req(json!({"type":"send","room": room,"body":"while bob away"}))
        .await;
    let mut bob0 = Tab::hello(
        &n0,
        json!({"type":"hello","session": session,"rooms": {room.clone(): seen}}),
    )
    .await;
    assert_eq!(
        bob0.welcome["rooms"][&room]["recovered"], true,
        "{}",
        bob0.welcome
    );
    let first = bob0
        .expect("the missed message", |f| f["type"] == "message")
        .await;
    assert_eq!(first["message"]["body"], "while bob away");
}

/// The roster pages by 100: `joined` lists the first 100 members, `members` with
/// `after` the rest.
async fn roster_pages(engine: Engine) {
    let cluster = Cluster::single(engine, &[]);
    let url = cluster.url(0);
    let addr = cluster.addr(0);
    let room = unique_room("big");
    let prefix = unique_name("m").to_lowercase();
    for i in 0..105 {
        let user = format!("{prefix}-{i:03}");
        let (status, _) = http(
            addr,
            "PUT",
            &format!("/api/v1/users/{user}"),
            Some(API_KEY),
            Some(r#"{"name":"M"}"#),
        )
        .await;
        assert_eq!(status, 200);
        let (status, _) = http(
            addr,
            "PUT",
            &format!("/api/v1/rooms/{room}/members/{user}"),
            Some(API_KEY),
            None,
        )
        .await;
        assert_eq!(status, 200);
    }
    let mut tab = Tab::guest(&url, "joiner").await;
    let joined = tab.req(json!({"type":"join","room": room})).await;
    assert_eq!(joined["room"]["member_count"], 106);
    let first = joined["room"]["members"].as_array().unwrap();
    assert_eq!(first.len(), 100);
    let page = tab.req(json!({"type":"members","room": room})).await;
    assert_eq!(
        page["items"].as_array().unwrap(),
        first,
        "the same first page"
    );
    assert_eq!(page["more"], true);
    let last = page["items"][99]["id"].clone();
    let rest = tab
        .req(json!({"type":"members","room": room,"after": last}))
        .await;
    assert_eq!(rest["more"], false);
    let mut all: Vec<Value> = first.clone();
    all.extend(rest["items"].as_array().unwrap().iter().cloned());
    let ids: Vec<&str> = all.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "106 distinct members in id order");
    assert_eq!(ids.len(), 106);
    let online: Vec<&str> = all
        .iter()
        .filter(|m| m["online"] == true)
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(online, [tab.id()], "only the joiner is online");
}

both_engines!(roster_pages);

/// Room messages share the sender's send budget with 1:1 messages.
async fn room_sends_share_the_budget(engine: Engine) {
    let cluster = Cluster::single(
        engine,
        &[
            ("CHAT_LIMITS__SEND_PER_SECOND", "1"),
            ("CHAT_LIMITS__SEND_BURST", "3"),
        ],
    );
    let url = cluster.url(0);
    let room = unique_room("budget");
    let mut alice = Tab::guest(&url, "alice").await;
    let bob = Tab::guest(&url, "bob").await;
    alice.req(json!({"type":"join","room": room})).await;
    for i in 0..2 {
        let ack = alice
            .req(json!({"type":"send","to": bob.id(),"body": format!("dm {i}")}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
    let ack = alice
        .req(json!({"type":"send","room": room,"body":"room 1"}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let over = alice
        .req(json!({"type":"send","room": room,"body":"room 2"}))
        .await;
    assert!(is_error(&over, "rate_limited"), "{over}");
    let page = alice.req(json!({"type":"history","room": room})).await;
    let bodies: Vec<&Value> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["body"])
        .collect();
    assert_eq!(
        bodies,
        [&json!("room 1")],
        "the refused message was not stored"
    );
}

both_engines!(room_sends_share_the_budget);
