"""Test harness: real Redis and PostgreSQL (started by deploy/local/atelier
services-up in a temp data dir, reached over Unix sockets), and the real
Atelier binaries started per test on free loopback ports. Everything a test
starts is stopped by PID at its end."""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import psycopg2
import redis
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("ATELIER_BIN_DIR", os.path.join(ROOT, "build", "asan"))
ATELIER = os.path.join(ROOT, "deploy", "local", "atelier")
ROLES = ("gateway", "session-manager", "sync-worker", "backup-worker")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary(role):
    for p in (os.path.join(BIN, role, "atelier-" + role), os.path.join(BIN, "atelier-" + role)):
        if os.access(p, os.X_OK):
            return p
    raise RuntimeError("binary for %s not found under %s (build first)" % (role, BIN))


def wait_for(pred, timeout=10.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - retried until the deadline
            last = e
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last: %r)" % (timeout, what, last))



def cgroup_dirs(uuid):
    """Every atelier/<uuid> group of a session, cgroup v1 and v2."""
    found = glob.glob("/sys/fs/cgroup/*/atelier/%s" % uuid)
    if os.path.isdir("/sys/fs/cgroup/atelier/%s" % uuid):
        found.append("/sys/fs/cgroup/atelier/%s" % uuid)
    return found


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(path)]


def cleanup_sandboxes(uuids, bases, run_base):
    """Best effort, by name: the sandboxes, cgroups, run dirs and mounts a
    test's sessions left (a session-manager stopped with sandboxes running
    leaves them running: they outlive it by design)."""
    for sess in uuids:
        for d in cgroup_dirs(sess):
            try:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    for pid in f.read().split():
                        try:
                            os.kill(int(pid), signal.SIGKILL)
                        except ProcessLookupError:
                            pass
            except OSError:
                pass
    if uuids:
        time.sleep(0.2)
    for sess in uuids:
        for d in cgroup_dirs(sess):
            try:
                os.rmdir(d)
            except OSError:
                pass
        shutil.rmtree(os.path.join(run_base, sess), ignore_errors=True)
    for base in bases:
        for m in sorted(mounts_under(base), key=len, reverse=True):
            subprocess.run(["umount", "-l", m], check=False)


def sweep_data_dir(data_dir, workspaces=None):
    """A benchmark's exit trap: every sandbox of the stack under data_dir
    (its run dirs and its code_sessions rows), by name. workspaces: the
    volume base (default: the data dir's)."""
    run_dir = os.path.join(data_dir, "run")
    workspaces = workspaces or os.path.join(data_dir, "workspaces")
    uuids = set(os.path.basename(p) for p in glob.glob(os.path.join(run_dir, "sandboxes", "*")))
    try:
        with psycopg2.connect(host=run_dir, user="atelier", dbname="atelier") as db:
            with db.cursor() as c:
                c.execute("SELECT uuid::text FROM code_sessions")
                uuids.update(r[0] for r in c.fetchall())
    except psycopg2.Error:
        pass
    if [u for u in uuids if cgroup_dirs(u)] or mounts_under(os.path.realpath(workspaces)):
        cleanup_sandboxes(sorted(uuids), [workspaces], os.path.join(run_dir, "sandboxes"))
        print("bench sweep: removed what %d sessions left" % len(uuids))


