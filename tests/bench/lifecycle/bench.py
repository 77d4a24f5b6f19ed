"""Session lifecycle benchmark on the `local` runtime, driven through the
public HTTP API as a client would (tests/bench/lifecycle/run starts the
stack). Prints figures; never fails on a timing.

  bench.py run --base URL --data-dir DIR --api-key K --gateway-pid P
               --sm-pid P --sw-pid P [--target N] [--quick] [--no-profile]
  bench.py sweep --data-dir DIR     remove what the run's sessions left

Times are taken with one monotonic clock in this process: a request's
start, and the moment the listener thread (PSUBSCRIBE ev:* on its own
connection, started before any create) receives the event.
"""
import argparse
import collections
import concurrent.futures
import datetime
import glob
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time

import psycopg2
import redis
import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "integration"))
from harness import cgroup_dirs, cleanup_sandboxes, mounts_under, sweep_data_dir  # noqa: E402

READY_TIMEOUT_S = 120.0
TERMINATE_TIMEOUT_S = 120.0
JOB_POLL_S = 0.001
CHECKPOINTS = (100, 500, 1000)
PROBES = 10  # sequential creates just before each checkpoint
GiB = 1 << 30

SEED = {"ready": "30-45 s", "sleep": "5-10 s", "wake": "30-45 s", "scale": "10-20 s"}
GOAL = {"ready": "p50<=50 p99<=150", "sleep": "<=50", "wake": "<=150", "scale": "<=10",
        "capacity": "1000"}


# ---- figures ---------------------------------------------------------------------------------

def pct(values, p):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p / 100.0 * len(s)) - 1)]


def fmt(v, digits=1):
    return "-" if v is None else ("%.*f" % (digits, v))


def stats(values):
    return {"n": len(values), "p50": pct(values, 50), "p99": pct(values, 99),
            "max": max(values) if values else None}


def say(*a):
    print(*a, flush=True)


# ---- the client ------------------------------------------------------------------------------

class Api:
    """Thread-safe client: one requests.Session per thread. User calls carry
    the Bearer token, the /session/* Client API and /api/jobs the service key."""

    def __init__(self, base, api_key):
        self.base = base
        self.key = {"X-API-Key": api_key}
        self.token = None
        self.local = threading.local()

    def http(self):
        if not hasattr(self.local, "s"):
            self.local.s = requests.Session()
        return self.local.s

    def call(self, method, path, auth="user", **kw):
        headers = dict(self.key) if auth == "key" else {"Authorization": "Bearer " + self.token}
        return self.http().request(method, self.base + path, headers=headers, timeout=60, **kw)

    def login(self, email, password):
        body = {"email": email, "password": password}
        r = self.http().post(self.base + "/api/users/register", json=body, timeout=30)
        assert r.status_code in (200, 201), "register: %d %s" % (r.status_code, r.text)
        r = self.http().post(self.base + "/api/users/login", json=body, timeout=30)
        assert r.status_code == 200, "login: %d %s" % (r.status_code, r.text)
        self.token = r.json()["access_token"]


class Events:
    """PSUBSCRIBE ev:* on a dedicated connection; every event kept per session
    with the monotonic and wall time of its arrival."""

    def __init__(self, sock):
        self.r = redis.Redis(unix_socket_path=sock)
        self.ps = self.r.pubsub()
        self.ps.psubscribe("ev:*")
        while not self.ps.get_message(timeout=1.0):  # the subscription is confirmed
            pass
        self.by = {}
        self.cond = threading.Condition()
        self.stop = False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop:
            m = self.ps.get_message(timeout=0.2)
            if not m or m["type"] != "pmessage":
                continue
            t, w = time.perf_counter(), time.time()
            try:
                ev = json.loads(m["data"])
            except ValueError:
                continue
            uuid = m["channel"].decode()[3:]
            with self.cond:
                self.by.setdefault(uuid, []).append((t, w, ev))
                self.cond.notify_all()

    def mark(self, uuid):
        with self.cond:
            return len(self.by.get(uuid, ()))

    def wait(self, uuid, want, start=0, timeout=READY_TIMEOUT_S):
        """(t, wall, event) of the first event from index start on that want()
        accepts, or the `error` status event, or None after timeout."""
        deadline = time.perf_counter() + timeout
        with self.cond:
            while True:
                for t, w, ev in self.by.get(uuid, ())[start:]:
                    if want(ev) or (ev.get("type") == "status" and ev.get("status") == "error"):
                        return t, w, ev
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def close(self):
        self.stop = True
        self.thread.join(2)
        self.ps.close()


def is_pod_ready(ev):
    return ev.get("type") == "pod_ready"


def is_status(name):
    return lambda ev: ev.get("type") == "status" and ev.get("status") == name


def is_awake(ev):
    return is_pod_ready(ev) or is_status("ready")(ev)


