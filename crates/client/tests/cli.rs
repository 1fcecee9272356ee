//! `chat-cli` as a user types into it: two terminal clients on one node (either engine)
//! join a room, talk, read its history and leave; the sender sees its own message once;
//! `/logout` ends the session and the program.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::{unique, Cluster, Engine, NO_RATE_LIMIT};

/// A running `chat-cli`: its input, and its output lines as they come.
struct Cli {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
}

impl Cli {
    fn start(url: &str, username: &str) -> Cli {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chat-cli"))
            .args(["--url", url, "--username", username])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start chat-cli");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut cli = Cli {
            child,
            stdin,
            lines,
            seen: Vec::new(),
        };
        cli.expect("signed in as");
        cli
    }

    fn type_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to chat-cli");
        self.stdin.flush().expect("flush");
    }

    /// Waits for an output line containing `text`.
    fn expect(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with {text:?}; got:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Quits and returns every line it printed.
    fn quit(mut self) -> Vec<String> {
        self.type_line("/quit");
        let status = self.child.wait().expect("chat-cli exits");
        assert!(status.success(), "chat-cli exited with {status}");
        self.seen.extend(self.lines.try_iter());
        self.seen
    }
}

fn room_in_the_terminal(engine: Engine) {
    let cluster = Cluster::single(engine, NO_RATE_LIMIT);
    let url = cluster.url(0);
    let room = unique("cli");
    let mut bob = Cli::start(&url, "bob");
    bob.type_line(&format!("/join {room}"));
    bob.expect(&format!("joined room {room}"));

    let mut alice = Cli::start(&url, "alice");
    alice.type_line("hello nobody");
    alice.expect("choose a peer or a room first");
    alice.type_line(&format!("/join {room}"));
    alice.expect(&format!("joined room {room} ({room}), 2 members"));
    bob.expect(&format!("joined room {room})"));

    alice.type_line("hello room");
    alice.expect(&format!("me → room {room}: hello room"));
    bob.expect(&format!("→ room {room}: hello room"));
    alice.type_line("/history");
    alice.expect(&format!("me → room {room}: hello room"));

    alice.type_line("/leave");
    alice.expect(&format!("left room {room}"));
    bob.expect(&format!("left room {room})"));
    alice.type_line("after leaving");
    alice.expect("choose a peer or a room first");

    let alice_lines = alice.quit();
    let shown = alice_lines
        .iter()
        .filter(|l| l.contains("hello room"))
        .count();
    assert_eq!(
        shown,
        2,
        "the send and the history, not the echo of the send:\n{}",
        alice_lines.join("\n")
    );
    let bob_lines = bob.quit();
    assert!(
        !bob_lines.iter().any(|l| l.contains("after leaving")),
        "{bob_lines:?}"
    );

    let mut carol = Cli::start(&url, "carol");
    carol.type_line("/logout");
    carol.expect("logged out (close Some(1000)): this session is over");
    let status = carol.child.wait().expect("chat-cli exits");
    assert!(status.success(), "chat-cli exited with {status}");
}

#[test]
fn room_in_the_terminal_memory() {
    room_in_the_terminal(Engine::Memory);
}

#[test]
fn room_in_the_terminal_redis() {
    room_in_the_terminal(Engine::Redis);
}
