//! Protocol 1.1, "Limits and bad input": every request kind has a budget per user,
//! shared by the user's connections (on a node); a request over it gets `error`
//! `rate_limited` with its `ref` and nothing is done; each refusal is counted by kind.
//! `typing` goes only to existing users, at most once a second per recipient.

mod common;

use std::time::Duration;

use chat_protocol::{ClientFrame, ServerFrame};
use common::*;

/// Small bursts, slow refills (a token a second at most: the bursts below are sent
/// in one go, well within that).
const BUDGETS: &[(&str, &str)] = &[
    ("CHAT_LIMITS__SEND_PER_SECOND", "1"),
    ("CHAT_LIMITS__SEND_BURST", "3"),
    ("CHAT_LIMITS__TYPING_PER_SECOND", "1"),
    ("CHAT_LIMITS__TYPING_BURST", "3"),
    ("CHAT_LIMITS__HISTORY_PER_SECOND", "1"),
    ("CHAT_LIMITS__HISTORY_BURST", "3"),
    ("CHAT_LIMITS__CONVERSATIONS_PER_SECOND", "1"),
    ("CHAT_LIMITS__CONVERSATIONS_BURST", "2"),
    ("CHAT_LIMITS__USERS_PER_SECOND", "1"),
    ("CHAT_LIMITS__USERS_BURST", "3"),
    ("CHAT_LIMITS__WATCH_IDS_PER_SECOND", "1"),
    ("CHAT_LIMITS__WATCH_IDS_BURST", "250"),
    ("CHAT_LIMITS__READ_PER_SECOND", "1"),
    ("CHAT_LIMITS__READ_BURST", "3"),
    ("CHAT_LIMITS__PING_PER_SECOND", "1"),
    ("CHAT_LIMITS__PING_BURST", "3"),
];

/// Sends `frames` in one go (each with its own `ref`) and collects, for up to a
/// second after the last expected reply, the refs answered `rate_limited` and the
/// refs answered otherwise.
async fn burst(client: &mut Client, frames: Vec<ClientFrame>) -> (Vec<String>, Vec<String>) {
    let mut refs = Vec::new();
    for (i, mut frame) in frames.into_iter().enumerate() {
        let r = format!("b{i}");
        frame.set_reference(r.clone());
        refs.push(r);
        client.send_frame(&frame).await.expect("frame written");
    }
    let (mut limited, mut answered) = (Vec::new(), Vec::new());
    while let Ok(Some(frame)) = client.next_event_timeout(Duration::from_millis(700)).await {
        let Some(r) = frame.reference().map(str::to_string) else {
            continue;
        };
        assert!(refs.contains(&r), "a reply to a ref never sent: {frame:?}");
        match frame {
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                ..
            } => limited.push(r),
            _ => answered.push(r),
        }
    }
    (limited, answered)
}