# ---- sessions --------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.a = args
        self.api = Api(args.base, args.api_key)
        self.run_dir = os.path.join(args.data_dir, "run")
        self.base = args.workspaces or os.path.join(args.data_dir, "workspaces")
        self.ev = None
        self.live = set()     # created, not yet terminated
        self.created = []     # every uuid this run made
        self.lock = threading.Lock()
        self.results = {}

    def db(self):
        return psycopg2.connect(host=self.run_dir, user="atelier", dbname="atelier")

    def create(self):
        """POST /api/sessions/ then the pod_ready event. Returns a record
        {uuid, ms, http_ms, t0_wall, ready_wall, workspace_id} or {error}."""
        t0, w0 = time.perf_counter(), time.time()
        try:
            r = self.api.call("POST", "/api/sessions/", json={"name": "bench"})
        except requests.RequestException as e:
            return {"error": "POST /api/sessions/: %s" % e}
        http_ms = (time.perf_counter() - t0) * 1000
        if r.status_code != 201:
            return {"error": "POST /api/sessions/: %d %s" % (r.status_code, r.text[:300])}
        s = r.json()
        uuid = s["uuid"]
        with self.lock:
            self.live.add(uuid)
            self.created.append(uuid)
        got = self.ev.wait(uuid, is_pod_ready)
        rec = {"uuid": uuid, "workspace_id": s.get("workspace_id"), "http_ms": http_ms,
               "t0_wall": w0}
        if got is None:
            rec["error"] = "session %s: no pod_ready within %.0f s (status: %s)" % (
                uuid, READY_TIMEOUT_S, self.status_line(uuid))
        elif not is_pod_ready(got[2]):
            rec["error"] = "session %s: status error: %s" % (uuid, got[2].get("message"))
        else:
            rec["ms"] = (got[0] - t0) * 1000
            rec["ready_wall"] = got[1]
        return rec

    def status_line(self, uuid):
        try:
            s = self.api.call("GET", "/api/sessions/%s" % uuid).json()
            return "%s (%s)" % (s.get("status"), s.get("status_message"))
        except (requests.RequestException, ValueError) as e:
            return "unknown: %s" % e

    def create_many(self, n, concurrency):
        """n creates, `concurrency` at once (all released together)."""
        if concurrency <= 1:
            return [self.create() for _ in range(n)]
        gate = threading.Barrier(min(n, concurrency))

        def one(_):
            try:
                gate.wait(30)
            except threading.BrokenBarrierError:
                pass
            return self.create()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(one, range(n)))

    def delete(self, uuid):
        """DELETE /api/sessions/{uuid}, then the `terminated` status event.
        (error, ms)."""
        mark = self.ev.mark(uuid)
        t0 = time.perf_counter()
        r = self.api.call("DELETE", "/api/sessions/%s" % uuid)
        if r.status_code not in (200, 202, 204):
            return "DELETE %s: %d %s" % (uuid, r.status_code, r.text[:200]), None
        got = self.ev.wait(uuid, is_status("terminated"), mark, TERMINATE_TIMEOUT_S)
        ms = (time.perf_counter() - t0) * 1000
        if got is None or not is_status("terminated")(got[2]):
            s = self.status_line(uuid)
            if not s.startswith("terminated"):
                return "session %s not terminated: %s" % (uuid, s), None
        with self.lock:
            self.live.discard(uuid)
        return None, ms

    def delete_all(self, concurrency=8):
        """Every live session deleted: (seconds, errors, per-delete ms)."""
        uuids = sorted(self.live)
        if not uuids:
            return 0.0, [], []
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            done = list(pool.map(self.delete, uuids))
        return (time.perf_counter() - t0, [e for e, _ in done if e],
                [ms for _, ms in done if ms is not None])

    def tidy(self, label):
        took, errors, _ = self.delete_all()
        if errors:
            say("  cleanup after %s: %d deletes failed; first: %s" % (label, len(errors), errors[0]))
        return took


# ---- processes and memory --------------------------------------------------------------------

