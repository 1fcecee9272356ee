//! The client's room helpers (protocol 1.1) against real gateway nodes: join, send and
//! receive between clients, retries by nonce, history paging, the rooms list, the
//! roster, read markers and leave; per-room cursors sent as `hello.rooms` on resume
//! and reconnect, with the missed events delivered exactly once and in order — on
//! both engines with one node, and across two nodes on Redis.

mod common;

use common::*;

/// Every room request, between three users on one node.
async fn room_requests(engine: Engine) {
    let cluster = Cluster::single(engine, NO_RATE_LIMIT);
    let url = cluster.url(0);
    let room = unique("lobby");
    let mut alice = guest(&url, "alice").await;
    let mut bob = guest(&url, "bob").await;
    let mut carol = guest(&url, "carol").await;
    let (a, b) = (alice.user_id().to_string(), bob.user_id().to_string());

    // Join creates the room with its name; the joiner hears of its own join.
    let info = alice.join(&room, Some("The lobby")).await.expect("join");
    assert_eq!(info.id, room);
    assert_eq!(info.name, "The lobby");
    assert_eq!(info.member_count, 1);
    assert_eq!(info.members.len(), 1);
    assert_eq!(info.members[0].id, a);
    assert_eq!(info.last, None);
    assert_eq!(
        alice.room_cursor(&room),
        None,
        "an empty room: nothing seen"
    );
    let ev = next_room_event(&mut alice, &room, "alice's own join").await;
    assert!(
        matches!(&ev, RoomEvent::Member { change: MemberChange::Joined, user, .. } if *user == a),
        "{ev:?}"
    );
    assert_eq!(
        alice.room_cursor(&room),
        Some(ev.id()),
        "a member event moves it"
    );

    // A second join keeps the name, and every member hears of it.
    let info = bob.join(&room, Some("ignored")).await.expect("join");
    assert_eq!(info.name, "The lobby");
    assert_eq!(info.member_count, 2);
    for client in [&mut alice, &mut bob] {
        let ev = next_room_event(client, &room, "bob's join").await;
        assert!(
            matches!(&ev, RoomEvent::Member { change: MemberChange::Joined, user, .. } if *user == b),
            "{ev:?}"
        );
    }
    let again = bob.join(&room, None).await.expect("join again");
    assert_eq!(again.member_count, 2, "joining again changes nothing");

    // A message reaches every member, the sender included.
    let sent = bob.room_send(&room, "hi all").await.expect("room send");
    assert_eq!(sent.room.as_deref(), Some(room.as_str()));
    assert_eq!(sent.conversation, format!("room:{room}"));
    assert_eq!(sent.from, b);
    assert_eq!(sent.to, "", "a room message has no recipient");
    for client in [&mut alice, &mut bob] {
        let ev = next_room_event(client, &room, "hi all").await;
        assert_eq!(ev, RoomEvent::message(&sent));
        assert_eq!(client.room_cursor(&room), Some(sent.id.as_str()));
    }

    // A retry with the same nonce gets the first message back, stored and delivered once.
    let first = bob
        .room_send_with_nonce(&room, "first", "nonce-1")
        .await
        .expect("room send");
    let retry = bob
        .room_send_with_nonce(&room, "retry", "nonce-1")
        .await
        .expect("retried room send");
    assert_eq!(retry, first, "the retry returns the original message");
    let ev = next_room_event(&mut alice, &room, "first").await;
    assert_eq!(ev, RoomEvent::message(&first));
    assert_quiet(&mut alice, &room, "a retried send is delivered once").await;

    // History pages: newest first page, then older ones; the whole, in order.
    let mut ids = vec![sent.id.clone(), first.id.clone()];
    for i in 0..5 {
        let m = alice
            .room_send(&room, &format!("m{i}"))
            .await
            .expect("send");
        ids.push(m.id);
    }
    let (page, more) = bob.room_history(&room, None, 4).await.expect("history");
    let got: Vec<&str> = page.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(got, ids[3..], "the newest 4, ascending");
    assert!(more);
    assert!(page
        .iter()
        .all(|m| m.room.as_deref() == Some(room.as_str())));
    let (page, more) = bob
        .room_history(&room, Some(&ids[3]), 4)
        .await
        .expect("older page");
    let got: Vec<&str> = page.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(got, ids[..3]);
    assert!(!more);
    let all = bob.full_room_history(&room).await.expect("full history");
    let got: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(got, ids, "every message once, oldest first");
    assert_eq!(all[1].body, "first", "the retry's body was not stored");

    // The rooms list: bob has alice's 5 unread (his own sends moved his marker).
    let rooms = bob.rooms().await.expect("rooms");
    assert_eq!(rooms.len(), 1, "{rooms:?}");
    assert_eq!(rooms[0].id, room);
    assert_eq!(rooms[0].name, "The lobby");
    assert_eq!(rooms[0].member_count, 2);
    assert_eq!(rooms[0].unread, 5);
    assert_eq!(
        rooms[0].last.as_ref().map(|m| m.id.as_str()),
        Some(ids[6].as_str())
    );

    // Read: the marker moves; bob's own connection hears of it.
    bob.room_read(&room, &ids[4]).await.expect("read");
    let read = loop {
        match bob.next_event_timeout(WAIT).await.expect("event") {
            Some(ServerFrame::Read {
                conversation,
                by,
                up_to,
                ..
            }) => break (conversation, by, up_to),
            Some(_) => continue,
            None => panic!("no read event after room_read"),
        }
    };
    assert_eq!(read, (format!("room:{room}"), b.clone(), ids[4].clone()));
    let rooms = bob.rooms().await.expect("rooms");
    assert_eq!(rooms[0].unread, 2);

    // Not a member: refused, nothing stored; a bad id is a bad request.
    assert_code(
        carol.members(&room, None).await,
        ErrorCode::Forbidden,
        "members",
    );
    assert_code(
        carol.room_send(&room, "intruder").await,
        ErrorCode::Forbidden,
        "send",
    );
    assert_code(
        carol.room_history(&room, None, 10).await,
        ErrorCode::Forbidden,
        "history",
    );
    assert_code(
        carol.join("Not Valid", None).await,
        ErrorCode::BadRequest,
        "join",
    );

    // The roster, in pages after a member id.
    carol.join(&room, None).await.expect("join");
    let (members, more) = carol.members(&room, None).await.expect("members");
    assert!(!more);
    let mut listed: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
    let mut expected = vec![a.clone(), b.clone(), carol.user_id().to_string()];
    expected.sort();
    assert_eq!(listed, expected, "members in id order");
    let (rest, more) = carol
        .members(&room, Some(&listed[0]))
        .await
        .expect("members after");
    assert!(!more);
    assert_eq!(
        rest.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        listed[1..]
    );
    let all = carol.all_members(&room).await.expect("all members");
    assert_eq!(all, members);
    listed.clear();

    // Leave: the others are told, the leaver too; then nothing more from the room,
    // and the room is no longer recovered.
    bob.leave(&room).await.expect("leave");
    assert_eq!(bob.room_cursor(&room), None);
    assert!(!bob.resume_state().rooms.contains_key(&room));
    let left = |ev: &RoomEvent| matches!(ev, RoomEvent::Member { change: MemberChange::Left, user, .. } if *user == b);
    loop {
        let ev = next_room_event(&mut alice, &room, "bob left").await;
        if left(&ev) {
            break;
        }
    }
    loop {
        let ev = next_room_event(&mut bob, &room, "bob's own leave").await;
        if left(&ev) {
            break;
        }
    }
    assert_eq!(
        bob.room_cursor(&room),
        None,
        "its own leave does not restart it"
    );
    assert_code(
        bob.room_send(&room, "still here?").await,
        ErrorCode::Forbidden,
        "send after leaving",
    );
    alice
        .room_send(&room, "after bob left")
        .await
        .expect("send");
    let ev = room_events_until(&mut carol, &room, "after bob left", "carol").await;
    assert!(!ev.is_empty());
    assert_quiet(&mut bob, &room, "nothing after leaving").await;
    bob.leave(&room)
        .await
        .expect("leaving again changes nothing");
}

