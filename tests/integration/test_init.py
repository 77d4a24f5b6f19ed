"""atelier-init, the PID 1 of every sandbox, under a real bubblewrap sandbox.

Each test starts its own sandbox the way the session-manager will (user, pid, ipc, uts
and net namespaces, read-only /usr, no --die-with-parent), from a throwaway parent that
exits at once, and drives init over its SOCK_SEQPACKET socket with SCM_RIGHTS from
Python. Everything is stopped by PID and removed at the end of each test."""
import array
import json
import os
import re
import select
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import pytest

from harness import BIN

INIT = os.path.join(BIN, "session-manager", "init", "atelier-init")
BWRAP = "/usr/bin/bwrap"
PYTHON = "/usr/bin/python3"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="atelier-init tests need root (bwrap namespaces)"),
    pytest.mark.skipif(not os.access(BWRAP, os.X_OK), reason="bubblewrap is not installed"),
    pytest.mark.skipif(not os.access(INIT, os.X_OK), reason="atelier-init not built under " + BIN),
]

ENV = ["PATH=/usr/bin:/bin", "HOME=/workspace", "LANG=C.UTF-8"]


def ignore_glibc_reserved_signal():
    """Start sandboxes with signal 32 ignored, as some CI runners leave it:
    init must still hand its children default dispositions (glibc's signal()
    cannot reset it; init uses the raw system call)."""
    import ctypes

    class SigAction(ctypes.Structure):
        _fields_ = [("handler", ctypes.c_void_p), ("flags", ctypes.c_ulong),
                    ("restorer", ctypes.c_void_p), ("mask", ctypes.c_ulong)]
    ignore = SigAction(1, 0, None, 0)  # SIG_IGN
    ctypes.CDLL(None).syscall(13, 32, ctypes.byref(ignore), None, 8)  # rt_sigaction (x86_64)



def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_until(pred, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("timed out waiting for " + what)


def read_until(fd, pattern, timeout=5.0):
    """Reads fd until the bytes seen so far match pattern (a regex on bytes)."""
    buf = b""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, buf, re.S):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no %r in %r" % (pattern, buf))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the pty slave side is gone
                chunk = b""
            if not chunk:
                raise AssertionError("EOF before %r in %r" % (pattern, buf))
            buf += chunk
    return buf


def read_all(fd, timeout=5.0):
    buf = b""
    deadline = time.monotonic() + timeout
    while True:
        r, _, _ = select.select([fd], [], [], max(0, deadline - time.monotonic()))
        if not r:
            raise AssertionError("no EOF in time; got %r" % buf)
        chunk = os.read(fd, 65536)
        if not chunk:
            return buf
        buf += chunk


class Client:
    """One connection to init: requests with ids, events queued while waiting."""

    def __init__(self, path, timeout=5.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.005)
        self.sock.settimeout(timeout)
        self.next_id = 0
        self.events = []
        self.hello, _ = self.recv()

    def peer_pid(self):
        pid, _, _ = struct.unpack("3i", self.sock.getsockopt(socket.SOL_SOCKET,
                                                             socket.SO_PEERCRED, 12))
        return pid

    def recv(self):
        msg, fds, _, _ = socket.recv_fds(self.sock, 65536, 8)
        if not msg:
            raise EOFError("init closed the connection")
        return json.loads(msg), fds

    def request(self, op, **kw):
        self.next_id += 1
        kw.update(id=self.next_id, op=op)
        self.sock.send(json.dumps(kw).encode())
        return self.wait_reply(self.next_id)

    def wait_reply(self, rid):
        while True:
            msg, fds = self.recv()
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == rid:
                return msg, fds
            else:
                for fd in fds:
                    os.close(fd)

    def ok(self, op, **kw):
        msg, fds = self.request(op, **kw)
        assert msg["ok"] is True, msg
        return msg, fds

    def wait_exit(self, pid, timeout=5.0):
        deadline = time.monotonic() + timeout
        while True:
            for ev in self.events:
                if ev.get("event") == "exit" and ev["pid"] == pid:
                    self.events.remove(ev)
                    return ev
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg, fds = self.recv()
            except socket.timeout:
                raise AssertionError("no exit event for pid %d" % pid)
            finally:
                self.sock.settimeout(5.0)
            for fd in fds:
                os.close(fd)
            if "event" in msg:
                self.events.append(msg)

    def run(self, argv, timeout=10.0):
        """Spawns argv on pipes and returns (stdout, stderr, exit event)."""
        msg, fds = self.ok("spawn", argv=argv, env=ENV)
        os.close(fds[0])
        closed, _ = self.request("close_stdin", pid=msg["pid"])
        assert closed["ok"] or closed["errno"] == 3, closed  # ESRCH: it has already ended
        out = read_all(fds[1], timeout)
        err = read_all(fds[2], timeout)
        os.close(fds[1])
        os.close(fds[2])
        return out, err, self.wait_exit(msg["pid"], timeout)

    def close(self):
        self.sock.close()