class Services:
    """One Redis + one PostgreSQL for the whole test session."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="atelier-test-")
        os.chmod(self.dir, 0o755)
        self.env = dict(os.environ, ATELIER_DATA_DIR=self.dir, ATELIER_REDIS_APPENDONLY="no",
                        ATELIER_PG_FSYNC="off", ATELIER_PG_SYNC_COMMIT="off")
        subprocess.run([ATELIER, "services-up"], env=self.env, check=True)
        self.run = os.path.join(self.dir, "run")
        self.redis_url = "unix://%s/redis.sock" % self.run

    def db_url(self, name):
        return "postgresql:///%s?host=%s&user=atelier" % (name, self.run)

    def admin(self):
        conn = psycopg2.connect(dbname="postgres", host=self.run, user="atelier")
        conn.autocommit = True
        return conn

    def redis(self):
        return redis.Redis(unix_socket_path=os.path.join(self.run, "redis.sock"))

    def close(self):
        subprocess.run([ATELIER, "services-down"], env=self.env, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


class Proc:
    def __init__(self, role, popen, log_path, env):
        self.role = role
        self.popen = popen
        self.pid = popen.pid
        self.log_path = log_path
        self.env = env

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.popen.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        return self.popen.wait(timeout=timeout)


class Stack:
    """A fresh database and an empty Redis for one test, and the processes
    the test starts against them."""

    def __init__(self, services, tmp_path):
        self.services = services
        self.tmp = str(tmp_path)
        self.db_name = "t_" + uuid.uuid4().hex[:12]
        conn = services.admin()
        try:
            conn.cursor().execute("CREATE DATABASE %s" % self.db_name)
        finally:
            conn.close()
        self.r = services.redis()
        self.r.flushall()
        self.port = free_port()
        self.api_key = "test-key-" + uuid.uuid4().hex[:8]
        self.procs = []
        self.base_env = dict(
            os.environ,
            ATELIER_DATA_DIR=services.dir,
            DATABASE_URL=services.db_url(self.db_name),
            REDIS_URL=services.redis_url,
            ATELIER_HTTP_PORT=str(self.port),
            API_KEY=self.api_key,
            ATELIER_HEARTBEAT_TTL_MS="3000",
            # a killed session-manager's sessions are adopted 2 s later
            ATELIER_LEASE_TTL_MS="2000",
            # tests exercise nohup, mount, dd inside sandboxes; test_ws.py
            # sets the policy it checks
            ATELIER_COMMAND_POLICY="",
            ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
            UBSAN_OPTIONS="print_stacktrace=1",
        )

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, role, env=None, wait_ready=True, name=None):
        e = dict(self.base_env)
        e.update(env or {})
        n = sum(1 for p in self.procs if p.role == role) + 1
        e.setdefault("ATELIER_INSTANCE", name or "%s-%d-%s" % (role, n, uuid.uuid4().hex[:6]))
        log_path = os.path.join(self.tmp, "%s.log" % e["ATELIER_INSTANCE"])
        logf = open(log_path, "w")
        p = subprocess.Popen([binary(role)], env=e, stdout=logf, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        logf.close()
        proc = Proc(role, p, log_path, e)
        proc.instance = e["ATELIER_INSTANCE"]
        self.procs.append(proc)
        if wait_ready:
            if role == "gateway":
                port = int(e["ATELIER_HTTP_PORT"])
                wait_for(lambda: requests.get("http://127.0.0.1:%d/health" % port, timeout=1).ok,
                         what="gateway on port %d" % port)
            else:
                wait_for(lambda: "event=started" in proc.log(), what="%s start" % role)
                # consuming once its group exists and the first read is issued
                wait_for(lambda: self.r.exists("hb:%s:%s" % (role, proc.instance)),
                         what="%s heartbeat" % role)
        return proc

    def start_all(self, env=None):
        return {role: self.start(role, env=env) for role in ROLES}

    def db(self):
        conn = psycopg2.connect(self.base_env["DATABASE_URL"])
        conn.autocommit = True
        return conn

    def query(self, sql, *args):
        conn = self.db()
        try:
            cur = conn.cursor()
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def get(self, path, **kw):
        return requests.get(self.url + path, timeout=kw.pop("timeout", 10), **kw)

    def post(self, path, **kw):
        return requests.post(self.url + path, timeout=kw.pop("timeout", 10), **kw)

    def admin_headers(self):
        return {"X-API-Key": self.api_key}

    def request(self, method, path, **kw):
        return requests.request(method, self.url + path, timeout=kw.pop("timeout", 10), **kw)

    def new_user(self, email=None, password="correct horse battery", username=None):
        """Register and log in a fresh user; returns (user dict, auth headers)."""
        email = email or "u%s@example.com" % uuid.uuid4().hex[:10]
        body = {"email": email, "password": password}
        if username:
            body["username"] = username
        r = self.post("/api/users/register", json=body)
        assert r.status_code == 201, r.text
        r = self.post("/api/users/login", json={"email": email, "password": password})
        assert r.status_code == 200, r.text
        return r.json()["user"], {"Authorization": "Bearer " + r.json()["access_token"]}

    def audit(self, action):
        """audit_log rows of one action, oldest first, as dicts."""
        rows = self.query("SELECT actor, user_id, action, target, detail::text, ip FROM audit_log "
                          "WHERE action = %s ORDER BY id", action)
        return [{"actor": a, "user_id": u, "action": ac, "target": t,
                 "detail": json.loads(d) if d else None, "ip": ip}
                for a, u, ac, t, d, ip in rows]

    def enqueue(self, role, kind, args=None, wait=False, timeout_ms=None):
        body = {"role": role, "kind": kind, "args": args or {}, "wait": wait}
        if timeout_ms:
            body["timeout_ms"] = timeout_ms
        r = self.post("/api/jobs", json=body, headers=self.admin_headers(), timeout=30)
        assert r.status_code in (200, 202), r.text
        return r.json()

    def job(self, job_id):
        rows = self.query("SELECT state, attempts, owner, result::text, error FROM jobs "
                          "WHERE id = %s", job_id)
        if not rows:
            return None
        state, attempts, owner, result, error = rows[0]
        return {"state": state, "attempts": attempts, "owner": owner,
                "result": json.loads(result) if result else None, "error": error}

    def stop(self, proc, sig=signal.SIGTERM, timeout=15):
        proc.signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.signal(signal.SIGKILL)
            proc.wait(5)
            raise AssertionError("%s (pid %d) did not exit within %ds of signal %d"
                                 % (proc.role, proc.pid, timeout, sig))

    def close(self):
        problems = []
        for p in self.procs:
            if p.alive():
                p.signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.signal(signal.SIGKILL)
                p.wait(5)
                problems.append("%s pid %d ignored SIGTERM" % (p.role, p.pid))
            text = p.log()
            for mark in SANITIZER_MARKS:
                if mark in text:
                    problems.append("%s (%s) log has '%s':\n%s" % (p.role, p.log_path, mark,
                                                                   text[-4000:]))
        self.r.close()
        try:
            uuids = [u for (u,) in self.query("SELECT uuid FROM code_sessions")]
        except Exception:  # noqa: BLE001 - a test may have dropped its own tables
            uuids = []
        bases = {p.env.get("WORKSPACE_BASE_PATH") or os.path.join(self.services.dir, "workspaces")
                 for p in self.procs if p.role == "session-manager"}
        if bases:
            cleanup_sandboxes(uuids, bases, os.path.join(self.services.dir, "run", "sandboxes"))
        try:
            conn = self.services.admin()
            try:
                conn.cursor().execute("DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.db_name)
            finally:
                conn.close()
        except Exception as e:  # noqa: BLE001
            problems.append("drop database: %s" % e)
        return problems