def proc_status(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def cpu_ticks(pid):
    """utime + stime + cutime + cstime of a process (clock ticks)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            f_ = f.read().rsplit(")", 1)[1].split()
        return sum(int(x) for x in f_[11:15])
    except (OSError, ValueError, IndexError):
        return 0


def children_of(ppid):
    out = []
    for d in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(d) as f:
                rest = f.read().rsplit(")", 1)[1].split()
            if int(rest[1]) == ppid:
                out.append(int(d.split("/")[2]))
        except (OSError, ValueError, IndexError):
            pass
    return out


def read_pidfile(path):
    try:
        with open(path) as f:
            return int(f.readline())
    except (OSError, ValueError):
        return 0


def meminfo():
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":")
            out[k] = int(v.split()[0])  # kB
    return out


def used_kib(mi):
    """`used` as free(1) counts it."""
    return mi["MemTotal"] - mi["MemFree"] - mi["Buffers"] - mi["Cached"] - mi["SReclaimable"]


def free_m():
    return subprocess.run(["free", "-m"], capture_output=True, text=True).stdout.rstrip()


def cgroup_memory(uuid):
    """(usage bytes, {stat}) of a session's memory cgroup, v1 or v2."""
    v1 = "/sys/fs/cgroup/memory/atelier/%s" % uuid
    if os.path.isdir(v1):
        usage_file, stat_file = v1 + "/memory.usage_in_bytes", v1 + "/memory.stat"
    else:
        v2 = "/sys/fs/cgroup/atelier/%s" % uuid
        usage_file, stat_file = v2 + "/memory.current", v2 + "/memory.stat"
    try:
        with open(usage_file) as f:
            usage = int(f.read())
        with open(stat_file) as f:
            st = dict((k, int(v)) for k, v in (line.split() for line in f))
        return usage, st
    except (OSError, ValueError):
        return None, {}


def cgroup_has_processes(uuid):
    for d in cgroup_dirs(uuid):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                if f.read().strip():
                    return True
        except OSError:
            pass
    return False


def host_mounts():
    with open("/proc/self/mountinfo") as f:
        return sum(1 for _ in f)


def memory_limit(uuid):
    for p in ("/sys/fs/cgroup/memory/atelier/%s/memory.limit_in_bytes" % uuid,
              "/sys/fs/cgroup/atelier/%s/memory.max" % uuid):
        try:
            with open(p) as f:
                return int(f.read())
        except (OSError, ValueError):
            pass
    return None


def proc_memory_cgroup(pid):
    """The memory cgroup path of a process (v1 `memory` line, or v2 `0::`)."""
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if "memory" in ctrls.split(","):
            return path
    for line in lines:
        if line.startswith("0::"):
            return line[3:]
    return None


def sandbox_processes(uuids):
    """Processes of the run's sandboxes (bwrap, atelier-init and what they run),
    found by their command line: [(pid, rss kB, in its session cgroup, args)]."""
    want = set(uuids)
    out = []
    for d in glob.glob("/proc/[0-9]*"):
        pid = int(d.rsplit("/", 1)[1])
        try:
            with open(d + "/cmdline", "rb") as f:
                args = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if "bwrap" not in args and "atelier-init" not in args:
            continue
        cg = proc_memory_cgroup(pid) or ""
        m = re.search(r"/atelier/([0-9a-f-]{36})", cg)
        in_cg = bool(m and m.group(1) in want)
        if in_cg or any(u in args for u in want):
            out.append((pid, proc_status(pid, "VmRSS"), in_cg, args[:120]))
    return out


def allocated_bytes(path):
    """(allocated, apparent) bytes of a tree, as du counts them."""
    def du(*flags):
        r = subprocess.run(["du", "-s", "--block-size=1", *flags, path],
                           capture_output=True, text=True)
        try:
            return int(r.stdout.split()[0])
        except (ValueError, IndexError):
            return 0
    return du(), du("--apparent-size")


def loop_devices_under(base):
    r = subprocess.run(["losetup", "-a"], capture_output=True, text=True)
    lines = r.stdout.splitlines()
    real = os.path.realpath(base)
    return lines, [l for l in lines if base in l or real in l]


# ---- the log and the jobs table: where create -> ready goes ----------------------------------

LOG_TS = re.compile(r"ts=(\S+)Z .*?(event|msg)=(\S+)(.*)")


def wall(ts):
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def sm_log_points(path):
    """Wall times the session-manager logged, by (session or volume, event)."""
    pts = {}
    try:
        f = open(path, errors="replace")
    except OSError:
        return pts
    with f:
        for line in f:
            m = LOG_TS.search(line)
            if not m:
                continue
            ts, prefix, ev, rest = m.groups()
            # volumes are named <user_id>-<workspace_id> (the sessions this
            # benchmark makes each get a workspace of their own)
            key = re.search(r"session=(\S+)", rest) or re.search(r"name=\d+-(\S+)", rest)
            if key:
                kind = re.search(r"kind=(\S+)", rest)
                name = prefix + "." + ev + (":" + kind.group(1) if kind else "")
                pts.setdefault((key.group(1), name), wall(ts))
    return pts


SEGMENTS = (  # (label, point that ends it)
    ("gateway: HTTP + INSERT + XADD start", "start_enq"),
    ("queue hop q:session -> manager", "start_run"),
    ("manager: row read + mkfs.ext4 image", "volume"),
    ("manager: loop mount + cgroup + run dir", "created"),
    ("manager: bwrap launch + init ping", "launched"),
    ("manager: record loading_files + XADD load", "start_done"),
    ("queue hop q:sync -> sync-worker", "load_run"),
    ("sync-worker: load (tar -> atelier-extract)", "load_done"),
    ("queue hop q:session (loaded) -> manager", "loaded_run"),
    ("manager: record ready + PUBLISH", "loaded_done"),
    ("pub/sub -> client", "client"),
)


SHORT = dict(zip((label for label, _ in SEGMENTS), (
    "http", "hop", "mkfs", "mount+cgroup", "bwrap+init", "record", "hop", "load", "hop",
    "record", "pubsub")))


GROUPS = (("driver create (mkfs, mount, cgroup)", ("mkfs", "mount+cgroup")),
          ("driver start (bwrap + init)", ("bwrap+init",)),
          ("load", ("load",)),
          ("queue hops", ("hop",)),
          ("HTTP + records + pub/sub", ("http", "record", "pubsub")))


def group_sums(rows):
    out = []
    for name, parts in GROUPS:
        vals = [p50 for label, p50, _, _ in rows if SHORT[label] in parts and p50 is not None]
        out.append((name, sum(vals) if vals else None))
    return out


def driver_ms(log, kind, uuids):
    """The driver's own time (event=driver_call ... ms=) of kind for these sessions."""
    want, out = set(uuids), []
    pat = re.compile(r"event=driver_call session=(\S+) kind=%s rc=0 ms=(\d+)" % kind)
    try:
        with open(log, errors="replace") as f:
            for line in f:
                m = pat.search(line)
                if m and m.group(1) in want:
                    out.append(int(m.group(2)))
    except OSError:
        pass
    return out


FORK = re.compile(r"PERF_RECORD_FORK\((\d+):(\d+)\):\((\d+):(\d+)\)")


PERF_HZ = 999
SYSCALL_PREFIX = re.compile(r"^(?:__x64_sys_|__ia32_sys_|__se_sys_|__do_sys_|ksys_)")


def syscall_of(frames):
    """The system call a kernel stack is in: the frame do_syscall_64 called."""
    names = [f.split()[0] for f in frames]
    if "do_syscall_64" in names:
        inner = [n for n in names[:names.index("do_syscall_64")] if n != "x64_sys_call"]
        if inner:
            return SYSCALL_PREFIX.sub("", inner[-1])
    return "no syscall (faults, interrupts)"


def short_frame(frame):
    """"sym (dso)" -> "sym" for the kernel, "sym (file name)" otherwise."""
    sym, _, dso = frame.partition(" (")
    dso = dso.rstrip(")")
    return sym if dso == "[kernel.kallsyms]" else "%s (%s)" % (sym, os.path.basename(dso))


def perf_samples(data):
    """(pid, comm, [frames, leaf first]) of every sample in a recording."""
    r = subprocess.run(["perf", "script", "-i", data, "-F", "pid,comm,ip,sym,dso"],
                       capture_output=True, text=True)
    for block in r.stdout.split("\n\n"):
        lines = [l for l in block.splitlines() if l.strip()]
        if not lines:
            continue
        head = lines[0].split()
        if not head or not head[-1].isdigit():
            continue
        frames = [(l.strip().split(None, 1) + ["?"])[1] for l in lines[1:]]
        yield int(head[-1]), " ".join(head[:-1]), frames


def perf_summary(data, pids):
    """Samples per command, and per command its leaf functions and the system
    calls they were in ("user" when the leaf is in user space)."""
    by_comm, syms, calls = collections.Counter(), {}, {}
    for pid, comm, frames in perf_samples(data):
        if pid not in pids or not frames:
            continue
        by_comm[comm] += 1
        syms.setdefault(comm, collections.Counter())[short_frame(frames[0])] += 1
        call = "user" if "[kernel" not in frames[0] else syscall_of(frames)
        calls.setdefault(comm, collections.Counter())[call] += 1
    return by_comm, syms, calls


def share(counter, total, top):
    return ", ".join("%s %.0f%%" % (k, 100.0 * v / total) for k, v in counter.most_common(top))


def perf_descendants(data, roots):
    """The pids of roots and of every process forked under them while (or
    before) perf recorded, from the recording's fork events."""
    r = subprocess.run(["perf", "script", "-i", data, "--show-task-events", "-F", "pid"],
                       capture_output=True, text=True)
    parent = {}
    for m in FORK.finditer(r.stdout):
        pid, ppid = int(m.group(1)), int(m.group(3))
        if pid != ppid:  # a thread keeps its process's pid
            parent.setdefault(pid, ppid)
    ours = set(roots)
    grew = True
    while grew:
        new = {p for p, pp in parent.items() if pp in ours and p not in ours}
        ours |= new
        grew = bool(new)
    return ours


def create_points(db, log, recs):
    """Per create: the wall times of the points SEGMENTS names."""
    ok = [r for r in recs if "ms" in r]
    jobs = {}
    with db.cursor() as c:
        c.execute("SELECT session, kind, extract(epoch from enqueued_at)::float8, "
                  "extract(epoch from started_at)::float8, "
                  "extract(epoch from finished_at)::float8 FROM jobs "
                  "WHERE session = ANY(%s) AND kind IN ('start', 'load', 'loaded') "
                  "ORDER BY enqueued_at", ([r["uuid"] for r in ok],))
        for sess, kind, enq, run, fin in c.fetchall():
            jobs.setdefault((sess, kind), (enq, run, fin))
    out = []
    for r in ok:
        u = r["uuid"]

        def job(kind, i):  # i: 0 enqueued, 1 started, 2 finished
            return (jobs.get((u, kind)) or (None,) * 3)[i]
        out.append({"t0": r["t0_wall"], "start_enq": job("start", 0),
                    "start_run": job("start", 1),
                    "volume": log.get((r["workspace_id"], "msg.volume_created")),
                    "created": log.get((u, "event.sandbox_created")),
                    "launched": log.get((u, "event.sandbox_started")),
                    "start_done": job("start", 2), "load_run": job("load", 1),
                    "load_done": job("load", 2), "loaded_run": job("loaded", 1),
                    "loaded_done": job("loaded", 2), "client": r["ready_wall"]})
    return out


def breakdown(points):
    """[(label, p50 ms, p99 ms)] of each segment, over the creates that logged both ends."""
    rows = []
    for i, (label, end) in enumerate(SEGMENTS):
        start = "t0" if i == 0 else SEGMENTS[i - 1][1]
        d = [(p[end] - p[start]) * 1000 for p in points
             if p.get(end) is not None and p.get(start) is not None]
        rows.append((label, pct(d, 50), pct(d, 99), len(d)))
    return rows


# ---- the phases ------------------------------------------------------------------------------

class Run(Bench):
    def __init__(self, args):
        super().__init__(args)
        q = args.quick
        self.n_seq = 20 if q else 100
        self.n_conc = 20
        self.n_cycle = 10 if q else 30
        self.n_exec = 50 if q else 200
        self.n_profile = 20 if q else 100
        self.target = args.target if args.target else (50 if q else 1000)
        self.pids = {"gateway": args.gateway_pid, "session-manager": args.sm_pid,
                     "sync-worker": args.sw_pid,
                     "postgres": read_pidfile(os.path.join(args.data_dir, "pg", "postmaster.pid")),
                     "redis": read_pidfile(os.path.join(self.run_dir, "redis.pid"))}

    def report_creates(self, label, recs, key):
        ms = [r["ms"] for r in recs if "ms" in r]
        errs = [r["error"] for r in recs if "error" in r]
        st = stats(ms)
        st["http_p50"] = pct([r["http_ms"] for r in recs if "http_ms" in r], 50)
        st["errors"] = len(errs)
        self.results[key] = st
        say("  %-34s n=%d p50 %s ms  p99 %s ms  max %s ms  (HTTP answer p50 %s ms)%s" % (
            label, st["n"], fmt(st["p50"]), fmt(st["p99"]), fmt(st["max"]), fmt(st["http_p50"]),
            "  errors %d, first: %s" % (len(errs), errs[0]) if errs else ""))
        return st

    def cpu_snapshot(self):
        snap = {k: cpu_ticks(p) for k, p in self.pids.items() if p and k != "postgres"}
        pg = self.pids["postgres"]
        snap["postgres"] = sum(cpu_ticks(p) for p in [pg] + children_of(pg)) if pg else 0
        with open("/proc/stat") as f:  # busy: all but idle and iowait
            t = [int(x) for x in f.readline().split()[1:9]]
        snap["host busy"] = sum(t) - t[3] - t[4]
        return snap

    def phase_creates(self):
        say("\n== 1. create -> ready (POST /api/sessions/ -> pod_ready on ev:{uuid})")
        cpu0 = self.cpu_snapshot()
        recs = self.create_many(self.n_seq, 1)
        cpu1 = self.cpu_snapshot()
        self.report_creates("%d sequential" % self.n_seq, recs, "ready_seq")
        self.report_cpu(cpu0, cpu1, len([r for r in recs if "ms" in r]))
        rows = self.breakdown_of(recs)
        self.results["breakdown"] = rows
        say("  where the time goes (sequential creates; from the jobs table and the "
            "manager's log, ms):")
        for label, p50, p99, n in rows:
            say("    %-46s p50 %7s  p99 %7s  (n=%d)" % (label, fmt(p50), fmt(p99), n))
        say("  in groups (sums of the p50s): " + ", ".join(
            "%s %s" % (g, fmt(v)) for g, v in group_sums(rows)))
        took = self.tidy("sequential creates")
        say("  deleted %d sessions in %.1f s" % (len(recs), took))
        recs = self.create_many(self.n_conc, self.n_conc)
        self.report_creates("%d concurrent" % self.n_conc, recs, "ready_conc")
        took = self.tidy("concurrent creates")
        say("  deleted %d sessions in %.1f s" % (len(recs), took))

    def breakdown_of(self, recs):
        with self.db() as db:
            return breakdown(create_points(db, sm_log_points(self.a.sm_log), recs))

    def report_cpu(self, a, b, n):
        if not n:
            return
        hz = os.sysconf("SC_CLK_TCK")
        per = {k: (b[k] - a[k]) * 1000.0 / hz / n for k in a}
        self.results["cpu_ms_per_create"] = per
        self.results["pids"] = self.pids
        say("  CPU per create (ms; children reaped by a process count for it; host = all "
            "cores, other users too): " + ", ".join("%s %.1f" % kv for kv in per.items()))

    def phase_profile(self):
        say("\n== profile: perf record -a -g during %d sequential creates" % self.n_profile)
        out = self.a.perf_data or os.path.join(self.a.data_dir, "perf.data")
        if not self.a.profile or not os.access("/usr/bin/perf", os.X_OK):
            say("  skipped: %s" % ("--no-profile" if not self.a.profile else
                                   "perf not installed (apt-get install linux-perf)"))
            return
        perf = subprocess.Popen(["perf", "record", "-a", "-g", "-F", str(PERF_HZ), "-o", out],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        try:
            recs = self.create_many(self.n_profile, 1)
        finally:
            perf.send_signal(signal.SIGINT)
            perf.wait(60)
        self.report_creates("%d sequential under perf" % self.n_profile, recs, "ready_perf")
        self.tidy("profiled creates")
        self.perf_report(out, max(1, len([r for r in recs if "ms" in r])))

    def perf_report(self, data, n):
        """Samples of this stack only: the processes started from the gateway,
        the manager, the sync-worker, PostgreSQL and Redis (fork events of the
        recording), so other users' processes on the box stay out."""
        ours = perf_descendants(data, [p for p in self.pids.values() if p])
        by_comm, syms, calls = perf_summary(data, ours)
        total = sum(by_comm.values())
        say("  on-CPU time of this stack by command, ms per create (%d processes; %d samples "
            "at %d Hz):" % (len(ours), total, PERF_HZ))
        say("    " + ", ".join("%s %.1f" % (c, k * 1000.0 / PERF_HZ / n)
                               for c, k in by_comm.most_common(10)))
        for comm in ("atelier-session", "atelier-sync-wo", "mkfs.ext4", "bwrap",
                     "atelier-extract", "atelier-init"):
            if not by_comm.get(comm):
                continue
            k = by_comm[comm]
            say("  %s: %.1f ms per create; by system call: %s" % (
                comm, k * 1000.0 / PERF_HZ / n, share(calls[comm], k, 5)))
            say("    top functions: %s" % share(syms[comm], k, 6))


    def phase_cycles(self):
        say("\n== 2. sleep / wake / scale (Client API, X-API-Key), %d each, one session"
            % self.n_cycle)
        rec = self.create()
        if "error" in rec:
            say("  skipped: the session did not become ready: %s" % rec["error"])
            return None
        uuid = rec["uuid"]
        sl, wk, sl_http, wk_http, modes, errs = [], [], [], [], set(), []
        for _ in range(self.n_cycle):
            for kind, want, out, out_http in (("sleep", is_status("sleeping"), sl, sl_http),
                                              ("wake", is_awake, wk, wk_http)):
                ms, http_ms, mode, err = self.action(uuid, kind, want)
                if err:
                    errs.append(err)
                    break
                out.append(ms)
                out_http.append(http_ms)
                modes.add("%s: %s" % (kind, mode))
            if errs:
                break
        sc, sc_http, sc_modes, bad_limits = self.scales(uuid, errs)
        self.results.update(sleep=stats(sl), wake=stats(wk), scale=stats(sc))
        for name, v, h in (("sleep -> `sleeping` event", sl, sl_http),
                           ("wake -> `ready` event", wk, wk_http),
                           ("scale -> job done", sc, sc_http)):
            say("  %-34s n=%d p50 %s ms  p99 %s ms  max %s ms  (HTTP answer p50 %s ms)" % (
                name, len(v), fmt(pct(v, 50)), fmt(pct(v, 99)), fmt(max(v) if v else None),
                fmt(pct(h, 50))))
        say("  measured: %s" % "; ".join(sorted(modes | sc_modes)))
        if bad_limits:
            say("  scale: %d times the cgroup memory limit was not the tier's; first: %s"
                % (len(bad_limits), bad_limits[0]))
        if errs:
            say("  errors: %d; first: %s" % (len(errs), errs[0]))
        return uuid

    def action(self, uuid, kind, want):
        """POST /session/{uuid}/{kind} -> the event want() accepts.
        (ms, http ms, mode, error)."""
        mark = self.ev.mark(uuid)
        t0 = time.perf_counter()
        r = self.api.call("POST", "/session/%s/%s" % (uuid, kind), auth="key")
        http_ms = (time.perf_counter() - t0) * 1000
        if r.status_code not in (200, 202):
            return None, None, None, "%s: %d %s" % (kind, r.status_code, r.text[:200])
        body = r.json()
        mode = ("answer queued, event awaited" if body.get("status") == "queued"
                else "answer waits for the job (status %r), event awaited" % body.get("status"))
        got = self.ev.wait(uuid, want, mark, 60)
        if got is None or not want(got[2]):
            return None, None, None, "%s: no event (%s); status %s" % (
                kind, got and got[2], self.status_line(uuid))
        return (got[0] - t0) * 1000, http_ms, mode, None

    def scales(self, uuid, errs):
        out, out_http, modes, bad = [], [], set(), []
        for i in range(self.n_cycle):
            up = i % 2 == 0
            t0 = time.perf_counter()
            r = self.api.call("POST", "/session/%s/scale" % uuid, auth="key",
                              json={"scale": "up" if up else "down"})
            http_ms = (time.perf_counter() - t0) * 1000
            if r.status_code not in (200, 202):
                errs.append("scale: %d %s" % (r.status_code, r.text[:200]))
                break
            body = r.json()
            if body.get("status") == "queued" and body.get("job_id"):
                err = self.poll_job(body["job_id"])
                modes.add("scale: answer queued, GET /api/jobs/{id} polled every %g ms to done"
                          % (JOB_POLL_S * 1000))
            else:
                err = None if r.status_code == 200 else "scale answered %d" % r.status_code
                modes.add("scale: HTTP answer (status %r)" % body.get("status"))
            if err:
                errs.append(err)
                break
            out.append((time.perf_counter() - t0) * 1000)
            out_http.append(http_ms)
            lim = memory_limit(uuid)
            if lim != (2 * GiB if up else 1 * GiB):
                bad.append("after scale %s: memory limit %s" % ("up" if up else "down", lim))
        return out, out_http, modes, bad

    def poll_job(self, job_id):
        deadline = time.perf_counter() + 60
        while time.perf_counter() < deadline:
            j = self.api.call("GET", "/api/jobs/%s" % job_id, auth="key").json()
            if j.get("state") == "done":
                return None
            if j.get("state") == "dead":
                return "job %s dead: %s" % (job_id, j.get("error"))
            time.sleep(JOB_POLL_S)
        return "job %s not done in 60 s" % job_id

    def phase_exec(self, uuid):
        say("\n== 3. exec round trip: POST /api/sessions/{uuid}/exec {\"command\":\"true\"}, "
            "c=1, %d calls" % self.n_exec)
        ms, errs, dur = [], [], []
        for _ in range(self.n_exec):
            t0 = time.perf_counter()
            r = self.api.call("POST", "/api/sessions/%s/exec" % uuid, json={"command": "true"})
            d = (time.perf_counter() - t0) * 1000
            body = r.json() if r.headers.get("content-type", "").startswith("application/json") \
                else {}
            if r.status_code != 200 or body.get("exit_code") != 0:
                errs.append("%d %s" % (r.status_code, r.text[:200]))
                continue
            ms.append(d)
            dur.append(body.get("duration_ms") or 0)
        self.results["exec"] = stats(ms)
        say("  %-34s n=%d p50 %s ms  p99 %s ms  max %s ms  (in-sandbox duration_ms p50 %s)%s" % (
            "exec `true`", len(ms), fmt(pct(ms, 50)), fmt(pct(ms, 99)),
            fmt(max(ms) if ms else None), fmt(pct(dur, 50), 0),
            "  errors %d, first: %s" % (len(errs), errs[0]) if errs else ""))

    # ---- 4 + 5: idle sandboxes ---------------------------------------------------------------

    def snapshot(self):
        mi = meminfo()
        return {"meminfo": mi, "free": free_m(),
                "rss": {k: proc_status(p, "VmRSS") for k, p in self.pids.items() if p},
                "fds": len(os.listdir("/proc/%d/fd" % self.pids["session-manager"])),
                "t": time.perf_counter()}

    def memory_figures(self, before):
        """Memory per idle sandbox (those whose cgroup holds processes): each
        part, in KiB."""
        uuids = [u for u in sorted(self.live) if cgroup_has_processes(u)]
        n = max(1, len(uuids))
        usage, rss_cg, cache_cg = 0, 0, 0
        for u in uuids:
            b, st = cgroup_memory(u)
            usage += b or 0
            rss_cg += st.get("total_rss", st.get("anon", 0))
            cache_cg += st.get("total_cache", st.get("file", 0))
        procs = sandbox_processes(uuids)
        outside = [p for p in procs if not p[2]]
        now = self.snapshot()
        mi0, mi1 = before["meminfo"], now["meminfo"]
        f = {
            "n": len(uuids),
            "lost": len(self.live) - len(uuids),
            "cgroup_usage_kib": usage / 1024.0 / n,
            "cgroup_rss_kib": rss_cg / 1024.0 / n,
            "cgroup_cache_kib": cache_cg / 1024.0 / n,
            "sm_rss_growth_kib": (now["rss"]["session-manager"] - before["rss"]["session-manager"])
            / float(n),
            "sw_rss_growth_kib": (now["rss"]["sync-worker"] - before["rss"]["sync-worker"])
            / float(n),
            "procs_per_sandbox": len(procs) / float(n),
            "procs_outside_cgroup": len(outside),
            "outside_rss_kib": sum(p[1] for p in outside) / float(n),
            "procs_rss_kib": sum(p[1] for p in procs) / float(n),
            "host_used_kib": (used_kib(mi1) - used_kib(mi0)) / float(n),
            "slab_kib": (mi1["Slab"] - mi0["Slab"]) / float(n),
            "page_cache_kib": (mi1["Cached"] - mi0["Cached"]) / float(n),
            "sm_fds": now["fds"],
            "sample_procs": [p[3] for p in procs[:3]],
            "outside_sample": [p[3] for p in outside[:3]],
        }
        return f, now

    def print_memory(self, f):
        say("  memory per idle sandbox at N=%d (KiB): cgroup usage %.0f (rss %.0f, cache %.0f); "
            "manager RSS growth %.0f; sync-worker RSS growth %.0f; processes outside the "
            "cgroup %d (%.0f KiB each sandbox)" % (
                f["n"], f["cgroup_usage_kib"], f["cgroup_rss_kib"], f["cgroup_cache_kib"],
                f["sm_rss_growth_kib"], f["sw_rss_growth_kib"], f["procs_outside_cgroup"],
                f["outside_rss_kib"]))
        say("    host view (whole box, other users too): `used` grows %.0f KiB/sandbox; Slab %.0f, "
            "page cache %.0f; %.1f sandbox processes each (RSS %.0f KiB, shared pages counted per process); "
            "manager fds %d" % (f["host_used_kib"], f["slab_kib"], f["page_cache_kib"],
                                f["procs_per_sandbox"], f["procs_rss_kib"], f["sm_fds"]))

    def checkpoints(self):
        return sorted(set(c for c in CHECKPOINTS if c <= self.target) | {self.target})

    def phase_capacity(self):
        say("\n== 4 + 5. idle sandboxes: batches of %d (each waited for ready) up to %d; "
            "%d sequential probes before each checkpoint" % (self.a.batch, self.target, PROBES))
        self.tidy("before capacity")
        before = self.snapshot()
        img0 = allocated_bytes(self.base)
        loops0 = len(loop_devices_under(self.base)[1])
        say("  before: free -m\n" + indent(before["free"]))
        t_start = time.perf_counter()
        count, window, first_error, per_cp, probes = 0, [], None, [], []
        for cp in self.checkpoints():
            while count < cp and not first_error:
                seq = count >= cp - PROBES
                n = 1 if seq else min(self.a.batch, cp - PROBES - count)
                recs = self.create_many(n, 1 if seq else n)
                for r in recs:
                    if "error" in r and not first_error:
                        first_error = r["error"]
                ok = [r for r in recs if "ms" in r]
                count += len(ok)
                window.extend((r["ms"], seq) for r in ok)
                if seq:
                    probes.extend(ok)
                if first_error:
                    break
            if count < cp:
                break
            f, _ = self.memory_figures(before)
            img = allocated_bytes(self.base)
            cp_rec = {"count": count, "elapsed_s": time.perf_counter() - t_start,
                      "batch": stats([m for m, s in window if not s]),
                      "probe": stats([m for m, s in window if s]),
                      "images_alloc_mib": (img[0] - img0[0]) / 1048576.0,
                      "images_apparent_gib": (img[1] - img0[1]) / float(GiB),
                      "loops": len(loop_devices_under(self.base)[1]) - loops0, "memory": f,
                      "mounts": host_mounts(),
                      "probe_breakdown": self.breakdown_of(probes)}
            per_cp.append(cp_rec)
            window, probes = [], []
            self.print_checkpoint(cp_rec)
        total = time.perf_counter() - t_start
        if first_error:
            say("  STOPPED at %d ready sandboxes: creation failed. First error:\n    %s"
                % (count, first_error))
            for line in failure_lines(self.a.sm_log)[:5]:
                say("    manager log: " + line)
            if count:
                f, _ = self.memory_figures(before)
                say("  at the stop: %d of %d ready sessions have a live sandbox" % (
                    f["n"], len(self.live)))
                self.print_memory(f)
                self.results["memory"] = f
        after = self.snapshot()
        say("  %d idle sandboxes ready in %.1f s (target %d)" % (count, total, self.target))
        say("  after: free -m\n" + indent(after["free"]))
        self.results["capacity"] = {"ready": count, "target": self.target, "seconds": total,
                                    "first_error": first_error, "checkpoints": per_cp}
        if per_cp and not first_error:
            self.results["memory"] = per_cp[-1]["memory"]
        uuids = sorted(self.live)
        took, errors, ms = self.delete_all(concurrency=16)
        drv = driver_ms(self.a.sm_log, "delete", uuids)
        self.results["capacity"]["delete"] = {"seconds": took, "http_event": stats(ms),
                                              "driver": stats(drv)}
        say("  deleted %d sessions in %.1f s (16 at once): DELETE -> `terminated` p50 %s p99 %s "
            "ms; the driver's delete p50 %s p99 %s ms%s" % (
                len(uuids), took, fmt(pct(ms, 50)), fmt(pct(ms, 99)), fmt(pct(drv, 50)),
                fmt(pct(drv, 99)), "; %d failed, first: %s" % (len(errors), errors[0])
                if errors else ""))

    def print_checkpoint(self, c):
        say("  -- at %d ready (%.1f s): create->ready in batches p50 %s p99 %s ms; "
            "sequential probes p50 %s p99 %s ms" % (
                c["count"], c["elapsed_s"], fmt(c["batch"]["p50"]), fmt(c["batch"]["p99"]),
                fmt(c["probe"]["p50"]), fmt(c["probe"]["p99"])))
        say("     images: %.1f MiB allocated (%.0f KiB each), %.0f GiB apparent; %d loop devices"
            % (c["images_alloc_mib"], c["images_alloc_mib"] * 1024 / c["count"],
               c["images_apparent_gib"], c["loops"]))
        say("     sequential probes, where the time goes (p50 ms): %s" % ", ".join(
            "%s %s" % (SHORT[label], fmt(p50)) for label, p50, _, _ in c["probe_breakdown"]))
        say("     host mounts in this namespace: %d" % c["mounts"])
        if c["memory"]["lost"]:
            say("     LOST: %d sessions that reached `ready` have no process in their cgroup "
                "any more (sandbox gone; status still %s)" % (
                    c["memory"]["lost"], "ready"))
        self.print_memory(c["memory"])

    # ---- leftovers ---------------------------------------------------------------------------

    def leftovers(self):
        """What the run's deleted sessions left on the host."""
        cgs = [d for u in self.created for d in cgroup_dirs(u)]
        mounts = mounts_under(os.path.realpath(self.base))
        loops = loop_devices_under(self.base)[1]
        runs = glob.glob(os.path.join(self.run_dir, "sandboxes", "*"))
        procs = sandbox_processes(self.created)
        return {"cgroups": cgs, "mounts": mounts, "loop devices": loops, "run dirs": runs,
                "processes": [p[3] for p in procs]}

    def check_clean(self):
        say("\n== cleanup check (all %d sessions of the run deleted through the API)"
            % len(self.created))
        left = self.leftovers()
        bad = {k: v for k, v in left.items() if v}
        if not bad:
            say("  clean: no cgroup, mount, loop device, run dir or process left")
        for k, v in bad.items():
            say("  LEFT: %d %s, e.g. %s" % (len(v), k, v[0]))
        self.results["leftovers"] = {k: len(v) for k, v in left.items()}
        return bad

    # ---- table -------------------------------------------------------------------------------

    def table(self):
        R = self.results
        say("\n== figures (ms unless noted)   ours vs the seed and the goal")
        row = "  %-30s %9s %9s %9s %6s   %-10s %s"
        say(row % ("", "p50", "p99", "max", "n", "seed", "goal"))

        def line(name, key, seed="", goal=""):
            s = R.get(key) or {}
            say(row % (name, fmt(s.get("p50")), fmt(s.get("p99")), fmt(s.get("max")),
                       s.get("n", "-"), seed, goal))
        line("create->ready, sequential", "ready_seq", SEED["ready"], GOAL["ready"])
        line("create->ready, %d concurrent" % self.n_conc, "ready_conc", SEED["ready"],
             GOAL["ready"])
        line("sleep", "sleep", SEED["sleep"], GOAL["sleep"])
        line("wake", "wake", SEED["wake"], GOAL["wake"])
        line("scale", "scale", SEED["scale"], GOAL["scale"])
        line("exec `true` round trip", "exec", "-", "-")
        cap = R.get("capacity") or {}
        alive = (R.get("memory") or {}).get("n")
        say(row % ("idle sandboxes held", cap.get("ready", "-"),
                   "" if alive is None else "alive %d" % alive, "", "", "-", GOAL["capacity"]))
        m = R.get("memory")
        if m:
            say("  memory per idle sandbox (N=%d): cgroup %.2f MiB + manager %.1f KiB + "
                "outside-cgroup processes %.1f KiB; host `used` +%.2f MiB"
                % (m["n"], m["cgroup_usage_kib"] / 1024, m["sm_rss_growth_kib"],
                   m["outside_rss_kib"], m["host_used_kib"] / 1024))


def indent(text):
    return "\n".join("    " + l for l in text.splitlines())


def failure_lines(log):
    try:
        with open(log, errors="replace") as f:
            return [l.strip() for l in f if "level=error" in l or "failed" in l]
    except OSError:
        return []


def host_limits(sm_pid):
    out = []
    for k in ("fs/inotify/max_user_instances", "kernel/pid_max", "user/max_user_namespaces",
              "user/max_mnt_namespaces"):
        try:
            with open("/proc/sys/" + k) as f:
                out.append("%s=%s" % (k.split("/")[-1], f.read().strip()))
        except OSError:
            pass
    try:
        with open("/proc/%d/limits" % sm_pid) as f:
            for line in f:
                if line.startswith(("Max open files", "Max processes")):
                    out.append("manager %s=%s" % (line[:25].strip().lower().replace(" ", "_"),
                                                  line.split()[3]))
    except OSError:
        pass
    try:
        with open("/sys/module/loop/parameters/max_loop") as f:
            out.append("loop max_loop=%s" % f.read().strip())
    except OSError:
        pass
    return ", ".join(out)


def cmd_run(a):
    b = Run(a)
    say("lifecycle benchmark: %d cores, %s; %s" % (
        os.cpu_count(), "cgroup v1" if os.path.isdir("/sys/fs/cgroup/memory") else "cgroup v2",
        host_limits(a.sm_pid)))
    say("  stack: Release binaries, embedded Redis (appendonly %s) + PostgreSQL (fsync %s, "
        "synchronous_commit %s); load average %s" % (
            os.environ.get("ATELIER_REDIS_APPENDONLY", "yes"),
            os.environ.get("ATELIER_PG_FSYNC", "on"), os.environ.get("ATELIER_PG_SYNC_COMMIT", "on"),
            open("/proc/loadavg").read().split()[0]))
    b.api.login("lifecycle-bench@example.com", "lifecycle-bench-password")
    b.ev = Events(os.path.join(b.run_dir, "redis.sock"))
    try:
        b.phase_creates()
        b.phase_profile()
        uuid = b.phase_cycles()
        if uuid:
            b.phase_exec(uuid)
        b.tidy("sleep/wake/scale/exec")
        b.phase_capacity()
    except Exception as e:  # noqa: BLE001 - a figure is missing, not a failure: report, clean up
        say("\nbench: stopped by %s: %s" % (type(e).__name__, e))
    finally:
        b.tidy("the run")
        if b.check_clean():
            uuids = b.created
            cleanup_sandboxes(uuids, [b.base], os.path.join(b.run_dir, "sandboxes"))
            left = {k: len(v) for k, v in b.leftovers().items() if v}
            say("  after a forced sweep: %s" % (left or "clean"))
        b.ev.close()
    b.table()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(b.results, f, indent=1, default=str)
    return 0


def cmd_sweep(a):
    """The exit trap's safety net: what the run's sessions left, by name."""
    sweep_data_dir(a.data_dir, a.workspaces)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--base", required=True)
    r.add_argument("--api-key", required=True)
    r.add_argument("--gateway-pid", type=int, required=True)
    r.add_argument("--sm-pid", type=int, required=True)
    r.add_argument("--sw-pid", type=int, required=True)
    r.add_argument("--sm-log", required=True)
    r.add_argument("--target", type=int, default=0,
                   help="idle sandboxes to try for (default 1000; 50 with --quick)")
    r.add_argument("--batch", type=int, default=50, help="creates at once while filling")
    r.add_argument("--quick", action="store_true", help="smoke run: fewer of everything")
    r.add_argument("--no-profile", dest="profile", action="store_false")
    r.add_argument("--json", help="also write the figures to this file")
    r.add_argument("--perf-data", help="keep the perf recording here (default: in the data dir)")
    for s in (r, sub.add_parser("sweep")):
        s.add_argument("--data-dir", required=True)
        s.add_argument("--workspaces", help="WORKSPACE_BASE_PATH (default DATA_DIR/workspaces)")
    a = p.parse_args()
    return cmd_run(a) if a.cmd == "run" else cmd_sweep(a)


if __name__ == "__main__":
    sys.exit(main())