fn n_of(n: usize, frame: ClientFrame) -> Vec<ClientFrame> {
    vec![frame; n]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_kind_has_a_budget_per_user() {
    let cluster = Cluster::single(Engine::Memory, BUDGETS);
    let url = cluster.url(0);
    let mut alice = guest(&url, "alice").await;
    let mut bob = guest(&url, "bob").await;
    let bob_id = bob.user_id().to_string();
    let mut alice2 = device(&url, alice.session()).await;

    // Reply kinds: the burst is served, the rest refused with their refs.
    let history = ClientFrame::History {
        reference: None,
        with: bob_id.clone(),
        before: None,
        limit: Some(10),
    };
    let cases: Vec<(&str, usize, ClientFrame)> = vec![
        ("ping", 3, ClientFrame::Ping { reference: None }),
        ("history", 3, history.clone()),
        (
            "conversations",
            2,
            ClientFrame::Conversations { reference: None },
        ),
        (
            "users",
            3,
            ClientFrame::Users {
                reference: None,
                query: "a".into(),
                limit: Some(5),
            },
        ),
    ];
    let before = scrape(&cluster).await;
    for (kind, allowed, frame) in cases {
        let (limited, answered) = burst(&mut alice, n_of(allowed + 2, frame)).await;
        assert_eq!(answered.len(), allowed, "{kind}: the burst is served");
        assert_eq!(
            limited,
            vec![format!("b{allowed}"), format!("b{}", allowed + 1)],
            "{kind}"
        );
    }

    // No-reply kinds: only the refusals answer. `watch` costs one token per id.
    let read = ClientFrame::Read {
        reference: None,
        with: bob_id.clone(),
        up_to: "1-0".into(),
    };
    let (limited, _) = burst(&mut alice2, n_of(5, read)).await;
    assert_eq!(limited, vec!["b3".to_string(), "b4".to_string()], "read");
    let ids: Vec<String> = (0..200).map(|i| format!("nobody-{i}")).collect();
    let watch = ClientFrame::Watch {
        reference: None,
        users: ids,
    };
    let (limited, _) = burst(&mut alice2, n_of(2, watch)).await;
    assert_eq!(
        limited,
        vec!["b1".to_string()],
        "watch: 200 ids, then 200 more"
    );
    let typing = ClientFrame::Typing {
        reference: None,
        to: bob_id.clone(),
    };
    let (limited, _) = burst(&mut alice, n_of(5, typing)).await;
    assert_eq!(limited, vec!["b3".to_string(), "b4".to_string()], "typing");

    // Sends, shared by the user's two connections: the refused one is not stored.
    let mut sent = Vec::new();
    for i in 0..3 {
        let client = if i == 1 { &mut alice2 } else { &mut alice };
        sent.push(
            client
                .send(&bob_id, &format!("m{i}"))
                .await
                .expect("within the burst"),
        );
    }
    assert_code(
        alice2.send(&bob_id, "one too many").await,
        &[ErrorCode::RateLimited],
        "a 4th send across both connections",
    );

    let after = scrape(&cluster).await;
    for (kind, refused) in [
        ("ping", 2.0),
        ("history", 2.0),
        ("conversations", 2.0),
        ("users", 2.0),
        ("read", 2.0),
        ("watch", 1.0),
        ("typing", 2.0),
        ("send", 1.0),
    ] {
        let name = format!("chat_rate_limited_total{{kind=\"{kind}\"}}");
        let moved = metric(&after, &name).unwrap_or(0.0) - metric(&before, &name).unwrap_or(0.0);
        assert_eq!(moved, refused, "{name}");
    }
    let (history, _) = bob
        .history(alice.user_id(), None, 100)
        .await
        .expect("history");
    assert_eq!(history, sent, "the refused send was not stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_only_to_existing_users_and_once_a_second_per_recipient() {
    let cluster = Cluster::single(Engine::Memory, NO_RATE_LIMIT);
    let url = cluster.url(0);
    let mut alice = guest(&url, "alice").await;
    let mut bob = guest(&url, "bob").await;
    let mut carol = guest(&url, "carol").await;
    let (bob_id, carol_id) = (bob.user_id().to_string(), carol.user_id().to_string());

    alice
        .send_frame(&ClientFrame::Typing {
            reference: Some("t-ghost".into()),
            to: "no-such-user-xyz".into(),
        })
        .await
        .expect("typing");
    assert_eq!(
        expect_error(&mut alice, "typing to nobody").await,
        (Some("t-ghost".to_string()), ErrorCode::NotFound)
    );

    for _ in 0..20 {
        send_typing(&mut alice, &bob_id).await;
        send_typing(&mut alice, &carol_id).await;
    }
    for (client, who) in [(&mut bob, "bob"), (&mut carol, "carol")] {
        let mut typing = 0;
        while let Ok(Some(frame)) = client.next_event_timeout(Duration::from_millis(500)).await {
            if matches!(frame, ServerFrame::Typing { .. }) {
                typing += 1;
            }
        }
        assert_eq!(typing, 1, "{who}: one typing of the 20 within a second");
    }
    // A second later the next one goes through.
    tokio::time::sleep(Duration::from_millis(600)).await;
    send_typing(&mut alice, &bob_id).await;
    expect_frame(&mut bob, "typing after a second", |f| {
        matches!(f, ServerFrame::Typing { .. })
    })
    .await;
}

async fn scrape(cluster: &Cluster) -> String {
    let (status, text) = http(cluster.addr(0), "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    text
}
