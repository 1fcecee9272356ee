//! A signed-in connection fed generated frames (issue 12): mutations of every valid
//! request, random JSON and random text. Whatever arrives, the node never panics,
//! answers only well-formed frames, and the connection keeps working (a `ping` is
//! still answered at the end) — bad input gets an `error`, never a closed socket.
//!
//! 3,000 frames per run in CI; `CHAT_FUZZ_FRAMES=1000000 cargo test -p chat-gateway
//! --release --lib fuzz -- --nocapture` for the long run (`CHAT_FUZZ_SEED` picks the
//! seed).

use axum::extract::ws::Message as WsMessage;

use super::test_socket;
use crate::config::Settings;

/// xorshift64*: seeded, reproducible, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Every request a signed-in client may send, naming a real peer (`bob`) and room.
const SEEDS: &[&str] = &[
    r#"{"type":"ping","ref":"p1"}"#,
    r#"{"type":"send","ref":"s1","to":"bob","body":"hi there","nonce":"n-1"}"#,
    r#"{"type":"send","to":"bob","body":"\u00e9\ud83d\ude00 \"q\""}"#,
    r#"{"type":"history","ref":"h1","with":"bob","before":"1717000000000-3","limit":50}"#,
    r#"{"type":"history","with":"bob"}"#,
    r#"{"type":"conversations","ref":"cv"}"#,
    r#"{"type":"read","ref":"r1","with":"bob","up_to":"1717000000000-0"}"#,
    r#"{"type":"typing","to":"bob"}"#,
    r#"{"type":"users","ref":"us","query":"b","limit":20}"#,
    r#"{"type":"watch","ref":"w","users":["bob","nobody"]}"#,
    r#"{"type":"join","ref":"j1","room":"lobby","name":"The lobby"}"#,
    r#"{"type":"members","ref":"m1","room":"lobby"}"#,
    r#"{"type":"rooms","ref":"rs"}"#,
    r#"{"type":"send","ref":"c-9","room":"lobby","body":"hi all"}"#,
    r#"{"type":"history","room":"lobby","limit":20}"#,
    r#"{"type":"read","room":"lobby","up_to":"1717000000000-0"}"#,
    r#"{"type":"leave","ref":"l1","room":"lobby"}"#,
    r#"{"type":"hello","username":"again"}"#,
];

/// Values swapped in for a seed's strings and numbers.
const ODD: &[&str] = &[
    "\"\"",
    "\"0\"",
    "\"0-0\"",
    "\"18446744073709551615-18446744073709551615\"",
    "\"-1\"",
    "\"bob\"",
    "\"alice\"",
    "\"  \"",
    "null",
    "0",
    "-1",
    "18446744073709551616",
    "1e308",
    "true",
    "[]",
    "{}",
    "[\"bob\",\"bob\",\"\"]",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"room:lobby\"",
];

fn mutate(rng: &mut Rng) -> String {
    let seed = rng.pick(SEEDS);
    match rng.below(6) {
        // A value replaced by an odd one.
        0 | 1 => {
            let parts: Vec<&str> = seed.split(':').collect();
            if parts.len() < 2 {
                return seed.to_string();
            }
            let at = 1 + rng.below(parts.len() - 1);
            let rest = parts[at];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            let mut out = parts[..at].join(":");
            out.push(':');
            out.push_str(rng.pick(ODD));
            out.push_str(&rest[end..]);
            for p in &parts[at + 1..] {
                out.push(':');
                out.push_str(p);
            }
            out
        }
        // Truncated.
        2 => {
            let cut = rng.below(seed.len());
            seed[..boundary(seed, cut)].to_string()
        }
        // A long body or id.
        3 => seed.replacen("hi", &"x".repeat(1 + rng.below(6000)), 1),
        // Random characters spliced in.
        4 => {
            let at = boundary(seed, rng.below(seed.len()));
            let c = char::from_u32(rng.next() as u32 % 0x11_0000).unwrap_or('~');
            format!("{}{c}{}", &seed[..at], &seed[at..])
        }
        // Random printable text.
        _ => (0..rng.below(80))
            .map(|_| char::from(32 + (rng.next() % 95) as u8))
            .collect(),
    }
}