class Sandbox:
    """A bwrap sandbox with atelier-init as PID 1, started by a parent that exits at once
    (as the session-manager's sandboxes must outlive it)."""

    def __init__(self, listen_fd=False):
        self.dir = tempfile.mkdtemp(prefix="atelier-init-test-")
        self.run_dir = os.path.join(self.dir, "run")
        self.ws = os.path.join(self.dir, "ws")
        os.mkdir(self.run_dir)
        os.mkdir(self.ws)
        self.log_path = os.path.join(self.dir, "init.log")
        self.init_pid = None
        cmd = [BWRAP, "--unshare-pid", "--as-pid-1", "--unshare-user", "--uid", "1000",
               "--gid", "1000", "--unshare-ipc", "--unshare-uts", "--unshare-net",
               "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
               "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
               "--symlink", "usr/sbin", "/sbin", "--proc", "/proc", "--dev", "/dev",
               "--tmpfs", "/tmp", "--bind", self.run_dir, "/run/atelier",
               "--bind", self.ws, "/workspace", "--ro-bind", INIT, "/.atelier/init",
               "--chdir", "/workspace", "--new-session", "/.atelier/init"]
        pass_fds = ()
        if listen_fd:
            # The socket lives outside the sandbox; init only inherits the listening fd.
            self.sock_path = os.path.join(self.dir, "init.sock")
            lsock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            lsock.bind(self.sock_path)
            lsock.listen(16)
            pass_fds = (lsock.fileno(),)
            cmd += ["--listen-fd", str(lsock.fileno()), "--workdir", "/workspace"]
        else:
            self.sock_path = os.path.join(self.run_dir, "init.sock")
            cmd += ["--socket", "/run/atelier/init.sock", "--workdir", "/workspace"]
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1")
        parent = subprocess.Popen(
            ["/bin/sh", "-c", '"$@" >"$LOG" 2>&1 </dev/null & echo $!', "sh"] + cmd,
            stdout=subprocess.PIPE, env=dict(env, LOG=self.log_path), pass_fds=pass_fds,
            preexec_fn=ignore_glibc_reserved_signal)
        self.bwrap_pid = int(parent.stdout.read())
        parent.stdout.close()
        parent.wait()
        self.parent_pid = parent.pid
        if listen_fd:
            lsock.close()
        try:
            self.client = self.connect()
        except Exception:
            self.close()
            raise
        # With --listen-fd, SO_PEERCRED names whoever called listen() (this process), so
        # init is found as bwrap's child instead.
        with open("/proc/%d/task/%d/children" % (self.bwrap_pid, self.bwrap_pid)) as f:
            (self.init_pid,) = map(int, f.read().split())
        if not listen_fd:
            assert self.client.peer_pid() == self.init_pid

    def connect(self):
        return Client(self.sock_path)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def close(self):
        if getattr(self, "client", None):
            self.client.close()
        for pid in (self.init_pid, self.bwrap_pid):
            if pid and alive(pid):
                os.kill(pid, signal.SIGKILL)
        for pid in (self.init_pid, self.bwrap_pid):
            if pid:
                wait_until(lambda: not alive(pid), 5, "pid %d to go" % pid)
        log = self.log() if os.path.exists(self.log_path) else ""
        shutil.rmtree(self.dir, ignore_errors=True)
        for mark in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            assert mark not in log, log


@pytest.fixture
def sandbox():
    sb = Sandbox()
    yield sb
    sb.close()


def test_ping_and_hello(sandbox):
    c = sandbox.client
    assert c.hello["event"] == "hello" and c.hello["pid"] == 1
    msg, _ = c.ok("ping")
    assert msg["pid"] == 1 and msg["children"] == 0 and msg["uptime_ms"] >= 0
    assert sandbox.init_pid != sandbox.bwrap_pid and alive(sandbox.init_pid)