both_engines!(room_requests);

/// Resume and reconnect on one node: the rooms listed in `hello.rooms` get every
/// event missed, once, in order; a rewound cursor's replay is de-duplicated; a room
/// that cannot be recovered (or is not the user's) starts live without a cursor.
async fn room_recovery(engine: Engine) {
    let cluster = Cluster::single(engine, NO_RATE_LIMIT);
    let url = cluster.url(0);
    let room = unique("rec");
    let mut alice = guest(&url, "alice").await;
    let mut bob = guest(&url, "bob").await;
    alice.join(&room, None).await.expect("join");
    bob.join(&room, None).await.expect("join");
    let before = alice.room_send(&room, "before").await.expect("send");
    room_events_until(&mut bob, &room, "before", "before").await;
    let state = bob.resume_state();
    assert_eq!(state.rooms.get(&room), Some(&before.id));
    bob.close().await;

    // Traffic while bob is away: messages and a member event.
    let mut away = Vec::new();
    for i in 0..3 {
        let m = alice
            .room_send(&room, &format!("away {i}"))
            .await
            .expect("send");
        away.push(RoomEvent::message(&m));
    }
    let mut carol = guest(&url, "carol").await;
    carol.join(&room, None).await.expect("join");
    let carol_id = carol.user_id().to_string();

    let mut bob = Client::resume(&url, state).await.expect("resume");
    let report = &bob.welcome().rooms;
    assert_eq!(report.len(), 1, "{report:?}");
    assert!(report[&room].recovered, "{report:?}");
    let live = alice.room_send(&room, "live").await.expect("send");
    let got = room_events(&mut bob, &room, 5, "the missed events, then live").await;
    assert_eq!(got[..3], away[..]);
    assert!(
        matches!(&got[3], RoomEvent::Member { change: MemberChange::Joined, user, .. } if *user == carol_id),
        "{got:?}"
    );
    assert_eq!(got[4], RoomEvent::message(&live));
    assert_quiet(&mut bob, &room, "each missed event once").await;
    let seen_carol = got[3].clone();

    // Reconnect while events are delivered but not consumed: they come again, once.
    let q0 = alice.room_send(&room, "queued 0").await.expect("send");
    let q1 = alice.room_send(&room, "queued 1").await.expect("send");
    let mut bob = bob.reconnect(&url).await.expect("reconnect");
    assert!(bob.welcome().rooms[&room].recovered);
    let got = room_events(&mut bob, &room, 2, "the unconsumed events").await;
    assert_eq!(got, [RoomEvent::message(&q0), RoomEvent::message(&q1)]);
    assert_quiet(&mut bob, &room, "queued events once").await;

    // A cursor rewound to "before": the replay repeats what bob already has
    // (messages and carol's join), and the client drops all of it.
    let mut state = bob.resume_state();
    state.rooms.insert(room.clone(), before.id.clone());
    bob.close().await;
    let mut bob = Client::resume(&url, state).await.expect("resume");
    assert!(bob.welcome().rooms[&room].recovered);
    let fresh = alice.room_send(&room, "fresh").await.expect("send");
    let ev = next_room_event(&mut bob, &room, "the first new event").await;
    assert_eq!(
        ev,
        RoomEvent::message(&fresh),
        "replayed duplicates (e.g. {seen_carol:?}) are dropped"
    );

    // Not recoverable (before the room's first retained event), and a room bob is not
    // in: only the first is reported, and neither keeps a cursor.
    let mut state = bob.resume_state();
    state.rooms.insert(room.clone(), "1-0".into());
    state.rooms.insert("not-a-member".into(), "1-0".into());
    bob.close().await;
    let mut bob = Client::resume(&url, state).await.expect("resume");
    let report = &bob.welcome().rooms;
    assert_eq!(report.len(), 1, "{report:?}");
    assert!(!report[&room].recovered, "{report:?}");
    assert_eq!(bob.room_cursor(&room), None);
    assert_eq!(bob.room_cursor("not-a-member"), None);
    let next = alice.room_send(&room, "next").await.expect("send");
    let ev = next_room_event(&mut bob, &room, "live after no recovery").await;
    assert_eq!(ev, RoomEvent::message(&next), "live only, nothing older");
    assert_eq!(bob.room_cursor(&room), Some(next.id.as_str()));
    drop(carol);
}

