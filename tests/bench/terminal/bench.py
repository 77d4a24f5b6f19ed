"""Terminal benchmark (issue 6), driven through WS /ws as a client would
(tests/bench/terminal/run starts the stack). Prints figures; never fails on
a timing.

  bench.py run --base URL --data-dir DIR --gateway-pid P --sm-pid P
               [--conns N] [--quick] [--json FILE]
  bench.py sweep --data-dir DIR --workspaces DIR

The client is a small WebSocket client on raw sockets (one recv per
wake-up, frames parsed from a buffer): websocket-client's per-frame reads
would add more to a keystroke than the server does. Its own cost is in the
"ws ping" line (client <-> gateway, no Redis, no manager): the echo lines
minus that is the server side (gateway -> Redis -> session-manager -> PTY
-> bash -> back).
"""
import argparse
import base64
import json
import math
import os
import random
import selectors
import socket
import struct
import sys
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration"))
from harness import sweep_data_dir  # noqa: E402

SEED = {"echo": "50-150"}
GOAL = {"echo": "p50<=0.3 p99<=1", "open": "<=5", "throughput": ">=100 MB/s",
        "conns": "10000"}
BIG_FILE_BYTES = 100_000_000
TICK = os.sysconf("SC_CLK_TCK")


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100.0 * len(s)) - 1)]


def stats(values):
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99),
            "max": max(values) if values else None}


def fmt(v, digits=2):
    return "-" if v is None else "%.*f" % (digits, v)


def say(*a):
    print(*a, flush=True)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def cgroup_memory(uuid):
    for path in ("/sys/fs/cgroup/memory/atelier/%s/memory.usage_in_bytes" % uuid,
                 "/sys/fs/cgroup/atelier/%s/memory.current" % uuid):
        try:
            with open(path) as f:
                return int(f.read())
        except OSError:
            pass
    return 0


# ---- a lean WebSocket client ---------------------------------------------------------------


class Closed(Exception):
    pass