def test_survives_death_of_starting_parent(sandbox):
    # the shell that started bwrap has exited and been reaped; init still serves
    assert not alive(sandbox.parent_pid)
    sandbox.client.ok("ping")
    out, _, ev = sandbox.client.run(["sh", "-c", "echo $$; cat /proc/1/cmdline"])
    assert b"/.atelier/init" in out and ev["code"] == 0


def test_pty_shell_echo(sandbox):
    c = sandbox.client
    msg, fds = c.ok("spawn", argv=["bash", "--norc", "--noprofile", "-i"], env=ENV + ["PS1=$ "],
                    pty=True, cols=100, rows=30)
    assert msg["fds"] == ["pty"] and len(fds) == 1
    master = fds[0]
    os.write(master, b"echo h''i; tty; stty size; echo TERM=$TERM\n")
    out = read_until(master, rb"TERM=xterm\S*\r\n")
    assert re.search(rb"[\r\n]hi\r\n", out), out
    assert b"/dev/pts/" in out and b"30 100" in out and b"TERM=xterm-256color" in out
    os.write(master, b"exit 7\n")
    assert c.wait_exit(msg["pid"])["code"] == 7
    os.close(master)


def test_pty_is_controlling_terminal_ctrl_c(sandbox):
    c = sandbox.client
    # a foreground sleep in bash: ^C interrupts it and bash prints a new prompt
    msg, fds = c.ok("spawn", argv=["bash", "--norc", "--noprofile", "-i"], env=ENV + ["PS1=P> "],
                    pty=True)
    master = fds[0]
    read_until(master, rb"P> ")
    os.write(master, b"sleep 100; echo after-sleep\n")
    time.sleep(0.3)
    t0 = time.monotonic()
    os.write(master, b"\x03")
    out = read_until(master, rb"\^C.*P> ", timeout=3)
    assert time.monotonic() - t0 < 2 and b"after-sleep" not in out.split(b"^C", 1)[1]
    os.close(master)
    c.ok("signal", pid=msg["pid"], sig=9)
    c.wait_exit(msg["pid"])
    # a program on the pty directly: ^C kills it with SIGINT
    msg, fds = c.ok("spawn", argv=["sleep", "100"], env=ENV, pty=True)
    time.sleep(0.1)
    os.write(fds[0], b"\x03")
    ev = c.wait_exit(msg["pid"], timeout=3)
    assert ev["signal"] == 2 and ev["code"] == 130
    os.close(fds[0])


def test_pipes_stdout_stderr_exit_code(sandbox):
    c = sandbox.client
    msg, fds = c.ok("spawn", argv=["sh", "-c", "read x; echo out-$x; echo err-$x >&2; exit 3"],
                    env=ENV)
    assert msg["fds"] == ["stdin", "stdout", "stderr"] and len(fds) == 3
    os.write(fds[0], b"42\n")
    assert read_all(fds[1]) == b"out-42\n"
    assert read_all(fds[2]) == b"err-42\n"
    ev = c.wait_exit(msg["pid"])
    assert ev["code"] == 3 and ev["signal"] == 0 and ev["seq"] >= 1
    for fd in fds:
        os.close(fd)
    # stdin reaches EOF only when both copies (ours and init's) are closed
    msg, fds = c.ok("spawn", argv=["wc", "-c"], env=ENV)
    os.write(fds[0], b"12345")
    os.close(fds[0])
    c.ok("close_stdin", pid=msg["pid"])
    assert read_all(fds[1]).strip() == b"5"
    assert c.wait_exit(msg["pid"])["code"] == 0
    err, _ = c.request("close_stdin", pid=msg["pid"])
    assert err["ok"] is False
    os.close(fds[1])
    os.close(fds[2])
    # cwd and env are the child's own; env absent means init's environment
    out, _, _ = c.run(["sh", "-c", "pwd; echo $HOME"])
    assert out == b"/workspace\n/workspace\n"
    # nothing of init's leaks into a child: no ignored or blocked signal, no descriptor
    out, _, _ = c.run(["sh", "-c", "grep -E '^Sig(Ign|Blk)' /proc/self/status; ls /proc/self/fd"])
    assert out == b"SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n0\n1\n2\n3\n", out


def test_exec_failure_reported(sandbox):
    c = sandbox.client
    msg, fds = c.request("spawn", argv=["no-such-program-xyz"], env=ENV)
    assert msg["ok"] is False and fds == []
    assert msg["error"] == "exec no-such-program-xyz: No such file or directory"
    assert msg["errno"] == 2
    msg, _ = c.request("spawn", argv=["/workspace"], env=ENV)
    assert msg["ok"] is False and "Permission denied" in msg["error"]
    msg, _ = c.request("spawn", argv=["true"], cwd="/nonexistent", env=ENV)
    assert msg["ok"] is False and msg["error"].startswith("chdir /nonexistent")
    # no exit record and no zombie for a child that never ran
    assert c.ok("ping")[0]["children"] == 0
    assert c.ok("exits")[0]["exits"] == []


