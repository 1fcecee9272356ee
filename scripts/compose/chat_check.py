#!/usr/bin/python3
"""The chat part of scripts/compose-check: two users through the compose stack's nginx.

Run by scripts/compose-check once `docker-compose up` reports every service healthy:

    chat_check.py --url http://127.0.0.1:8080 --api-url http://127.0.0.1:8081 \
        --api-key KEY -- COMPOSE-COMMAND...

--url is nginx's public listener, --api-url its internal one (the server HTTP API).

COMPOSE-COMMAND is the compose invocation of the running project (e.g.
`docker-compose -p chat-compose-check -f docker-compose.yml`); this script runs it to
mint a JWT inside a gateway container and to restart containers. Steps, each of which
exits non-zero with a message naming what went wrong:

  0. the public listener serves neither /metrics nor /api/ (403, even with the API
     key), the internal one serves the API;
  1. alice signs in as a guest, bob with a JWT from `chat-gateway token` run in a
     gateway container (so the token is signed with the compose file's secret); bob
     reconnects until nginx has put him on a different gateway container than alice
     (`welcome.node` is the container's CHAT_SERVER__NODE_ID);
  2. they exchange messages both ways across the two containers: acks, live delivery
     to the peer and to the sender's own connection;
  3. bob's gateway container is restarted while alice keeps sending; bob's socket is
     closed, he reconnects through nginx with his session and cursor, lands on another
     container, and gets every message he missed, in order (`recovered`); the restarted
     container serves new connections through nginx again;
  4. the Redis container is killed (SIGKILL: only the append-only file can keep what
     was acknowledged) and started again; once the gateways are ready, messages flow
     again and the whole conversation is still there, over the WebSocket `history`
     request and over the HTTP API (with the compose file's API key, on --api-url).

The Docker CLI is $DOCKER (default `docker`). Needs only Python 3 and websocket-client
(Debian: python3-websocket, a dependency of docker-compose).
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import websocket


class CheckFailed(Exception):
    pass


def step(msg):
    print(f"--- {msg}", flush=True)


def note(msg):
    print(f"    {msg}", flush=True)


def expect(cond, msg):
    if not cond:
        raise CheckFailed(msg)


class Conn:
    """One WebSocket connection of one user; buffers frames that nobody waited for yet."""

    def __init__(self, ws_url, name, hello):
        self.name = name
        self.ws_url = ws_url
        self.pending = []
        self.closed = None  # (code, reason) once the server closed
        try:
            self.ws = websocket.create_connection(ws_url, timeout=10)
        except Exception as e:  # noqa: BLE001 - any failure to connect is the message
            raise CheckFailed(f"{name}: cannot open {ws_url}: {e}") from e
        self.send(hello)
        welcome = self.wait(lambda f: f.get("type") in ("welcome", "error"), 10, "welcome")
        expect(welcome["type"] == "welcome", f"{name}: sign-in refused: {welcome}")
        self.welcome = welcome
        self.session = welcome["session"]
        self.user = welcome["user"]
        self.node = welcome["node"]
        self.cursor = hello.get("last_seen")

    def send(self, frame):
        self.ws.send(json.dumps(frame))

    def _read(self, timeout):
        """Next frame from the socket, or None on timeout; records a close."""
        if self.closed is not None:
            return None
        self.ws.settimeout(timeout)
        try:
            op, data = self.ws.recv_data(control_frame=False)
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            self.closed = (None, "connection lost")
            return None
        if op == websocket.ABNF.OPCODE_CLOSE:
            code = int.from_bytes(data[:2], "big") if len(data) >= 2 else None
            self.closed = (code, data[2:].decode("utf-8", "replace"))
            return None
        frame = json.loads(data)
        if frame.get("cursor"):
            self.cursor = frame["cursor"]
        return frame

    def wait(self, pred, timeout, what):
        """The first frame (buffered or new) matching pred; fails after timeout."""
        for i, f in enumerate(self.pending):
            if pred(f):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CheckFailed(f"{self.name}: no {what} within {timeout} s")
            f = self._read(min(left, 1.0))
            if f is None:
                if self.closed is not None:
                    raise CheckFailed(f"{self.name}: connection closed {self.closed} "
                                      f"while waiting for {what}")
                continue
            if pred(f):
                return f
            self.pending.append(f)

    def wait_closed(self, timeout):
        deadline = time.monotonic() + timeout
        while self.closed is None and time.monotonic() < deadline:
            f = self._read(1.0)
            if f is not None:
                self.pending.append(f)
        return self.closed

    def request(self, frame, timeout=10):
        ref = "r-" + uuid.uuid4().hex[:12]
        self.send(dict(frame, ref=ref))
        reply = self.wait(lambda f: f.get("ref") == ref, timeout, f"reply to {frame['type']}")
        expect(reply.get("type") != "error", f"{self.name}: {frame['type']} refused: {reply}")
        return reply

    def close(self):
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - closing a dead socket is fine
            pass


class Check:
    def __init__(self, args):
        self.base = args.url.rstrip("/")
        self.api_base = args.api_url.rstrip("/")
        self.ws_url = self.base.replace("http://", "ws://", 1) + "/ws"
        self.api_key = args.api_key
        self.compose = args.compose
        self.run_id = uuid.uuid4().hex[:6]
        self.sent = []  # every acknowledged message, in the order the acks came

    # --- helpers ------------------------------------------------------------------

    def compose_run(self, *args, timeout=120):
        cmd = self.compose + list(args)
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise CheckFailed(f"`{' '.join(cmd)}` exited {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    def container_of(self, service):
        cid = self.compose_run("ps", "-q", service).strip()
        expect(cid, f"no container for service {service}")
        return cid

    def health(self, service):
        cid = self.container_of(service)
        docker = os.environ.get("DOCKER", "docker")
        p = subprocess.run([docker, "inspect", "-f", "{{.State.Health.Status}}", cid],
                           capture_output=True, text=True)
        return p.stdout.strip()

    def wait_healthy(self, service, timeout):
        deadline = time.monotonic() + timeout
        status = "?"
        while time.monotonic() < deadline:
            status = self.health(service)
            if status == "healthy":
                return
            time.sleep(1)
        raise CheckFailed(f"{service} not healthy within {timeout} s (last: {status})")

    def http(self, path, headers=None, base=None):
        req = urllib.request.Request((base or self.base) + path, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()
        except (urllib.error.URLError, OSError) as e:
            return None, str(e).encode()

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            status, body = self.http("/readyz")
            if status == 200:
                return
            last = (status, body[:200])
            time.sleep(1)
        raise CheckFailed(f"{self.base}/readyz not 200 within {timeout} s (last: {last})")

    def guest(self, name, **extra):
        return Conn(self.ws_url, name, dict({"type": "hello", "username": name,
                                             "client": "compose-check/1"}, **extra))

    def resume(self, conn, name=None):
        hello = {"type": "hello", "session": conn.session, "client": "compose-check/1"}
        if conn.cursor:
            hello["last_seen"] = conn.cursor
        return Conn(self.ws_url, name or conn.name, hello)

    def send(self, frm, to, body):
        """frm sends body to `to`; checks the ack, the peer's live copy and the
        sender's own copy (every connection of the sender gets it too)."""
        ack = frm.request({"type": "send", "to": to.user["id"], "body": body,
                           "nonce": str(uuid.uuid4())})
        expect(ack.get("type") == "ack", f"{frm.name}: expected ack, got {ack}")
        m = ack["message"]
        expect(m["body"] == body and m["from"] == frm.user["id"] and m["to"] == to.user["id"],
               f"{frm.name}: ack does not match the send: {m}")
        self.sent.append(m)
        return m

    def expect_delivered(self, conn, messages, timeout=10):
        """conn receives a `message` event for each of messages, in this order."""
        ids = []
        for m in messages:
            f = conn.wait(lambda f, m=m: f.get("type") == "message"
                          and f["message"]["id"] == m["id"]
                          and f["message"]["conversation"] == m["conversation"],
                          timeout, f"message {m['id']} ({m['body']!r})")
            expect(f["message"]["body"] == m["body"],
                   f"{conn.name}: message {m['id']} body {f['message']['body']!r}, "
                   f"sent {m['body']!r}")
            ids.append(m["id"])
        # Ids of one conversation increase in acceptance order.
        expect(ids == sorted(ids, key=lambda i: tuple(int(x) for x in i.split("-"))),
               f"{conn.name}: messages out of order: {ids}")

    def exchange(self, a, b, label, n):
        """n messages a→b and n b→a, alternating; each checked at both ends."""
        for i in range(n):
            m1 = self.send(a, b, f"{label} {i} from {a.name}")
            self.expect_delivered(b, [m1])
            self.expect_delivered(a, [m1])
            m2 = self.send(b, a, f"{label} {i} from {b.name}")
            self.expect_delivered(a, [m2])
            self.expect_delivered(b, [m2])
        note(f"{label}: {2 * n} messages {a.name}@{a.node} <-> {b.name}@{b.node}, "
             "each acked and delivered live to both ends")

    def check_history(self, conn, peer, label):
        """The whole conversation, every acknowledged message in order, is stored."""
        want = [m["id"] for m in self.sent]
        reply = conn.request({"type": "history", "with": peer.user["id"], "limit": 100})
        got = [m["id"] for m in reply["messages"]]
        expect(got == want, f"{label}: history over the WebSocket has {len(got)} messages "
                            f"{got}, expected {len(want)} {want}")
        ua, ub = conn.user["id"], peer.user["id"]
        status, body = self.http(f"/api/v1/conversations/{ua}/{ub}/messages?limit=100",
                                 {"Authorization": f"Bearer {self.api_key}"},
                                 base=self.api_base)
        expect(status == 200, f"{label}: HTTP API history: status {status}: {body[:300]!r}")
        api = [m["id"] for m in json.loads(body)["messages"]]
        expect(api == want, f"{label}: history over the HTTP API has {api}, expected {want}")
        note(f"{label}: all {len(want)} messages in history (WebSocket and HTTP API)")

    # --- the scenario -------------------------------------------------------------

    def run(self):
        step("stack ready through nginx")
        self.wait_ready(60)
        status, body = self.http("/")
        expect(status == 200 and b"<" in body[:200], f"GET / (web client): {status}")
        note(f"{self.base}/readyz 200, GET / serves the web client")

        step("operator paths only on the internal listener")
        auth = {"Authorization": f"Bearer {self.api_key}"}
        for path in ("/metrics", "/api/v1/conversations/a/b/messages", "/api/v1/users/x"):
            status, body = self.http(path, auth)
            expect(status == 403, f"public GET {path}: status {status}, expected 403: {body[:200]!r}")
        status, body = self.http("/api/v1/conversations/a/b/messages", {}, base=self.api_base)
        expect(status == 401, f"internal GET /api/ without the key: {status}, expected 401")
        status, body = self.http("/metrics", auth, base=self.api_base)
        expect(status == 404, f"internal GET /metrics: {status}, expected 404")
        note(f"{self.base}: /metrics and /api/ 403; {self.api_base}: /api/ asks for the key")

        step("two users sign in on two different gateway containers")
        alice = self.guest(f"alice-{self.run_id}")
        note(f"alice ({alice.user['id']}) guest sign-in on {alice.node}")
        token = self.compose_run("exec", "-T", "gateway-1", "chat-gateway", "token",
                                 "--user", f"bob-{self.run_id}", "--name", "Bob").strip()
        expect(token.count(".") == 2, f"chat-gateway token printed {token!r}")
        bob = Conn(self.ws_url, "bob", {"type": "hello", "token": token,
                                        "client": "compose-check/1"})
        expect(bob.user["id"] == f"bob-{self.run_id}" and bob.user["name"] == "Bob",
               f"bob's token sign-in gave user {bob.user}")
        tries = 1
        while bob.node == alice.node and tries < 12:
            bob.close()
            bob = self.resume(bob, "bob")
            tries += 1
        expect(bob.node != alice.node,
               f"nginx put bob on {alice.node} like alice in {tries} tries")
        note(f"bob ({bob.user['id']}) JWT sign-in on {bob.node} (try {tries})")
        expect(alice.node.startswith("gateway-") and bob.node.startswith("gateway-"),
               f"welcome.node is not the compose service name: {alice.node}, {bob.node}")

        step("messages across the two containers")
        self.exchange(alice, bob, "before", 3)

        step(f"restart bob's gateway container ({bob.node}) while alice sends")
        restarted = bob.node
        restart = {}

        def do_restart():
            try:
                self.compose_run("restart", restarted, timeout=90)
                restart["ok"] = True
            except Exception as e:  # noqa: BLE001 - reported below
                restart["error"] = e

        t = threading.Thread(target=do_restart)
        t0 = time.monotonic()
        t.start()
        closed = bob.wait_closed(30)
        expect(closed is not None, f"bob's socket on {restarted} still open 30 s after "
                                   "the restart began")
        note(f"bob's socket closed {closed} after {time.monotonic() - t0:.1f} s")
        missed = [self.send(alice, bob, f"while {restarted} restarts {i}") for i in range(3)]
        self.expect_delivered(alice, missed)
        note(f"alice sent {len(missed)} messages while bob was away")
        t.join(120)
        expect(not t.is_alive(), f"`restart {restarted}` still running after 120 s")
        if "error" in restart:
            raise restart["error"]
        note(f"`restart {restarted}` done after {time.monotonic() - t0:.1f} s")

        bob = self.resume(bob, "bob")
        expect(bob.welcome["resumed"] and bob.welcome["recovered"],
               f"bob's resume: resumed={bob.welcome['resumed']} "
               f"recovered={bob.welcome['recovered']}")
        expect(bob.user["id"] == f"bob-{self.run_id}", f"bob resumed as {bob.user}")
        self.expect_delivered(bob, missed)
        note(f"bob resumed with session and cursor on {bob.node}: recovered, got the "
             f"{len(missed)} missed messages in order")
        self.exchange(alice, bob, "after gateway restart", 2)

        self.wait_healthy(restarted, 60)
        probes = []
        try:
            for i in range(12):
                p = self.guest(f"probe-{self.run_id}-{i}")
                probes.append(p)
                if p.node == restarted:
                    break
            expect(probes[-1].node == restarted,
                   f"nginx never sent a new connection to the restarted {restarted}: "
                   f"{[p.node for p in probes]}")
            note(f"{restarted} is healthy again and nginx sends it new connections "
                 f"(probe {len(probes)})")
        finally:
            for p in probes:
                p.close()
        self.check_history(alice, bob, "after gateway restart")

        step("kill the Redis container (SIGKILL) and start it again")
        aof = self.compose_run("exec", "-T", "redis", "redis-cli", "config", "get",
                               "appendonly").split()
        expect(aof[-1:] == ["yes"], f"redis appendonly is {aof}")
        self.compose_run("kill", "-s", "SIGKILL", "redis")
        self.compose_run("start", "redis")
        self.wait_healthy("redis", 60)
        self.wait_ready(60)
        note("redis is back (append-only file on); the gateways are ready through nginx")
        alice.wait_closed(1)
        bob.wait_closed(1)
        if alice.closed is None and bob.closed is None:
            # The sockets stayed open through the outage: they must work again (the
            # nodes' Redis connections and subscriptions came back).
            self.exchange(alice, bob, "same sockets after redis restart", 1)
        else:
            note(f"sockets closed by the outage: alice {alice.closed}, bob {bob.closed}")
        # Either way the users can resume with their sessions (stored in Redis, so
        # only there if the append-only file kept them) and cursors.
        alice.close()
        bob.close()
        alice = self.resume(alice)
        bob = self.resume(bob)
        expect(alice.welcome["resumed"] and bob.welcome["resumed"],
               "sessions did not survive the Redis restart")
        note(f"both sessions survived: alice on {alice.node}, bob on {bob.node}")
        self.check_history(alice, bob, "after redis restart")
        self.exchange(alice, bob, "after redis restart", 2)
        self.check_history(bob, alice, "final")
        alice.close()
        bob.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True, help="nginx base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--api-url", required=True,
                    help="nginx internal base URL (server HTTP API), e.g. http://127.0.0.1:8081")
    ap.add_argument("--api-key", required=True, help="the gateways' CHAT_API__KEY")
    ap.add_argument("compose", nargs=argparse.REMAINDER, help="-- compose command prefix")
    args = ap.parse_args()
    if args.compose[:1] == ["--"]:
        args.compose = args.compose[1:]
    if not args.compose:
        ap.error("the compose command is missing")
    check = Check(args)
    try:
        check.run()
    except CheckFailed as e:
        print(f"FAIL  {e}", flush=True)
        return 1
    print(f"ok    chat check: {len(check.sent)} messages, none lost", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
