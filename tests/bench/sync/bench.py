"""File-sync benchmark (issue 7), driven through the file API and WS /ws as
an editor would (tests/bench/sync/run starts the stack). Prints figures;
never fails on a timing.

  bench.py run --base URL --data-dir DIR --sync-pid P [--quick] [--json FILE]
  bench.py sweep --data-dir DIR --workspaces DIR

An agent runs inside the sandbox, in a terminal of the session (WATCHER
below, saved through the API and started by typing into the terminal): it
reports inotify arrivals in /workspace/bench and writes files on command,
each line stamped with time.monotonic_ns(). The sandbox has no time
namespace (checked: /proc/self/ns/time on both sides, and a round trip),
so its CLOCK_MONOTONIC is the host's and the stamps compare directly with
the driver's. The terminal's own latency is not in any figure: a stamp is
taken where the event happens and only travels back in the output.
"""
import base64
import hashlib
import importlib.util
import json
import os
import selectors
import sys
import time

import psycopg2
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
# the terminal bench's raw-socket WebSocket client and its helpers
_spec = importlib.util.spec_from_file_location("terminal_bench",
                                               os.path.join(HERE, "..", "terminal", "bench.py"))
tb = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tb)
Ws, Closed, stats, fmt, say, cpu_s = tb.Ws, tb.Closed, tb.stats, tb.fmt, tb.say, tb.cpu_s

SEED = {"small": "50-100", "load": "1-2 s (DB -> pod)"}
GOAL = {"small": "p99<=20", "burst": "<=2 s", "load": "<=1 s"}
SAMPLE_TIMEOUT_S = 10
TICK = os.sysconf("SC_CLK_TCK")

# The in-sandbox agent. Lines in: `c` (clock), `w NAME SIZE` (write
# /workspace/up/NAME), `b N` (burst of N files in /workspace/burst), `q`.
# Lines out, all starting with @@ so the shell's own output never matches:
# `@@E NAME NS` an arrival in /workspace/bench, `@@W NAME NS` the time just
# before a write, `@@B0 NS` / `@@B1 NS` a burst's start and end.
WATCHER = r'''import ctypes, os, select, sys, termios, time
IN_CLOSE_WRITE, IN_MOVED_TO = 0x8, 0x80
libc = ctypes.CDLL(None, use_errno=True)
for d in ("/workspace/bench", "/workspace/up"):
    os.makedirs(d, exist_ok=True)
fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
if fd < 0 or libc.inotify_add_watch(fd, b"/workspace/bench", IN_CLOSE_WRITE | IN_MOVED_TO) < 0:
    print("@@FAIL inotify errno %d" % ctypes.get_errno(), flush=True)
    sys.exit(1)
tty = termios.tcgetattr(0)
quiet = list(tty)
quiet[3] &= ~termios.ECHO
termios.tcsetattr(0, termios.TCSANOW, quiet)
def out(s):
    os.write(1, (s + "\n").encode())
out("@@READY %s %d" % (os.readlink("/proc/self/ns/time") if os.path.exists("/proc/self/ns/time")
                       else "-", time.monotonic_ns()))
seen, line = set(), b""
try:
    while True:
        r, _, _ = select.select([0, fd], [], [])
        if fd in r:
            buf = os.read(fd, 65536)
            now = time.monotonic_ns()
            i = 0
            while i + 16 <= len(buf):
                n = int.from_bytes(buf[i+12:i+16], "little")  # struct inotify_event.len
                name = buf[i+16:i+16+n].rstrip(b"\0").decode(errors="replace")
                i += 16 + n
                if name.startswith(".atelier-tmp") or name in seen:
                    continue
                seen.add(name)
                out("@@E %s %d" % (name, now))
        if 0 in r:
            d = os.read(0, 4096)
            if not d:
                break
            line += d
            while b"\n" in line:
                cmd, line = line.split(b"\n", 1)
                a = cmd.decode().strip().split()
                if not a:
                    continue
                if a[0] == "c":
                    out("@@C %d" % time.monotonic_ns())
                elif a[0] == "w":
                    body = b"x" * int(a[2])
                    t = time.monotonic_ns()
                    with open("/workspace/up/" + a[1], "wb") as f:
                        f.write(body)
                    out("@@W %s %d" % (a[1], t))
                elif a[0] == "b":
                    out("@@B0 %d" % time.monotonic_ns())
                    os.makedirs("/workspace/burst", exist_ok=True)
                    for k in range(int(a[1])):
                        with open("/workspace/burst/f%05d.txt" % k, "w") as f:
                            f.write("burst file %d\n" % k)
                    out("@@B1 %d" % time.monotonic_ns())
                elif a[0] == "q":
                    sys.exit(0)
finally:
    termios.tcsetattr(0, termios.TCSANOW, tty)
'''