class Ws:
    """One connection: masked frames out, frames parsed from one buffer in."""

    def __init__(self, port, headers=(), query=""):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET /ws%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
               % (query, key)) + "".join("%s\r\n" % h for h in headers) + "\r\n"
        self.sock.sendall(req.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            d = self.sock.recv(4096)
            if not d:
                raise Closed("closed during the handshake")
            head += d
        head, rest = head.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise Closed(head.split(b"\r\n")[0].decode())
        self.buf = bytearray(rest)
        self.msgs = []

    def fileno(self):
        return self.sock.fileno()

    def send(self, payload, opcode=1):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload)
        mask = os.urandom(4)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        m = (mask * (n // 4 + 1))[:n]
        body = (int.from_bytes(payload, "big") ^ int.from_bytes(m, "big")).to_bytes(n, "big")
        self.sock.sendall(head + mask + body)

    def send_json(self, **msg):
        self.send(json.dumps(msg))

    def frames(self):
        """Whole frames in the buffer: [(opcode, payload)]."""
        out = []
        b = self.buf
        while len(b) >= 2:
            n, off = b[1] & 0x7F, 2
            if n == 126:
                if len(b) < 4:
                    break
                n, off = struct.unpack_from("!H", b, 2)[0], 4
            elif n == 127:
                if len(b) < 10:
                    break
                n, off = struct.unpack_from("!Q", b, 2)[0], 10
            if len(b) < off + n:
                break
            out.append((b[0] & 0x0F, bytes(b[off:off + n])))
            del b[:off + n]
        return out

    def pump(self, timeout=None):
        """Read once (waiting up to timeout); returns the frames now whole."""
        self.sock.settimeout(timeout)
        try:
            d = self.sock.recv(1 << 20)
        except socket.timeout:
            return []
        if not d:
            raise Closed("connection closed")
        self.buf += d
        return self.frames()

    def recv_json(self, timeout=30):
        deadline = time.monotonic() + timeout
        while not self.msgs:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no message in %.0f s" % timeout)
            for op, p in self.pump(left):
                if op == 8:
                    raise Closed("close %s" % (struct.unpack("!H", p[:2])[0] if p else "-"))
                if op == 1:
                    self.msgs.append(json.loads(p))
        return self.msgs.pop(0)

    def expect(self, pred, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv_json(max(0.001, deadline - time.monotonic()))
            if pred(m):
                return m

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---- the run --------------------------------------------------------------------------------


class Bench:
    def __init__(self, a):
        self.a = a
        self.base = a.base
        self.port = int(a.base.rsplit(":", 1)[1])
        self.http = requests.Session()
        self.results = {}
        self.sessions = []
        body = {"email": "terminal-bench@example.com", "password": "terminal-bench-password"}
        self.http.post(self.base + "/api/users/register", json=body, timeout=30)
        r = self.http.post(self.base + "/api/users/login", json=body, timeout=30)
        r.raise_for_status()
        self.auth = "Authorization: Bearer " + r.json()["access_token"]
        self.http.headers["Authorization"] = "Bearer " + r.json()["access_token"]

    def connect(self):
        return Ws(self.port, [self.auth])

    def new_session(self):
        r = self.http.post(self.base + "/api/sessions", json={"name": "bench"}, timeout=30)
        r.raise_for_status()
        uuid = r.json()["uuid"]
        self.sessions.append(uuid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            s = self.http.get(self.base + "/api/sessions/" + uuid, timeout=30).json()["status"]
            if s == "ready":
                return uuid
            if s == "error":
                raise RuntimeError("session %s failed" % uuid)
            time.sleep(0.02)
        raise TimeoutError("session %s not ready" % uuid)

    def open_terminal(self, ws, session, **kw):
        """terminal_open; returns (terminal id, ms to terminal_opened, ms to
        the first output byte)."""
        t0 = time.perf_counter()
        ws.send_json(type="terminal_open", sessionId=session, id="o", **kw)
        m = ws.expect(lambda m: m.get("id") == "o")
        if m["type"] != "terminal_opened":
            raise RuntimeError("terminal_open: %s" % m)
        t1 = time.perf_counter()
        tid = m["terminalId"]
        if kw.get("binary"):
            while not any(op == 2 for op, _ in ws.pump(30)):
                pass
        else:
            ws.expect(lambda m: m.get("type") == "terminal_output" and m["terminalId"] == tid)
        return tid, (t1 - t0) * 1000, (time.perf_counter() - t0) * 1000

    def settle(self, ws, tid, marker):
        """Type `echo <marker>` and wait for its output: the shell is idle."""
        a, b = marker[:3], marker[3:]
        ws.send_json(type="terminal_input", terminalId=tid, input="echo %s''%s\r" % (a, b))
        seen = ""
        while marker + "\r\n" not in seen:
            m = ws.expect(lambda m: m.get("type") == "terminal_output")
            if m["terminalId"] == tid:
                seen += m["output"]
        ws.msgs.clear()

    # -- phases --

    def phase_ping(self):
        ws = self.connect()
        rtts = []
        for _ in range(1000):
            t0 = time.perf_counter()
            ws.send('{"type":"ping"}')
            ws.expect(lambda m: m.get("type") == "pong")
            rtts.append((time.perf_counter() - t0) * 1000)
        ws.close()
        self.results["ping"] = stats(rtts)

    def phase_open(self, session, n, batch=8):
        """n opens one after the other, in batches (a session holds
        ATELIER_TERMINALS_PER_SESSION); each batch closed after it, so no
        close runs ahead of an open in the session's job order."""
        ws = self.connect()
        opened, prompt = [], []
        while len(opened) < n:
            tids = []
            for _ in range(min(batch, n - len(opened))):
                tid, a, b = self.open_terminal(ws, session)
                tids.append(tid)
                opened.append(a)
                prompt.append(b)
            for tid in tids:
                ws.send_json(type="terminal_close", terminalId=tid)
            left = set(tids)
            while left:
                m = ws.expect(lambda m: m.get("type") == "terminal_exit")
                left.discard(m["terminalId"])
        ws.close()
        self.results["open_reply"] = stats(opened)
        self.results["open_prompt"] = stats(prompt)

    def type_keys(self, typists, keys, pause_s):
        """Each typist (ws, tid) types `keys` letters, one at a time, waiting
        for each one's echo (then pause_s); all typists at once on one
        selector. Returns the round trips in ms."""
        sel = selectors.DefaultSelector()
        state = {}
        for ws, tid in typists:
            sel.register(ws, selectors.EVENT_READ)
            state[ws] = {"tid": tid, "n": 0, "sent": None, "ch": None, "next": 0.0}
        rtts = []
        done = 0
        while done < len(typists):
            now = time.perf_counter()
            for ws, s in state.items():
                if s["sent"] is None and s["n"] < keys and now >= s["next"]:
                    if s["n"] and s["n"] % 40 == 0:  # keep the line short
                        ws.send_json(type="terminal_input", terminalId=s["tid"], input="\x15")
                    s["ch"] = "abcdefghijklmnopqrstuvwxyz"[s["n"] % 26]
                    s["sent"] = time.perf_counter()
                    ws.send('{"type":"terminal_input","terminalId":"%s","input":"%s"}'
                            % (s["tid"], s["ch"]))
            for key, _ in sel.select(0.001):
                ws = key.fileobj
                s = state[ws]
                for op, p in ws.pump(0):
                    if op != 1 or s["sent"] is None:
                        continue
                    m = json.loads(p)
                    if m.get("type") == "terminal_output" and s["ch"] in m["output"]:
                        rtts.append((time.perf_counter() - s["sent"]) * 1000)
                        s["sent"] = None
                        s["n"] += 1
                        s["next"] = time.perf_counter() + pause_s
                        if s["n"] == keys:
                            done += 1
        sel.close()
        return rtts

    def phase_echo_one(self, session, keys):
        ws = self.connect()
        tid, _, _ = self.open_terminal(ws, session)
        self.settle(ws, tid, "READY1")
        self.results["echo_1"] = stats(self.type_keys([(ws, tid)], keys, 0.001))
        ws.send_json(type="terminal_close", terminalId=tid)
        ws.close()

    def phase_echo_many(self, sessions, per_session, typists, keys):
        """per_session terminals in each session, one connection per session;
        the first terminal of the first `typists` connections types."""
        before_sm = rss_kib(self.a.sm_pid)
        before_cg = sum(cgroup_memory(u) for u in sessions)
        conns = []
        for u in sessions:
            ws = self.connect()
            tids = [self.open_terminal(ws, u)[0] for _ in range(per_session)]
            conns.append((ws, tids))
        for ws, tids in conns:
            for i, tid in enumerate(tids):
                self.settle(ws, tid, "RDY%03d" % i)
        n = len(sessions) * per_session
        time.sleep(1)
        self.results["terminal_memory"] = {
            "n": n,
            "sm_kib": (rss_kib(self.a.sm_pid) - before_sm) / n,
            "cgroup_kib": (sum(cgroup_memory(u) for u in sessions) - before_cg) / 1024 / n}
        rtts = self.type_keys([(ws, tids[0]) for ws, tids in conns[:typists]], keys // typists,
                              0.01)
        self.results["echo_many"] = stats(rtts)
        self.results["echo_many_open"] = n
        for ws, tids in conns:
            for tid in tids:
                ws.send_json(type="terminal_close", terminalId=tid)
            ws.close()

    def phase_throughput(self, session, binary):
        r = self.http.post(self.base + "/api/sessions/%s/exec" % session, timeout=120, json={
            "command": "test -s big.txt || yes 'the quick brown fox jumps over the lazy dog "
                       "0123456789' | head -c %d > big.txt" % BIG_FILE_BYTES, "timeout_s": 60})
        r.raise_for_status()
        ws = self.connect()
        tid, _, _ = self.open_terminal(ws, session, binary=binary)
        if binary:
            ws.send_json(type="terminal_input", terminalId=tid, input="echo RE''ADY\r")
            got = b""
            while b"READY\r\n" not in got:
                for op, p in ws.pump(30):
                    if op == 2:
                        got += p[44:]
        else:
            self.settle(ws, tid, "READY2")
        marker = b"END-OF-CAT"
        cpu0 = {n: cpu_s(p) for n, p in self.pids.items()}
        t0 = time.perf_counter()
        ws.send_json(type="terminal_input", terminalId=tid, input="cat big.txt; echo END-OF''-CAT\r")
        total, tail, last_seq, drops = 0, b"", 0, 0
        while marker not in tail:
            try:
                frames = ws.pump(30)
            except Closed:
                frames = [(8, b"")]
            for op, p in frames:
                if op == 2:
                    data = p[44:]
                    last_seq = int.from_bytes(p[36:44], "big")
                elif op == 1:
                    m = json.loads(p)
                    if m.get("type") != "terminal_output":
                        if m.get("code") == "too_slow":
                            drops += 1
                        continue
                    data = m["output"].encode()
                    last_seq = m.get("seq", last_seq)
                elif op == 8:  # dropped as too slow: come back from lastSeq
                    ws.close()
                    ws = self.connect()
                    ws.send_json(type="terminal_attach", terminalId=tid, lastSeq=last_seq,
                                 binary=binary)
                    continue
                else:
                    continue
                total += len(data)
                tail = (tail + data)[-64:]
        secs = time.perf_counter() - t0
        cpu = {n: (cpu_s(p) - cpu0[n]) / secs * 100 for n, p in self.pids.items()}
        ws.send_json(type="terminal_close", terminalId=tid)
        ws.close()
        self.results["cat_binary" if binary else "cat_text"] = {
            "mb_s": total / secs / 1e6, "bytes": total, "s": secs, "cpu": cpu, "drops": drops}

    def phase_conns(self, target):
        gw = self.a.gateway_pid
        before = rss_kib(gw)
        held, err = [], None
        t0 = time.perf_counter()
        try:
            for _ in range(target):
                held.append(self.connect())
        except (OSError, Closed) as e:
            err = "%s after %d" % (e, len(held))
        secs = time.perf_counter() - t0
        time.sleep(2)
        after = rss_kib(gw)
        alive = 0
        for ws in random.sample(held, min(200, len(held))):
            try:
                ws.send('{"type":"ping"}')
                ws.expect(lambda m: m.get("type") == "pong", 10)
                alive += 1
            except (OSError, Closed, TimeoutError):
                pass
        self.results["conns"] = {"held": len(held), "sampled": min(200, len(held)),
                                 "alive": alive, "per_conn_kib": (after - before) / max(1, len(held)),
                                 "connect_per_s": len(held) / secs, "error": err,
                                 "gw_rss_mib": after / 1024}
        for ws in held:
            ws.close()

    def table(self):
        R = self.results
        say("\n== figures (ms unless noted)   ours vs the seed and the goal")
        line = "  %-44s %8s %8s %8s %6s   %-8s %s"
        say(line % ("", "p50", "p99", "max", "n", "seed", "goal"))

        def row(name, key, seed="", goal=""):
            s = R.get(key) or {}
            say(line % (name, fmt(s.get("p50"), 3), fmt(s.get("p99"), 3), fmt(s.get("max"), 3),
                        s.get("n", "-"), seed, goal))
        row("ws ping/pong (client <-> gateway only)", "ping")
        row("keystroke echo, 1 terminal", "echo_1", SEED["echo"], GOAL["echo"])
        row("keystroke echo, %s open, 10 typing" % R.get("echo_many_open", "-"), "echo_many",
            SEED["echo"], GOAL["echo"])
        row("terminal_open -> terminal_opened", "open_reply")
        row("terminal_open -> first prompt byte", "open_prompt", "", GOAL["open"])
        for key, name in (("cat_binary", "binary frames"), ("cat_text", "JSON text")):
            c = R.get(key)
            if c:
                say("  cat of a %d MB file, %s: %.1f MB/s (%.1f s; CPU: %s; dropped as slow: %d)"
                    "   goal %s" % (c["bytes"] // 1_000_000, name, c["mb_s"], c["s"],
                                    ", ".join("%s %.0f%%" % kv for kv in c["cpu"].items()),
                                    c["drops"], GOAL["throughput"]))
        m = R.get("terminal_memory")
        if m:
            say("  memory per idle terminal (N=%d): sandbox cgroup %.0f KiB + manager %.1f KiB"
                % (m["n"], m["cgroup_kib"], m["sm_kib"]))
        c = R.get("conns")
        if c:
            say("  idle WebSocket connections held: %d (%d of %d sampled answer ping; %.0f "
                "connects/s)%s   goal %s" % (c["held"], c["alive"], c["sampled"],
                                              c["connect_per_s"],
                                              "; stopped: " + c["error"] if c["error"] else "",
                                              GOAL["conns"]))
            say("  memory per idle WebSocket connection: %.2f KiB (gateway RSS %.1f MiB with "
                "them)" % (c["per_conn_kib"], c["gw_rss_mib"]))


def cmd_run(a):
    b = Bench(a)
    b.pids = {"gateway": a.gateway_pid, "session-manager": a.sm_pid}
    if a.redis_pid:
        b.pids["redis"] = a.redis_pid
    say("terminal benchmark: %d cores, load %s; NOFILE %s" % (
        os.cpu_count(), open("/proc/loadavg").read().split()[0],
        open("/proc/%d/limits" % a.gateway_pid).read().split("Max open files")[1].split()[0]))
    quick = a.quick
    try:
        b.phase_ping()
        main = b.new_session()
        b.phase_open(main, 5 if quick else 20)
        b.phase_echo_one(main, 200 if quick else 1000)
        n_sessions = 3 if quick else 10
        sessions = [b.new_session() for _ in range(n_sessions)]
        b.phase_echo_many(sessions, 4 if quick else 10, min(10, n_sessions), 300 if quick else 1000)
        b.phase_throughput(main, True)
        b.phase_throughput(main, False)
        b.phase_conns(a.conns or (1000 if quick else 10000))
    except Exception as e:  # noqa: BLE001 - a figure is missing, not a failure
        say("\nbench: stopped by %s: %s" % (type(e).__name__, e))
    finally:
        finish(b, a)
    return 0


def finish(b, a):
    """The end of a run (also the sync bench's): delete the sessions it
    made, print the table, write the figures to --json."""
    for u in b.sessions:
        try:
            b.http.delete(b.base + "/api/sessions/" + u, timeout=30)
        except requests.RequestException:
            pass
    b.table()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(b.results, f, indent=1)


def cmd_sweep(a):
    """The exit trap's safety net: what the run's sessions left, by name."""
    sweep_data_dir(a.data_dir, a.workspaces)
    return 0


def cli(doc, run_args, cmd_run):
    """`run` (--base, --quick, --json, --data-dir and what run_args adds)
    or `sweep` (--data-dir, --workspaces); returns the command's exit code."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--base", required=True)
    run_args(r)
    r.add_argument("--quick", action="store_true", help="smoke run: fewer of everything")
    r.add_argument("--json", help="also write the figures to this file")
    for s in (r, sub.add_parser("sweep")):
        s.add_argument("--data-dir", required=True)
    sub.choices["sweep"].add_argument("--workspaces", required=True)
    a = p.parse_args()
    return cmd_run(a) if a.cmd == "run" else cmd_sweep(a)


def run_args(r):
    r.add_argument("--gateway-pid", type=int, required=True)
    r.add_argument("--sm-pid", type=int, required=True)
    r.add_argument("--redis-pid", type=int, default=0)
    r.add_argument("--conns", type=int, default=0, help="idle connections to try (10000)")


def main():
    return cli(__doc__, run_args, cmd_run)


if __name__ == "__main__":
    sys.exit(main())
