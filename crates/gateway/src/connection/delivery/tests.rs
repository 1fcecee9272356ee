//! The connection's main loop on an in-memory socket and the in-memory engine,
//! with tokio's clock paused: live events are pushed into the outbox in chosen
//! orders, the inbox holds the truth, and the client's end shows what was written
//! and when.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Message as WsMessage;
use chat_engine::{InboxEvent, SendRequest};
use chat_protocol::{StreamId, User};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::super::hello::SignedIn;
use super::super::test_socket::{self, MemSocket, Peer};
use super::super::{Conn, Stop};
use super::{HOLD, MAX_HELD, PAGE};
use crate::config::Settings;
use crate::router::{Out, Routed};
use crate::state::Shared;

/// A node state on the in-memory engine. Nobody is attached to its router, so
/// the test alone decides what reaches the outbox.
fn state() -> Shared {
    test_socket::state(Settings::default())
}

fn user(id: &str) -> User {
    User {
        id: id.into(),
        name: id.into(),
    }
}

/// Alice sends `n` messages to Bob; Bob's inbox events, oldest first.
async fn bob_inbox(state: &Shared, n: usize) -> Vec<InboxEvent> {
    let engine = &state.engine;
    for id in ["alice", "bob"] {
        engine.upsert_user(id, id).await.expect("user");
    }
    for i in 0..n {
        engine
            .send(SendRequest {
                from: "alice".into(),
                to: "bob".into(),
                body: format!("m{i}"),
                nonce: None,
                nonce_ttl_secs: 60,
                sent_at: "2026-12-04T00:00:00.000Z".into(),
                trace: None,
            })
            .await
            .expect("send");
    }
    let events = engine
        .read_inbox("bob", StreamId::ZERO, n + 1)
        .await
        .expect("read");
    assert_eq!(events.len(), n);
    events
}

/// An inbox event as the router would push it.
fn live(event: &InboxEvent) -> Out {
    Out::Event(Arc::new(Routed {
        id: event.id,
        prev: event.prev,
        frame: event.frame(),
    }))
}

/// Bob's connection running its main loop from `last_sent`.
fn run_conn(
    state: &Shared,
    last_sent: StreamId,
) -> (mpsc::Sender<Out>, Peer, tokio::task::JoinHandle<Stop>) {
    let (mut conn, tx, peer) = test_socket::conn(state.clone(), user("bob"));
    conn.last_sent = last_sent;
    let task = tokio::spawn(async move { conn.run().await });
    (tx, peer, task)
}

/// The `cursor` of a written message event (panics on anything else).
fn cursor(msg: &WsMessage) -> StreamId {
    let WsMessage::Text(text) = msg else {
        panic!("not a text frame: {msg:?}");
    };
    let json: serde_json::Value = serde_json::from_str(text.as_str()).expect("JSON frame");
    assert_eq!(json["type"], "message", "{json}");
    StreamId::parse(json["cursor"].as_str().expect("cursor")).expect("stream id")
}

fn ids(events: &[InboxEvent]) -> Vec<StreamId> {
    events.iter().map(|e| e.id).collect()
}

/// Reads `n` message frames from the client's end: their cursors. Fails after
/// a minute of (paused, so instantly skipped) time rather than hanging.
async fn read_cursors(peer: &mut Peer, n: usize) -> Vec<StreamId> {
    let mut out = Vec::new();
    while out.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(60), peer.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} frames written: {out:?}", out.len()))
            .expect("the connection wrote");
        out.push(cursor(&msg));
    }
    out
}