both_engines!(room_recovery);

/// A joiner who disconnects before consuming any room event still recovers what
/// followed its join: `join` starts the room's cursor at the room's last message.
async fn join_starts_the_cursor(engine: Engine) {
    let cluster = Cluster::single(engine, NO_RATE_LIMIT);
    let url = cluster.url(0);
    let room = unique("start");
    let mut alice = guest(&url, "alice").await;
    alice.join(&room, None).await.expect("join");
    let last = alice
        .room_send(&room, "last before bob")
        .await
        .expect("send");
    let mut bob = guest(&url, "bob").await;
    let info = bob.join(&room, None).await.expect("join");
    assert_eq!(info.last.as_ref(), Some(&last));
    assert_eq!(bob.room_cursor(&room), Some(last.id.as_str()));
    let state = bob.resume_state();
    bob.close().await;
    let missed = alice
        .room_send(&room, "while bob away")
        .await
        .expect("send");
    let mut bob = Client::resume(&url, state).await.expect("resume");
    assert!(bob.welcome().rooms[&room].recovered);
    let got = room_events_until(&mut bob, &room, "while bob away", "the missed message").await;
    // Bob's own join event, then the message: nothing from before the join.
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(matches!(
        &got[0],
        RoomEvent::Member {
            change: MemberChange::Joined,
            ..
        }
    ));
    assert_eq!(got[1], RoomEvent::message(&missed));
}

