//! `chat-gateway` child processes for tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A running `chat-gateway` on 127.0.0.1 with a port chosen by the OS.
/// Killed (SIGKILL) when dropped.
pub struct Gateway {
    pub addr: SocketAddr,
    child: Option<Child>,
    env: Vec<(String, String)>,
    /// Every line the node printed, for assertions and for failure messages.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Path of the `chat-gateway` binary: `$CHAT_GATEWAY_BIN`, or next to the test
/// executable's `deps/` folder (where cargo puts workspace binaries).
pub fn gateway_bin() -> PathBuf {
    if let Ok(path) = std::env::var("CHAT_GATEWAY_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("chat-gateway")
}

impl Gateway {
    /// Starts a node with these `CHAT_*` variables (listen address defaults to
    /// `127.0.0.1:0`) and waits for its `listening on` line.
    pub fn start(env: &[(&str, &str)]) -> Gateway {
        let mut gw = Gateway {
            addr: "127.0.0.1:0".parse().expect("addr"),
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        gw.spawn("127.0.0.1:0");
        gw
    }

    fn spawn(&mut self, listen: &str) {
        let bin = gateway_bin();
        let mut cmd = Command::new(&bin);
        cmd.env("CHAT_SERVER__LISTEN", listen)
            .env("CHAT_LOG__FORMAT", "text")
            .env(
                "RUST_LOG",
                std::env::var("CHAT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "spawn {}: {e} (build it with cargo build -p chat-gateway)",
                bin.display()
            )
        });
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let tx = tx.clone();
            let log = self.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if std::env::var("CHAT_TEST_ECHO").is_ok() {
                        eprintln!("[gw] {line}");
                    }
                    if let Some(addr) = listening_addr(&line) {
                        let _ = tx.send(addr);
                    }
                    if let Ok(mut log) = log.lock() {
                        log.push(line);
                    }
                }
            });
        }
        self.child = Some(child);
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => self.addr = addr.parse().expect("listening address"),
            Err(_) => {
                let log = self.log.lock().map(|l| l.join("\n")).unwrap_or_default();
                panic!("chat-gateway did not print 'listening on' within 20 s:\n{log}");
            }
        }
    }

    /// `ws://<addr>/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// `http://<addr>`.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends a signal by number (15 = SIGTERM, 9 = SIGKILL).
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(pid.to_string())
                .status();
        }
    }

    /// Waits for the process to exit and returns its exit code (None if killed).
    pub fn wait(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status.code());
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the node with SIGKILL (no cleanup: as if the machine died).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the node again on the same address.
    pub fn restart(&mut self) {
        self.kill();
        let listen = self.addr.to_string();
        self.spawn(&listen);
    }

    /// Everything the node printed so far.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

/// Finds `listening on <addr>` in a plain or JSON log line.
fn listening_addr(line: &str) -> Option<String> {
    let at = line.find("listening on ")?;
    let rest = &line[at + "listening on ".len()..];
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!addr.is_empty()).then_some(addr)
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_listening_line() {
        assert_eq!(
            super::listening_addr("2026 INFO listening on 127.0.0.1:4312").as_deref(),
            Some("127.0.0.1:4312")
        );
        assert_eq!(
            super::listening_addr(r#"{"msg":"listening on 127.0.0.1:99","x":1}"#).as_deref(),
            Some("127.0.0.1:99")
        );
    }
}