def ms(ns):
    return ns / 1e6


def pg_cpu_s(data_dir):
    """CPU seconds of PostgreSQL: the postmaster, its live children, and the
    children it has reaped (cutime, cstime)."""
    try:
        with open(os.path.join(data_dir, "pg", "postmaster.pid")) as f:
            pm = int(f.readline())
    except (OSError, ValueError):
        return None
    total = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % p) as f:
                st = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(p) == pm:
            total += sum(int(x) for x in st[11:15])
        elif int(st[1]) == pm:
            total += int(st[11]) + int(st[12])
    return total / TICK


class Bench:
    def __init__(self, a):
        self.a = a
        self.base = a.base
        self.port = int(a.base.rsplit(":", 1)[1])
        self.http = requests.Session()
        self.results = {}
        self.notes = []
        self.sessions = []
        self.db = psycopg2.connect(host=os.path.join(a.data_dir, "run"), user="atelier",
                                   dbname="atelier")
        self.db.autocommit = True
        body = {"email": "sync-bench@example.com", "password": "sync-bench-password"}
        self.http.post(self.base + "/api/users/register", json=body, timeout=30)
        r = self.http.post(self.base + "/api/users/login", json=body, timeout=30)
        r.raise_for_status()
        self.auth = "Authorization: Bearer " + r.json()["access_token"]
        self.http.headers["Authorization"] = "Bearer " + r.json()["access_token"]
        # what the agent and the event connection have said, by name
        self.lines = {}      # (kind, name) -> ns stamped in the sandbox
        self.events = {}     # path -> [(arrival ns, event)]
        self.partial = ""
        self.tail = ""       # the terminal's last output, for error messages
        self.term = None
        self.evws = None
        self.tid = None

    def note(self, s):
        self.notes.append(s)
        say("  ! " + s)

    def query(self, sql, *args):
        with self.db.cursor() as c:
            c.execute(sql, args)
            return c.fetchall()

    def connect(self, query=""):
        return Ws(self.port, [self.auth], query)

    def wait_status(self, uuid, want, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.http.get(self.base + "/api/sessions/" + uuid, timeout=30).json()
            if s["status"] == want:
                return s
            if s["status"] == "error":
                raise RuntimeError("session %s failed: %s" % (uuid, s.get("status_message")))
            time.sleep(0.02)
        raise TimeoutError("session %s not %s" % (uuid, want))

    def new_session(self):
        r = self.http.post(self.base + "/api/sessions", json={"name": "sync-bench"}, timeout=30)
        r.raise_for_status()
        uuid = r.json()["uuid"]
        self.sessions.append(uuid)
        return uuid, self.wait_status(uuid, "ready")["workspace_id"]

    def put(self, session, path, body):
        r = self.http.put(self.base + "/api/workspace/%s/files/%s" % (session, path), json=body,
                          timeout=60)
        if r.status_code not in (200, 201):
            raise RuntimeError("PUT %s: %d %s" % (path, r.status_code, r.text[:200]))
        return r

    def exec(self, session, command):
        r = self.http.post(self.base + "/api/sessions/%s/exec" % session, timeout=120,
                           json={"command": command, "timeout_s": 60})
        r.raise_for_status()
        return r.json()

    # -- the two connections: everything that arrives is filed by name --

    def take(self, ws, frames, now):
        for op, p in frames:
            if op == 8:
                raise Closed("close %s" % (int.from_bytes(p[:2], "big") if p else "-"))
            if op != 1:
                continue
            m = json.loads(p)
            t = m.get("type")
            if t == "terminal_output" and m.get("terminalId") == self.tid:
                self.tail = (self.tail + m["output"])[-600:]
                text = self.partial + m["output"]
                *whole, self.partial = text.split("\n")
                for ln in whole:
                    at = ln.find("@@")  # after the shell's escapes, if any
                    if at < 0:
                        continue
                    ln = ln[at:].strip("\r")
                    f = ln.split()
                    if f[0] in ("@@E", "@@W") and len(f) == 3:
                        self.lines.setdefault((f[0][2:], f[1]), int(f[2]))
                    elif f[0] in ("@@C", "@@B0", "@@B1") and len(f) == 2:
                        self.lines[(f[0][2:], "")] = int(f[1])
                    elif f[0] == "@@READY" and len(f) == 3:
                        self.lines[("READY", "")] = (f[1], int(f[2]))
                    elif f[0] == "@@FAIL":
                        raise RuntimeError("the watcher failed: %s" % ln)
            elif t == "file_changed" and ws is self.evws:
                # a burst comes as one event naming its paths (change "many")
                for path in m.get("paths") or [m.get("path")]:
                    self.events.setdefault(path, []).append((now, m))
            elif t == "error":
                self.note("WebSocket error message: %s" % json.dumps(m)[:200])

    def pump(self, until, timeout=SAMPLE_TIMEOUT_S):
        """Read both connections until until() is true; False on timeout."""
        sel = selectors.DefaultSelector()
        for ws in (self.term, self.evws):
            if ws is not None:
                sel.register(ws, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while not until():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                for key, _ in sel.select(min(left, 0.02)):
                    ws = key.fileobj
                    try:
                        self.take(ws, ws.pump(0), time.monotonic_ns())
                    except Closed as e:
                        which = "terminal" if ws is self.term else "event"
                        self.note("the gateway closed the %s connection (%s) at %s"
                                  % (which, e, time.strftime("%H:%M:%S")))
                        if ws is not self.evws:
                            raise Closed("%s connection: %s" % (which, e)) from None
                        sel.unregister(ws)
                        ws.close()
                        self.evws = None
            return True
        finally:
            sel.close()

    def type(self, text):
        self.term.send_json(type="terminal_input", terminalId=self.tid, input=text + "\r")

    # -- phases --

    def start_agent(self, session):
        """Save the watcher through the API, wait for it on the volume, start
        it in a terminal; check that the sandbox's clock is the host's."""
        self.put(session, ".bench_watch.py", {"content": WATCHER})
        want = hashlib.sha256(WATCHER.encode()).hexdigest()
        deadline = time.monotonic() + 30
        while self.exec(session, "sha256sum /workspace/.bench_watch.py 2>/dev/null || true")[
                "stdout"].split()[:1] != [want]:
            if time.monotonic() > deadline:
                raise TimeoutError("the watcher never reached the volume")
            time.sleep(0.05)
        self.term = self.connect()
        self.term.send_json(type="terminal_open", sessionId=session, id="o")
        m = self.term.expect(lambda m: m.get("id") == "o")
        if m["type"] != "terminal_opened":
            raise RuntimeError("terminal_open: %s" % m)
        self.tid = m["terminalId"]
        self.type("python3 /workspace/.bench_watch.py")
        if not self.pump(lambda: ("READY", "") in self.lines, 30):
            raise TimeoutError("the watcher did not start; the terminal shows: %r" % self.tail)
        ns, _ = self.lines[("READY", "")]
        host_ns = os.readlink("/proc/self/ns/time") if os.path.exists("/proc/self/ns/time") else "-"
        # a stamp taken in the sandbox lies between the command and its answer
        inside = True
        for _ in range(5):
            self.lines.pop(("C", ""), None)
            t0 = time.monotonic_ns()
            self.type("c")
            self.pump(lambda: ("C", "") in self.lines)
            t1 = time.monotonic_ns()
            inside = inside and t0 <= self.lines[("C", "")] <= t1
        self.results["clock"] = {"sandbox_time_ns": ns, "host_time_ns": host_ns,
                                 "round_trip_ok": inside}
        say("  clock: time namespace sandbox %s, host %s; sandbox stamps inside the round trip: %s"
            % (ns, host_ns, "yes" if inside else "NO"))
        if ns != host_ns or not inside:
            self.note("the sandbox's CLOCK_MONOTONIC may not be the host's: figures are suspect")

    def phase_save(self, session, size, n):
        """PUT -> the watcher's IN_MOVED_TO/IN_CLOSE_WRITE, n distinct files."""
        lat, put_ms, missing = [], [], []
        # warm-up, not counted: the first saves into a session that just
        # started wait for the watcher's first rescan (it holds the volume's
        # lock for ~20 ms); the lines below would show it as "lock" time
        for i in range(3):
            name = "w%d_%d.txt" % (size, i)
            self.put(session, "bench/" + name, {"content": "warm-up\n"})
            self.pump(lambda: ("E", name) in self.lines)
        for i in range(n):
            name = "s%d_%04d.txt" % (size, i)
            body = {"content": (name + " ").ljust(size - 1, "x") + "\n"}
            t0 = time.monotonic_ns()
            self.put(session, "bench/" + name, body)
            put_ms.append(ms(time.monotonic_ns() - t0))
            if self.pump(lambda: ("E", name) in self.lines):
                lat.append(ms(self.lines[("E", name)] - t0))
            else:
                missing.append(name)
        key = "save_%d" % size
        self.results[key] = stats(lat)
        self.results[key + "_put"] = stats(put_ms)
        # where a push job's time went (its result: sync-worker/push.c)
        with self.db.cursor() as c:
            c.execute("SELECT result FROM jobs WHERE kind = 'push' AND result->>'path' LIKE %s",
                      ("bench/s%d\\_%%" % size,))
            res = [r[0] for r in c.fetchall() if r[0]]
        for stage in ("queued_ms", "pool_wait_ms", "lock_wait_ms", "work_ms"):
            vals = [r[stage] for r in res if stage in r]
            if vals:
                self.results["%s_%s" % (key, stage)] = stats(vals)
        slow = sorted(((r.get("lock_wait_ms", 0), r["path"]) for r in res), reverse=True)[:3]
        if slow and slow[0][0] > 5:
            self.note("saves of %d B that waited longest for the volume's lock: %s" % (
                size, ", ".join("%s %.1f ms" % (p.rsplit("_", 1)[-1], w) for w, p in slow)))
        if missing:
            self.note("%d of %d saves of %d B never arrived in the sandbox within %d s: %s"
                      % (len(missing), n, size, SAMPLE_TIMEOUT_S, ", ".join(missing[:5])))

    def phase_events(self, session, n):
        """A write in the sandbox -> its file_changed at a second connection."""
        self.evws = self.connect("?sessionId=" + session)
        # the watcher's lease and first rescan: one write through before timing
        self.type("w warm.txt 16")
        if not self.pump(lambda: "up/warm.txt" in self.events, 30):
            self.note("no file_changed for a first write in the sandbox after 30 s")
        lat, missing, extra = [], [], 0
        for i in range(n):
            name = "u_%04d.txt" % i
            self.type("w %s 64" % name)
            path = "up/" + name
            if self.pump(lambda: ("W", name) in self.lines and path in self.events):
                lat.append(ms(self.events[path][0][0] - self.lines[("W", name)]))
            else:
                missing.append(name)
        # late duplicates (a create then an update of the same write) show here
        self.pump(lambda: False, 0.3)
        for i in range(n):
            evs = self.events.get("up/u_%04d.txt" % i, [])
            extra += max(0, len(evs) - 1)
            bad = [e for _, e in evs if e.get("size") not in (None, 64)]
            if bad:
                self.note("file_changed with a size other than 64 for %s: %s"
                          % (bad[0].get("path"), json.dumps(bad[0])[:200]))
                break
        self.results["event"] = stats(lat)
        self.results["event_extra"] = extra
        if missing:
            self.note("%d of %d sandbox writes got no file_changed within %d s: %s"
                      % (len(missing), n, SAMPLE_TIMEOUT_S, ", ".join(missing[:5])))
        if extra:
            self.note("%d file_changed events more than writes (one write each)" % extra)

    def phase_burst(self, workspace, n):
        sw = self.a.sync_pid
        count = "SELECT count(*) FROM workspace_items WHERE workspace_id = %s AND path LIKE 'burst/%%'"
        cpu0, pg0 = cpu_s(sw), pg_cpu_s(self.a.data_dir)
        t_send = time.monotonic_ns()
        self.type("b %d" % n)
        if not self.pump(lambda: ("B0", "") in self.lines, 30):
            raise TimeoutError("the burst did not start")
        start = self.lines[("B0", "")]
        rows, done, last_poll = 0, None, 0.0
        deadline = time.monotonic() + 300

        def polled():
            nonlocal rows, done, last_poll
            if time.monotonic() - last_poll >= 0.02:
                last_poll = time.monotonic()
                rows = self.query(count, workspace)[0][0]
                if rows >= n:
                    done = time.monotonic_ns()
            return done is not None or time.monotonic() > deadline
        had_events = self.evws is not None
        self.pump(polled, 310)
        cpu = cpu_s(sw) - cpu0
        pg1 = pg_cpu_s(self.a.data_dir)
        pg = pg1 - pg0 if pg0 is not None and pg1 is not None else None
        if ("B1", "") not in self.lines:
            self.pump(lambda: ("B1", "") in self.lines, 30)
        # the events still on their way
        n_ev = lambda: sum(1 for p in self.events if p.startswith("burst/"))  # noqa: E731
        if self.evws is not None:
            self.pump(lambda: n_ev() >= n, 5)
        ev_closed = had_events and self.evws is None
        self.results["burst"] = {
            "n": n, "rows": rows, "write_s": (self.lines.get(("B1", ""), start) - start) / 1e9,
            "all_rows_s": (done - start) / 1e9 if done else None, "cpu_s": cpu, "pg_cpu_s": pg,
            "events": n_ev(), "event_conn_closed": ev_closed,
            "last_event_s": max((e[0][0] for p, e in self.events.items() if p.startswith("burst/")),
                                default=start) / 1e9 - start / 1e9,
            "wall_from_command_s": (done - t_send) / 1e9 if done else None}
        if not done:
            self.note("burst: only %d of %d rows after 300 s" % (rows, n))
        if n_ev() < n:
            self.note("burst: %d file_changed events for %d files%s" % (
                n_ev(), n, " (the event connection was closed)" if ev_closed else ""))

    def phase_load(self, n, size):
        """n files of size bytes saved while the session sleeps; its wake
        loads them into the volume."""
        uuid, _ = self.new_session()
        r = self.http.post(self.base + "/session/%s/sleep" % uuid, timeout=60)
        if r.status_code not in (200, 202):
            raise RuntimeError("sleep: %d %s" % (r.status_code, r.text[:200]))
        self.wait_status(uuid, "sleeping")
        t0 = time.monotonic()
        rnd = os.urandom(size)
        for i in range(n):  # distinct binary content per file
            data = i.to_bytes(4, "big") + rnd[4:]
            self.put(uuid, "load/f%04d.bin" % i,
                     {"content": base64.b64encode(data).decode(), "encoding": "base64"})
        put_s = time.monotonic() - t0
        ws = self.connect("?sessionId=" + uuid)
        t0 = time.monotonic_ns()
        r = self.http.post(self.base + "/session/%s/wake" % uuid, timeout=120)
        answered = time.monotonic_ns()
        if r.status_code not in (200, 202):
            raise RuntimeError("wake: %d %s" % (r.status_code, r.text[:200]))
        ready = None
        try:
            ws.expect(lambda m: m.get("type") == "pod_ready" and m.get("sessionId") == uuid, 60)
            ready = time.monotonic_ns()
        except (TimeoutError, Closed) as e:
            self.note("no pod_ready after the wake: %s" % e)
        ws.close()
        res, deadline = None, time.monotonic() + 60
        while time.monotonic() < deadline:
            rows = self.query("SELECT state, result FROM jobs WHERE kind = 'load' AND session = %s "
                              "ORDER BY enqueued_at DESC LIMIT 1", uuid)
            if rows and rows[0][0] in ("done", "dead"):
                res = rows[0][1]
                break
            time.sleep(0.05)
        on_disk = self.exec(uuid, "ls /workspace/load | wc -l; du -sb /workspace/load")["stdout"]
        self.results["load"] = {"n": n, "bytes": n * size, "put_s": put_s, "job": res,
                                "wake_answer_ms": ms(answered - t0),
                                "wake_ready_ms": ms(ready - t0) if ready else None,
                                "on_disk": " ".join(on_disk.split())}
        if not res:
            self.note("no finished load job for %s" % uuid)
        elif res.get("files", 0) < n:  # the workspace's own script.py is one more
            self.note("load job result %s: expected %d files or more" % (json.dumps(res), n))
        if on_disk.split()[:1] != [str(n)]:
            self.note("after the wake the volume holds %s (expected %d files)"
                      % (" ".join(on_disk.split()), n))

    def table(self):
        R = self.results
        say("\n== figures (ms unless noted)   ours vs the seed and the goal")
        line = "  %-48s %8s %8s %8s %5s   %-8s %s"
        say(line % ("", "p50", "p99", "max", "n", "seed", "goal"))

        def row(name, key, seed="", goal=""):
            s = R.get(key) or {}
            say(line % (name, fmt(s.get("p50"), 2), fmt(s.get("p99"), 2), fmt(s.get("max"), 2),
                        s.get("n", "-"), seed, goal))
        for size, label in ((1024, "1 KiB"), (102400, "100 KiB")):
            key = "save_%d" % size
            row("save %s -> seen in the sandbox (inotify)" % label, key,
                SEED["small"] if size == 1024 else "", GOAL["small"] if size == 1024 else "")
            row("  of which PUT answered", key + "_put")
            for stage, what in (("queued_ms", "push job queued (PUT's end -> worker)"),
                                ("pool_wait_ms", "waiting for a pool thread"),
                                ("lock_wait_ms", "waiting for the volume's lock"),
                                ("work_ms", "read row, write, fsync, rename, record")):
                if key + "_" + stage in R:
                    row("    " + what, key + "_" + stage)
        row("sandbox write -> file_changed at a client", "event", SEED["small"], GOAL["small"])
        b = R.get("burst")
        if b:
            say("  burst of %d files in the sandbox: all rows in PostgreSQL %s s after its start "
                "(written in %.2f s); CPU: sync-worker %.2f s, PostgreSQL %s s; file_changed "
                "events %d, the last %.2f s after the start   goal %s"
                % (b["n"], fmt(b["all_rows_s"], 2), b["write_s"], b["cpu_s"],
                   fmt(b["pg_cpu_s"], 2), b["events"],
                   b["last_event_s"],
                   GOAL["burst"] if b["n"] >= 10000 else "%s (for 10,000)" % GOAL["burst"]))
        ld = R.get("load")
        if ld:
            j = ld["job"] or {}
            say("  load of %d files / %d MB on wake: load job %s ms (files %s, bytes %s); "
                "wake -> pod_ready %s ms (answer %s ms)   seed %s, goal %s"
                % (ld["n"], ld["bytes"] // 1_000_000, fmt(j.get("ms"), 0), j.get("files", "-"),
                   j.get("bytes", "-"), fmt(ld["wake_ready_ms"], 0), fmt(ld["wake_answer_ms"], 0),
                   SEED["load"], GOAL["load"] if ld["n"] >= 1000 else
                   "%s (for 1,000)" % GOAL["load"]))
            say("    (the %d saves took %.1f s; on the volume after: %s)"
                % (ld["n"], ld["put_s"], ld["on_disk"]))
        if self.notes:
            say("  noted:")
            for s in self.notes:
                say("    " + s)


def cmd_run(a):
    b = Bench(a)
    say("sync benchmark: %d cores, load %s" % (os.cpu_count(),
                                               open("/proc/loadavg").read().split()[0]))
    quick = a.quick
    n = 20 if quick else 200
    try:
        main, workspace = b.new_session()
        b.start_agent(main)
        say("  saves: %d x 1 KiB, %d x 100 KiB" % (n, n))
        b.phase_save(main, 1024, n)
        b.phase_save(main, 102400, n)
        say("  sandbox writes -> file_changed: %d" % n)
        b.phase_events(main, n)
        say("  burst: %d files" % (1000 if quick else 10000))
        b.phase_burst(workspace, 1000 if quick else 10000)
        say("  load: %d files of 100 KB" % (100 if quick else 1000))
        b.phase_load(100 if quick else 1000, 100_000)
    except Exception as e:  # noqa: BLE001 - a figure is missing, not a failure
        say("\nbench: stopped by %s: %s" % (type(e).__name__, e))
    finally:
        if b.term is not None:
            try:
                b.type("q")
                b.term.send_json(type="terminal_close", terminalId=b.tid)
            except (OSError, Closed):
                pass
        for ws in (b.term, b.evws):
            if ws is not None:
                ws.close()
        tb.finish(b, a)
    return 0


def main():
    return tb.cli(__doc__, lambda r: r.add_argument("--sync-pid", type=int, required=True), cmd_run)


if __name__ == "__main__":
    sys.exit(main())