/// The largest char boundary of `s` at or before `i`.
fn boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Checks a frame the connection wrote: a JSON object with a `type`, or a close.
fn check_written(msg: &WsMessage, input: &str) {
    match msg {
        WsMessage::Text(text) => {
            let v: serde_json::Value = serde_json::from_str(text.as_str())
                .unwrap_or_else(|e| panic!("not JSON ({e}) after {input:?}: {text}"));
            assert!(v["type"].is_string(), "no type after {input:?}: {text}");
        }
        WsMessage::Close(frame) => panic!("closed ({frame:?}) after {input:?}"),
        WsMessage::Ping(_) | WsMessage::Pong(_) => {}
        WsMessage::Binary(_) => panic!("a binary frame after {input:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_a_signed_in_connection_with_generated_frames() {
    let frames: usize = std::env::var("CHAT_FUZZ_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let seed: u64 = std::env::var("CHAT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c0ff_ee15_600d);

    let mut settings = Settings::default();
    settings.auth.guests = Some(true);
    // Budgets out of the way: this is about what any frame does, not about rates
    // (budgets have their own tests).
    let l = &mut settings.limits;
    for (rate, burst) in [
        (&mut l.send_per_second, &mut l.send_burst),
        (&mut l.typing_per_second, &mut l.typing_burst),
        (&mut l.history_per_second, &mut l.history_burst),
        (&mut l.conversations_per_second, &mut l.conversations_burst),
        (&mut l.users_per_second, &mut l.users_burst),
        (&mut l.watch_ids_per_second, &mut l.watch_ids_burst),
        (&mut l.read_per_second, &mut l.read_burst),
        (&mut l.rooms_per_second, &mut l.rooms_burst),
        (&mut l.ping_per_second, &mut l.ping_burst),
    ] {
        *rate = 1_000_000_000;
        *burst = 1_000_000_000;
    }
    let state = test_socket::state(settings);
    state.engine.upsert_user("bob", "bob").await.expect("bob");
    let (socket, mut peer) = test_socket::pair();
    let admitted = crate::admission::Admitted::untracked();
    let task = tokio::spawn(super::serve(state.clone(), socket, admitted));

    peer.send(super::text(r#"{"type":"hello","username":"alice"}"#.into()));
    let Some(WsMessage::Text(welcome)) = peer.next().await else {
        panic!("welcome expected");
    };
    assert!(
        welcome.as_str().contains(r#""type":"welcome""#),
        "{welcome}"
    );

    let mut rng = Rng(seed | 1);
    let mut batch = Vec::new();
    for i in 0..frames {
        batch.push(mutate(&mut rng));
        if batch.len() == 64 || i + 1 == frames {
            for frame in &batch {
                peer.send(super::text(frame.clone()));
            }
            // In lock step: a ping after every 64 frames must be answered (after
            // whatever the 64 got), so the connection is alive and keeps up.
            let reference = format!("sync-{i}");
            peer.send(super::text(format!(
                r#"{{"type":"ping","ref":"{reference}"}}"#
            )));
            let wanted = format!(r#""ref":"{reference}""#);
            let last = batch.last().cloned().unwrap_or_default();
            let pong = tokio::time::timeout(std::time::Duration::from_secs(30), async {
                loop {
                    match peer.next().await {
                        Some(WsMessage::Text(t)) if t.as_str().contains(&wanted) => return t,
                        Some(msg) => check_written(&msg, &last),
                        None => panic!("the connection ended after one of {batch:?}"),
                    }
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no answer to a ping after {batch:?}"));
            assert!(pong.as_str().contains(r#""type":"pong""#), "{pong}");
            batch.clear();
        }
    }
    assert!(!task.is_finished(), "the connection is still open");
    task.abort();
    println!("fuzz: {frames} generated frames (seed {seed:#x}) on a signed-in connection");
}