def test_bad_requests_do_not_hurt(sandbox):
    c = sandbox.client
    s = c.sock
    for raw in (b"not json", b"[1,2]", b'{"op":"ping"}', b'{"id":1}', b'{"id":2,"op":"nope"}',
                b'{"id":3,"op":"spawn"}', b'{"id":4,"op":"spawn","argv":[]}',
                b'{"id":5,"op":"spawn","argv":["true"],"env":["NOEQUALS"]}',
                b'{"id":6,"op":"signal","pid":1,"sig":9}', b'{"id":7,"op":"attach","pid":999}',
                b'{"id":8,"op":"spawn","argv":["true"],"cols":0}', b"x" * 70000):
        s.send(raw)
        msg, fds = c.recv()
        while "event" in msg:
            msg, fds = c.recv()
        assert msg["ok"] is False and msg["error"], (raw[:40], msg)
    c.ok("ping")
    # a fifth client is refused, the four others keep working
    extra = [sandbox.connect() for _ in range(3)]
    fifth = Client(sandbox.sock_path)
    assert fifth.hello["event"] == "refused" and fifth.hello["errno"] == 16, fifth.hello
    with pytest.raises((EOFError, ConnectionError)):
        fifth.recv()
    fifth.close()
    for x in extra:
        x.ok("ping")
        x.close()
    c.ok("ping")
    assert alive(sandbox.init_pid)


def test_client_that_does_not_read_is_dropped(sandbox):
    # thousands of requests and never a read: init queues a bounded number of replies,
    # then drops that client, and keeps serving the others
    greedy = sandbox.connect()
    greedy.sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            greedy.sock.send(b'{"id":1,"op":"list"}')
            sent += 1
        except BlockingIOError:
            time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            break
    assert sent > 128, sent
    wait_until(lambda: "output_queue_full" in sandbox.log(), 5, "greedy client dropped")
    greedy.close()
    sandbox.client.ok("ping")
    assert alive(sandbox.init_pid)


def test_zombies_reaped(sandbox):
    c = sandbox.client
    pids = []
    for _ in range(50):
        msg, fds = c.ok("spawn", argv=["sh", "-c", "sleep 0.1 & exec true"], env=ENV)
        pids.append(msg["pid"])
        for fd in fds:
            os.close(fd)
    for pid in pids:
        assert c.wait_exit(pid)["code"] == 0
    time.sleep(0.5)  # the orphaned sleeps end and are re-parented to init
    out, _, _ = c.run(["sh", "-c", "cat /proc/[0-9]*/stat"])
    states = [line.rsplit(b")", 1)[1].split()[0] for line in out.splitlines() if line]
    assert states and b"Z" not in states, out
    out, _, _ = c.run(["ps", "-eo", "pid,stat,comm"])
    assert not re.search(rb"\sZ", out), out
    assert c.ok("list")[0]["procs"] == []
    # seen from the host too: init has no children left
    with open("/proc/%d/task/%d/children" % (sandbox.init_pid, sandbox.init_pid)) as f:
        assert f.read().strip() == ""


