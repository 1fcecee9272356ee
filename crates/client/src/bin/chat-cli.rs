//! `chat-cli`: a small terminal client for trying a gateway by hand.
//!
//! ```text
//! chat-cli --url ws://127.0.0.1:8080/ws --username alice
//! /to <user id>   choose the peer      /history   show the last 20 messages
//! /join <room>    join a room and talk there (created on first join)
//! /leave          leave the room       /quit      leave the program
//! /logout         end this session everywhere, then leave
//! anything else is sent to the peer or the room
//! ```
//!
//! It prints the session and cursor on exit, so `--session S --last-seen C` resumes
//! (not after `/logout`: that session is over).

use std::time::Duration;

use anyhow::{bail, Context};
use chat_client::{Client, ClientError, Credential, MemberChange, Message, ServerFrame};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

#[derive(Parser, Debug)]
#[command(name = "chat-cli", about = "Terminal client of the chat cluster")]
struct Args {
    /// WebSocket URL of a gateway node.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws", env = "CHAT_URL")]
    url: String,
    /// Sign in as a guest with this name.
    #[arg(long, group = "cred")]
    username: Option<String>,
    /// Sign in with a JWT signed by the host application.
    #[arg(long, group = "cred")]
    token: Option<String>,
    /// Resume a session issued earlier.
    #[arg(long, group = "cred")]
    session: Option<String>,
    /// Cursor to recover from (with --session).
    #[arg(long)]
    last_seen: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cred = match (args.username, args.token, args.session) {
        (Some(u), None, None) => Credential::Username(u),
        (None, Some(t), None) => Credential::Token(t),
        (None, None, Some(s)) => Credential::Session(s),
        _ => bail!("give exactly one of --username, --token, --session"),
    };
    let mut client = Client::connect(&args.url, cred, args.last_seen)
        .await
        .with_context(|| format!("connecting to {}", args.url))?;
    let w = client.welcome().clone();
    println!(
        "signed in as {} ({}) on {}; resumed={} recovered={}",
        w.user.name, w.user.id, w.node, w.resumed, w.recovered
    );
    for u in &w.unread {
        println!("  {} unread from {} ({})", u.count, u.peer.name, u.peer.id);
    }
    println!(
        "commands: /to <user id>, /join <room>, /leave, /history, /logout, /quit; other lines are sent"
    );

    let mut peer: Option<Target> = None;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut logout = false;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line? else { break };
                if line.trim() == "/logout" {
                    logout = true;
                    break;
                }
                match handle_line(&mut client, &mut peer, line.trim()).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(ClientError::Server { code, message }) => println!("! {code}: {message}"),
                    Err(e) => return Err(e.into()),
                }
            }
            event = client.next_event() => match event {
                Ok(frame) => print_event(client.user_id(), &frame),
                Err(ClientError::Closed { code, reason }) => {
                    println!("! connection closed ({code:?}) {reason}");
                    break;
                }
                Err(e) => return Err(e.into()),
            },
        }
    }
    if logout {
        match client.logout().await {
            Ok(code) => {
                println!("logged out (close {code:?}): this session is over");
                return Ok(());
            }
            Err((c, e)) => {
                println!("! logout failed: {e}");
                client = c;
            }
        }
    }
    println!(
        "session {} cursor {}",
        client.session(),
        client.cursor().unwrap_or("-")
    );
    tokio::time::timeout(Duration::from_secs(2), client.close())
        .await
        .ok();
    Ok(())
}

/// Where lines go: a user (1:1) or a room.
#[derive(Clone, Debug)]
enum Target {
    Peer(String),
    Room(String),
}

/// Runs one input line; `Ok(false)` means quit.
async fn handle_line(
    client: &mut Client,
    target: &mut Option<Target>,
    line: &str,
) -> Result<bool, ClientError> {
    if line.is_empty() {
        return Ok(true);
    }
    if line == "/quit" {
        return Ok(false);
    }
    if let Some(id) = line.strip_prefix("/to ") {
        *target = Some(Target::Peer(id.trim().to_string()));
        println!("talking to {}", id.trim());
        return Ok(true);
    }
    if let Some(room) = line.strip_prefix("/join ") {
        let info = client.join(room.trim(), None).await?;
        println!(
            "joined room {} ({}), {} members",
            info.id, info.name, info.member_count
        );
        *target = Some(Target::Room(info.id));
        return Ok(true);
    }
    let Some(to) = target.clone() else {
        println!("! choose a peer or a room first: /to <user id>, /join <room>");
        return Ok(true);
    };
    if line == "/leave" {
        match &to {
            Target::Room(room) => {
                client.leave(room).await?;
                println!("left room {room}");
                *target = None;
            }
            Target::Peer(_) => println!("! /leave is for rooms"),
        }
        return Ok(true);
    }
    if line == "/history" {
        let (messages, more) = match &to {
            Target::Peer(peer) => client.history(peer, None, 20).await?,
            Target::Room(room) => client.room_history(room, None, 20).await?,
        };
        if more {
            println!("  …");
        }
        for m in &messages {
            print_message(client.user_id(), m);
        }
        return Ok(true);
    }
    let message = match &to {
        Target::Peer(peer) => client.send(peer, line).await?,
        Target::Room(room) => client.room_send(room, line).await?,
    };
    // Shown once: the `message` event for our own send is dropped as a duplicate.
    client.mark_seen(&message);
    print_message(client.user_id(), &message);
    Ok(true)
}

fn print_event(me: &str, frame: &ServerFrame) {
    match frame {
        ServerFrame::Message { message, .. } => print_message(me, message),
        ServerFrame::Typing { from } => println!("  ({from} is typing)"),
        ServerFrame::Presence { user, online, .. } => {
            println!(
                "  ({user} is {})",
                if *online { "online" } else { "offline" }
            );
        }
        ServerFrame::Read { by, up_to, .. } if by != me => println!("  ({by} read up to {up_to})"),
        ServerFrame::Error { code, message, .. } => println!("! {code}: {message}"),
        ServerFrame::Member {
            room, event, user, ..
        } => {
            let what = match event {
                MemberChange::Joined => "joined",
                MemberChange::Left => "left",
            };
            println!("  ({} {what} room {room})", user.name);
        }
        _ => {}
    }
}

fn print_message(me: &str, m: &Message) {
    let who = if m.from == me { "me" } else { m.from.as_str() };
    let to = match &m.room {
        Some(room) => format!("room {room}"),
        None => m.to.clone(),
    };
    // Bodies are plain text: print them as is, never interpreted.
    println!("[{}] {who} → {to}: {}", m.sent_at, m.body);
}