both_engines!(join_starts_the_cursor);

/// Two nodes on Redis: room traffic between nodes, and a member who comes back on
/// the other node (by resume, then by reconnect) gets what it missed once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_recovery_across_two_nodes() {
    let cluster = Cluster::start(Engine::Redis, 2, NO_RATE_LIMIT);
    let (n0, n1) = (cluster.url(0), cluster.url(1));
    let room = unique("two");
    let mut alice = guest(&n0, "alice").await;
    let mut bob = guest(&n1, "bob").await;
    let mut carol = guest(&n0, "carol").await;
    alice.join(&room, None).await.expect("join");
    bob.join(&room, None).await.expect("join");
    carol.join(&room, None).await.expect("join");
    let carol_id = carol.user_id().to_string();

    let m = bob.room_send(&room, "from node 1").await.expect("send");
    room_events_until(&mut alice, &room, "from node 1", "alice on node 0").await;
    room_events_until(&mut bob, &room, "from node 1", "bob on node 1").await;
    assert_eq!(bob.room_cursor(&room), Some(m.id.as_str()));
    let state = bob.resume_state();
    bob.close().await;

    let mut away = Vec::new();
    for i in 0..3 {
        let m = alice
            .room_send(&room, &format!("away {i}"))
            .await
            .expect("send");
        away.push(RoomEvent::message(&m));
    }
    carol.leave(&room).await.expect("leave");

    let mut bob = Client::resume(&n0, state).await.expect("resume on node 0");
    assert!(bob.welcome().rooms[&room].recovered, "{:?}", bob.welcome());
    let live = alice.room_send(&room, "live").await.expect("send");
    let got = room_events(&mut bob, &room, 5, "the missed events on node 0").await;
    assert_eq!(got[..3], away[..]);
    assert!(
        matches!(&got[3], RoomEvent::Member { change: MemberChange::Left, user, .. } if *user == carol_id),
        "{got:?}"
    );
    assert_eq!(got[4], RoomEvent::message(&live));
    assert_quiet(&mut bob, &room, "each missed event once").await;

    // Back to node 1 with two events delivered but not consumed.
    let q0 = alice.room_send(&room, "queued 0").await.expect("send");
    let q1 = alice.room_send(&room, "queued 1").await.expect("send");
    let mut bob = bob.reconnect(&n1).await.expect("reconnect to node 1");
    assert!(bob.welcome().rooms[&room].recovered);
    let got = room_events(&mut bob, &room, 2, "the unconsumed events on node 1").await;
    assert_eq!(got, [RoomEvent::message(&q0), RoomEvent::message(&q1)]);
    assert_quiet(&mut bob, &room, "queued events once").await;
}