def test_reattach_after_client_killed(sandbox):
    # a separate client process spawns a pty shell and a pipe writer, then is SIGKILLed
    script = r"""
import json, os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect(sys.argv[1])
socket.recv_fds(s, 65536, 3)
env = ["PATH=/usr/bin:/bin", "PS1=$ "]
s.send(json.dumps({"id": 1, "op": "spawn", "argv": ["bash", "--norc", "-i"], "env": env,
                   "pty": True}).encode())
m1, f1, _, _ = socket.recv_fds(s, 65536, 3)
s.send(json.dumps({"id": 2, "op": "spawn", "argv": ["sh", "-c",
                   "echo first; sleep 0.5; echo second; cat"], "env": env}).encode())
m2, f2, _, _ = socket.recv_fds(s, 65536, 3)
os.write(f1[0], b"export X=before\n")
print(json.loads(m1)["pid"], json.loads(m2)["pid"], flush=True)
time.sleep(100)
"""
    p = subprocess.Popen([PYTHON, "-c", script, sandbox.sock_path], stdout=subprocess.PIPE)
    try:
        shell_pid, pipe_pid = map(int, p.stdout.readline().split())
        time.sleep(0.2)
    finally:
        p.kill()
        p.wait()
        p.stdout.close()
    c = sandbox.connect()
    try:
        procs = {x["pid"]: x for x in c.ok("list")[0]["procs"]}
        assert procs[shell_pid]["pty"] is True and procs[pipe_pid]["pty"] is False
        assert procs[shell_pid]["argv0"] == "bash"
        msg, fds = c.ok("attach", pid=shell_pid)
        assert msg["fds"] == ["pty"]
        master = fds[0]
        os.write(master, b"echo X=${X}-seen\n")
        read_until(master, rb"X=before-seen")  # same shell, state kept, no SIGHUP
        os.close(master)
        msg, fds = c.ok("attach", pid=pipe_pid)
        assert msg["fds"] == ["stdin", "stdout", "stderr"]
        # output written while nobody was attached is still there
        out = read_until(fds[1], rb"first\nsecond\n")
        assert out == b"first\nsecond\n"
        os.write(fds[0], b"echoed\n")
        read_until(fds[1], rb"echoed\n")
        for fd in fds:
            os.close(fd)
        c.ok("close_stdin", pid=pipe_pid)
        assert c.wait_exit(pipe_pid)["code"] == 0
        msg, fds = c.ok("attach", pid=shell_pid)
        os.write(fds[0], b"exit\n")
        os.close(fds[0])
        c.wait_exit(shell_pid)
    finally:
        c.close()


def test_list_shows_argv0_as_valid_utf8(sandbox):
    name = "\u00e9" * 40  # 80 bytes: cut to fit 63 without splitting a character
    os.symlink("/usr/bin/sleep", os.path.join(sandbox.ws, name))
    c = sandbox.client
    msg, fds = c.ok("spawn", argv=["/workspace/" + name, "100"], env=ENV)
    procs = c.ok("list")[0]["procs"]
    assert [p["argv0"] for p in procs] == ["\u00e9" * 31]
    assert msg["pid"] == procs[0]["pid"] and procs[0]["started_ms"] > 0
    c.ok("signal", pid=msg["pid"], sig=9)
    assert c.wait_exit(msg["pid"])["signal"] == 9
    for fd in fds:
        os.close(fd)


def test_exit_records_kept_until_acknowledged(sandbox):
    c = sandbox.client
    c.close()
    sandbox.client = None
    # spawn with a client that then goes away: nobody receives the exit events
    c2 = sandbox.connect()
    pids = [c2.ok("spawn", argv=["sh", "-c", "exit %d" % i], env=ENV)[0]["pid"] for i in range(5)]
    c2.close()
    time.sleep(0.3)
    c3 = sandbox.connect()
    sandbox.client = c3
    m, _ = c3.ok("exits")
    recs = {e["pid"]: e for e in m["exits"]}
    assert sorted(recs) == sorted(pids) and m["dropped"] == 0 and m["more"] is False
    assert [recs[p]["code"] for p in pids] == [0, 1, 2, 3, 4]
    # reading does not consume; acknowledging does
    assert len(c3.ok("exits")[0]["exits"]) == 5
    seqs = sorted(e["seq"] for e in m["exits"])
    assert len(c3.ok("exits", ack=seqs[2])[0]["exits"]) == 2
    assert c3.ok("exits", ack=m["last_seq"])[0]["exits"] == []


def test_inside_process_cannot_drive_socket(sandbox):
    script = ("import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); "
              "s.connect('/run/atelier/init.sock'); print(s.recv(65536).decode()); "
              "s.send(b'{\"id\":1,\"op\":\"spawn\",\"argv\":[\"touch\",\"/workspace/pwned\"]}');"
              "print(repr(s.recv(65536)))")
    out, err, ev = sandbox.client.run(["python3", "-c", script])
    first = json.loads(out.splitlines()[0])
    assert first["event"] == "refused" and first["errno"] == 1, out
    assert b"peer is inside the sandbox" in out
    assert not os.path.exists(os.path.join(sandbox.ws, "pwned"))
    assert "reason=inside_sandbox" in sandbox.log()
    sandbox.client.ok("ping")
    # nor reach init's copies of the terminals through /proc/1/fd (init is not dumpable)
    out, _, _ = sandbox.client.run(
        ["sh", "-c", "readlink /proc/1/fd/3 || echo no-link; (exec </proc/1/fd/3) 2>/dev/null "
                     "|| echo no-open; cat /proc/1/environ 2>/dev/null || echo no-environ"])
    assert out == b"no-link\nno-open\nno-environ\n", out


