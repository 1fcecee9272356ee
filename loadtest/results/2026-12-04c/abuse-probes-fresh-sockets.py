#!/usr/bin/python3
"""scripts/abuse-probes, each probe on a fresh socket, with the close code printed.

Why: after the hardening fixes the gateway closes a socket 4008 ("rate limit abuse")
after the typing burst, and scripts/abuse-probes then dies with BrokenPipeError on its
next probe, which reuses that socket. This driver imports the script's helpers and runs
the same probes (same sizes), each with its own signed-in attacker.

    python3 abuse-probes-fresh-sockets.py WS HTTP API_KEY
"""
import importlib.machinery, json, sys, time, urllib.error, urllib.request, uuid
import websocket

ap = importlib.machinery.SourceFileLoader(
    "abuse_probes", __file__.rsplit("/loadtest/", 1)[0] + "/scripts/abuse-probes").load_module()
hello, drain, tally = ap.hello, ap.drain, ap.tally
WS, HTTP, KEY = sys.argv[1:4]
run = uuid.uuid4().hex[:6]


def report(probe, got):
    print(f"{probe}: {got}", flush=True)


victim, vw = hello(WS, f"victim-{run}")
vid = vw["user"]["id"]

attacker, _ = hello(WS, f"attacker-{run}")
for i in range(300):
    try:
        attacker.send(json.dumps({"type": "typing", "to": vid}))
    except OSError as e:
        report("  (typing burst)", f"send {i} failed: {e!r}")
        break
got, _ = drain(victim, 3)
back, code = drain(attacker, 1)
report("300 typing frames in a burst",
       f"{sum(1 for f in got if f.get('type') == 'typing')} reached the victim; "
       f"attacker got {tally(back)}; close {code}")

attacker, _ = hello(WS, f"attacker-u-{run}")
for i in range(400):
    try:
        attacker.send(json.dumps({"type": "users", "ref": f"u{i}", "query": "a"}))
    except OSError as e:
        report("  (users burst)", f"send {i} failed: {e!r}")
        break
frames, code = drain(attacker, 5)
report("400 users look-ups in a burst", f"{tally(frames)}; close {code}")

attacker, aw = hello(WS, f"attacker-w-{run}")
attacker.send(json.dumps({"type": "watch", "ref": "w",
                          "users": [f"nobody-{run}-{i}" for i in range(200)]}))
frames, code = drain(attacker, 2)
report("watch of 200 ids", f"{tally(frames)}; close {code}")

attacker.send(json.dumps({"type": "conversations", "ref": "c"}))
frames, code = drain(attacker, 2)
report("conversations (one request)", f"{tally(frames)}; close {code}")

attacker.send(json.dumps({"type": "history", "ref": "h", "with": vid, "before": "0"}))
frames, code = drain(attacker, 2)
report('history before:"0"', f"{tally(frames)}; close {code}; {[f for f in frames if f.get('type') == 'error']}")

session = aw["session"]
attacker.close()
ws = websocket.create_connection(WS, timeout=5)
ws.send(json.dumps({"type": "hello", "session": session,
                    "last_seen": "18446744073709551615-18446744073709551615"}))
frames, code = drain(ws, 3)
report('hello last_seen:"18446744073709551615-18446744073709551615"',
       f"{tally(frames)}; close {code}; {[f for f in frames if f.get('type') == 'error']}")

ws, _ = hello(WS, f"utf8-{run}")
ws.send_frame(websocket.ABNF.create_frame(b"\xff\xfe{}", websocket.ABNF.OPCODE_TEXT))
frames, code = drain(ws, 3)
report("invalid UTF-8 in a text frame", f"{tally(frames)}; close {code}")

req = urllib.request.Request(
    f"{HTTP}/api/v1/conversations/{vid}/nobody-{run}/messages?before=0",
    headers={"Authorization": f"Bearer {KEY}"})
try:
    with urllib.request.urlopen(req, timeout=5) as r:
        status, body = r.status, r.read()[:200]
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()[:200]
report("API GET …/messages?before=0", f"HTTP {status} {body!r}")
victim.close()

N = int(sys.argv[4]) if len(sys.argv) > 4 else 300
held, refused, reasons = [], 0, {}
for _ in range(N):
    try:
        held.append(websocket.create_connection(WS, timeout=3))
    except Exception as e:  # noqa: BLE001
        refused += 1
        reasons[type(e).__name__ + ":" + str(e)[:60]] = reasons.get(type(e).__name__ + ":" + str(e)[:60], 0) + 1
time.sleep(1)
alive = closed = 0
for s in held:
    s.settimeout(0.05)
    try:
        s.recv()
    except websocket.WebSocketTimeoutException:
        alive += 1
    except Exception:  # noqa: BLE001
        closed += 1
    s.close()
report(f"{N} sockets without hello from one address",
       f"{len(held)} opened, {refused} refused {reasons}, {alive} still open after 1 s, {closed} closed")

M = int(sys.argv[5]) if len(sys.argv) > 5 else 100
ok = refused = 0
reasons = {}
for i in range(M):
    try:
        s, w = hello(WS, f"burst-{run}-{i}")
        ok += w.get("type") == "welcome"
        if w.get("type") != "welcome":
            refused += 1
            k = w.get("type") + ":" + str(w.get("code"))
            reasons[k] = reasons.get(k, 0) + 1
        s.close()
    except Exception as e:  # noqa: BLE001
        refused += 1
        k = type(e).__name__ + ":" + str(e)[:60]
        reasons[k] = reasons.get(k, 0) + 1
report(f"{M} guest sign-ins in a burst from one address", f"{ok} signed in, {refused} refused {reasons}")