/// Lets the connection task handle everything queued, without moving the clock.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_event_ahead_of_its_predecessor_waits_for_it_and_both_are_written_in_order() {
    let state = state();
    let inbox = bob_inbox(&state, 3).await;
    let (tx, mut peer, _task) = run_conn(&state, StreamId::ZERO);

    tx.send(live(&inbox[1])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert!(peer.written().is_empty(), "the second event is held");
    tx.send(live(&inbox[0])).await.unwrap();
    assert_eq!(read_cursors(&mut peer, 2).await, ids(&inbox[..2]));
    // Nothing was read from the inbox: the third event, stored but never pushed,
    // is not written, not even after the hold would have run out.
    tokio::time::sleep(HOLD * 4).await;
    assert!(peer.written().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_gap_is_read_from_the_inbox_after_50_ms() {
    let state = state();
    let inbox = bob_inbox(&state, 3).await;
    let (tx, mut peer, _task) = run_conn(&state, StreamId::ZERO);

    let start = Instant::now();
    tx.send(live(&inbox[2])).await.unwrap();
    assert_eq!(read_cursors(&mut peer, 3).await, ids(&inbox));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(50) && waited <= Duration::from_millis(51),
        "the gap was read after {waited:?}, not after the 50 ms hold"
    );
    // The held event was written once, by the inbox read, and is dropped.
    tokio::time::sleep(HOLD * 4).await;
    assert!(peer.written().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_held_event_that_is_already_written_is_dropped_when_the_gap_is_read() {
    let state = state();
    let inbox = bob_inbox(&state, 4).await;
    let (tx, mut peer, _task) = run_conn(&state, StreamId::ZERO);

    // Events 3 and 2 arrive, then the hold runs out; the inbox read writes 1..4.
    tx.send(live(&inbox[2])).await.unwrap();
    tx.send(live(&inbox[1])).await.unwrap();
    assert_eq!(read_cursors(&mut peer, 4).await, ids(&inbox));
    // Late live copies of written events are dropped at once: never written
    // again, and not held either (a hold would end in an inbox read, which would
    // write this newer event, stored but not pushed).
    bob_inbox_next(&state, inbox[3].id).await;
    for event in &inbox {
        tx.send(live(event)).await.unwrap();
    }
    tokio::time::sleep(HOLD * 4).await;
    assert!(peer.written().is_empty());
}

#[tokio::test(start_paused = true)]
async fn one_event_more_than_max_held_reads_the_gap_at_once() {
    let state = state();
    let inbox = bob_inbox(&state, MAX_HELD + 3).await;
    let (tx, mut peer, _task) = run_conn(&state, StreamId::ZERO);

    let start = Instant::now();
    // Events 3..=MAX_HELD+2 arrive (1 and 2 never do): all are held...
    for event in &inbox[2..MAX_HELD + 2] {
        tx.send(live(event)).await.unwrap();
    }
    settle().await;
    assert!(peer.written().is_empty(), "{MAX_HELD} events are held");
    // ...and one more reads the gap without waiting for the hold.
    tx.send(live(&inbox[MAX_HELD + 2])).await.unwrap();
    assert_eq!(read_cursors(&mut peer, inbox.len()).await, ids(&inbox));
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no wait once too many are held"
    );
    tokio::time::sleep(HOLD * 4).await;
    assert!(peer.written().is_empty());
}

/// Inbox reads fail while `MAX_HELD` events wait for a predecessor that never
/// comes: the next event is not written past the gap; the connection closes 1013
/// (resume) having written nothing after the last contiguous event.
#[tokio::test(start_paused = true)]
async fn a_gap_that_cannot_be_read_closes_for_a_resume_instead_of_skipping_it() {
    let (state, faults) = test_socket::faulty_state(Settings::default());
    let inbox = bob_inbox(&state, MAX_HELD + 4).await;
    let (tx, mut peer, task) = run_conn(&state, StreamId::ZERO);

    tx.send(live(&inbox[0])).await.unwrap();
    assert_eq!(read_cursors(&mut peer, 1).await, vec![inbox[0].id]);
    faults.fail(chat_engine::memory::Op::ReadInbox);
    // Event 2 never arrives live and cannot be read: 3.. are held, then one more.
    for event in &inbox[2..MAX_HELD + 3] {
        tx.send(live(event)).await.unwrap();
    }
    let stop = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the connection stops")
        .expect("task");
    assert!(
        matches!(stop, Stop::Close(super::super::TRY_AGAIN, _)),
        "close 1013 expected, got {stop:?}"
    );
    let written = peer.written();
    assert!(
        written.is_empty(),
        "nothing written past the gap: {:?}",
        written.iter().map(cursor).collect::<Vec<_>>()
    );
}

#[tokio::test(start_paused = true)]
async fn catch_up_pages_through_the_inbox_then_live_events_follow() {
    let state = state();
    let inbox = bob_inbox(&state, 2 * PAGE + 50).await;
    let (tx, mut peer, _task) = run_conn(&state, StreamId::ZERO);

    tx.send(Out::CatchUp).await.unwrap();
    assert_eq!(read_cursors(&mut peer, inbox.len()).await, ids(&inbox));
    // A second catch-up finds nothing new.
    tx.send(Out::CatchUp).await.unwrap();
    tokio::time::sleep(HOLD * 4).await;
    assert!(peer.written().is_empty());
    // The next live event follows the last one read: written at once.
    let next = bob_inbox_next(&state, inbox.last().unwrap().id).await;
    tx.send(live(&next)).await.unwrap();
    assert_eq!(read_cursors(&mut peer, 1).await, vec![next.id]);
}

/// One more message from Alice: Bob's new event (which follows `after`).
async fn bob_inbox_next(state: &Shared, after: StreamId) -> InboxEvent {
    state
        .engine
        .send(SendRequest {
            from: "alice".into(),
            to: "bob".into(),
            body: "next".into(),
            nonce: None,
            nonce_ttl_secs: 60,
            sent_at: "2026-12-04T00:00:00.000Z".into(),
            trace: None,
        })
        .await
        .expect("send");
    let mut page = state
        .engine
        .read_inbox("bob", after, 2)
        .await
        .expect("read");
    assert_eq!(page.len(), 1);
    let event = page.remove(0);
    assert_eq!(event.prev, after);
    event
}

#[tokio::test(start_paused = true)]
async fn welcome_replays_everything_after_last_seen_over_several_pages() {
    let state = state();
    let inbox = bob_inbox(&state, 2 * PAGE + 10).await;
    let (mut conn, _tx, mut peer): (Conn<MemSocket>, _, _) =
        test_socket::conn(state.clone(), user("bob"));
    let seen = inbox[4].id;
    let signed = SignedIn {
        user: user("bob"),
        session: "s".into(),
        resumed: true,
        last_seen: Some(seen.to_string()),
        rooms: Default::default(),
    };
    assert!(conn.welcome(&signed).await.is_ok());
    assert!(conn.flush().await.is_ok());

    let first = tokio::time::timeout(Duration::from_secs(60), peer.next()).await;
    let Ok(Some(WsMessage::Text(welcome))) = first else {
        panic!("welcome is text");
    };
    let welcome: serde_json::Value = serde_json::from_str(welcome.as_str()).unwrap();
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["recovered"], true, "{welcome}");
    assert_eq!(welcome["cursor"], seen.to_string());
    let replayed = read_cursors(&mut peer, inbox.len() - 5).await;
    assert_eq!(replayed, ids(&inbox[5..]));
    assert!(peer.written().is_empty(), "nothing written twice");
    assert_eq!(conn.last_sent, inbox.last().unwrap().id);
}

#[tokio::test(start_paused = true)]
async fn welcome_with_an_unknown_cursor_starts_at_the_head_without_replay() {
    let state = state();
    let inbox = bob_inbox(&state, 3).await;
    let (mut conn, _tx, mut peer) = test_socket::conn(state.clone(), user("bob"));
    let signed = SignedIn {
        user: user("bob"),
        session: "s".into(),
        resumed: true,
        // Not an id of Bob's inbox: the chain cannot be proven.
        last_seen: Some("1-0".into()),
        rooms: Default::default(),
    };
    assert!(conn.welcome(&signed).await.is_ok());
    assert!(conn.flush().await.is_ok());
    let written = peer.written();
    assert_eq!(written.len(), 1, "only welcome: {written:?}");
    let WsMessage::Text(welcome) = &written[0] else {
        panic!("welcome is text");
    };
    let welcome: serde_json::Value = serde_json::from_str(welcome.as_str()).unwrap();
    assert_eq!(welcome["recovered"], false, "{welcome}");
    assert_eq!(welcome["cursor"], inbox[2].id.to_string());
}

/// Live events arrive shuffled, duplicated and mixed with catch-up requests: every
/// event is written exactly once, in inbox order.
#[tokio::test(start_paused = true)]
async fn never_writes_an_id_twice_or_out_of_order() {
    let state = state();
    let inbox = bob_inbox(&state, 60).await;
    let (tx, mut peer, _task) = run_conn(&state, StreamId::ZERO);

    let mut order: Vec<usize> = (0..inbox.len()).chain(0..inbox.len()).collect();
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for i in (1..order.len()).rev() {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        order.swap(i, (seed >> 33) as usize % (i + 1));
    }
    for (n, i) in order.into_iter().enumerate() {
        tx.send(live(&inbox[i])).await.unwrap();
        if n % 17 == 0 {
            tx.send(Out::CatchUp).await.unwrap();
        }
        if n % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
    }
    tokio::time::sleep(HOLD * 4).await;
    let written: Vec<StreamId> = peer.written().iter().map(cursor).collect();
    assert_eq!(written, ids(&inbox));
}