def test_signals_from_inside_are_ignored(sandbox):
    c = sandbox.client
    out, _, ev = c.run(["sh", "-c", "for s in TERM INT HUP QUIT USR1; do kill -$s 1; done; "
                                    "echo sent"])
    assert out == b"sent\n"
    time.sleep(0.2)
    assert alive(sandbox.init_pid)
    c.ok("ping")
    # SIGTERM from the host is ignored as well (only shutdown or SIGKILL end init)
    os.kill(sandbox.init_pid, signal.SIGTERM)
    time.sleep(0.1)
    c.ok("ping")


def test_signal_process_group(sandbox):
    c = sandbox.client
    msg, fds = c.ok("spawn", argv=["sh", "-c", "sleep 100 & sleep 100 & wait"], env=ENV)
    time.sleep(0.2)
    c.ok("signal", pid=msg["pid"], sig=15, group=True)
    ev = c.wait_exit(msg["pid"])
    assert ev["signal"] == 15
    time.sleep(0.2)
    out, _, _ = c.run(["sh", "-c", "cat /proc/[0-9]*/cmdline | tr '\\0' ' '"])
    assert b"sleep 100" not in out
    for fd in fds:
        os.close(fd)
    m, _ = c.request("signal", pid=99999, sig=0)
    assert m["ok"] is False and m["errno"] == 3


def test_shutdown_kills_everything(sandbox):
    c = sandbox.client
    stubborn, fds1 = c.ok("spawn", argv=["sh", "-c", "trap '' TERM; while :; do sleep 1; done"],
                          env=ENV)
    polite, fds2 = c.ok("spawn", argv=["sleep", "100"], env=ENV, pty=True)
    # a process init did not spawn (an orphan of a shell) goes too
    c.run(["sh", "-c", "setsid sleep 100 >/dev/null 2>&1 &"])
    time.sleep(0.2)
    t0 = time.monotonic()
    msg, _ = c.ok("shutdown", grace_ms=300)
    took = time.monotonic() - t0
    assert 0.25 < took < 3, took
    exits = {e["pid"]: e for e in c.events if e.get("event") == "exit"}
    assert exits[polite["pid"]]["signal"] == 15
    assert exits[stubborn["pid"]]["signal"] == 9
    with pytest.raises((EOFError, ConnectionError)):
        c.recv()
    wait_until(lambda: not alive(sandbox.init_pid), 5, "init to exit")
    wait_until(lambda: not alive(sandbox.bwrap_pid), 5, "bwrap to exit")
    assert not os.path.exists(sandbox.sock_path)
    assert "event=stopped" in sandbox.log()
    for fd in fds1 + fds2:
        os.close(fd)


def test_listen_fd_socket_outside_sandbox():
    sb = Sandbox(listen_fd=True)
    try:
        sb.client.ok("ping")
        out, _, ev = sb.client.run(["sh", "-c", "ls /run/atelier; echo done"])
        assert out == b"done\n" and ev["code"] == 0  # nothing inside to tamper with
    finally:
        sb.close()


def test_measure_spawn_round_trip_and_memory(sandbox, capsys):
    c = sandbox.client
    with open("/proc/%d/status" % sandbox.init_pid) as f:
        rss_kb = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    nfds = len(os.listdir("/proc/%d/fd" % sandbox.init_pid))
    times = []
    for _ in range(1000):
        t0 = time.perf_counter()
        msg, fds = c.ok("spawn", argv=["true"], env=ENV)
        times.append((time.perf_counter() - t0) * 1000)
        for fd in fds:
            os.close(fd)
    c.wait_exit(msg["pid"])
    time.sleep(0.1)
    assert c.ok("ping")[0]["children"] == 0
    assert len(os.listdir("/proc/%d/fd" % sandbox.init_pid)) == nfds  # no descriptor leaked
    times.sort()
    p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
    with open("/proc/%d/status" % sandbox.init_pid) as f:
        rss_after_kb = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    with capsys.disabled():
        sys.stderr.write("\n[atelier-init] spawn round trip (request to pid reply, `true`, "
                         "pipes, python client): p50 %.3f ms, p99 %.3f ms, mean %.3f ms over "
                         "1000; idle init VmRSS %d KiB (%d KiB after 1000 spawns); build %s\n"
                         % (p50, p99, statistics.mean(times), rss_kb, rss_after_kb, BIN))
    assert p50 < 50
