"""Security tests of the `local` runtime (issue 5): what a workspace user
could try from inside a sandbox, through the public API (POST
/api/sessions/{uuid}/exec), and each attack must fail; where it helps, a
benign control in the same command shows the probe itself works. One stack
for the module; sessions that an attack disturbs (fork bomb, OOM, full disk,
symlinks) get their own and are deleted by their test."""
import concurrent.futures
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid as uuidlib

import pytest

from harness import wait_for
from sandboxes import (cgroup_read, image_path, keyed, needs_sandboxes, sandbox_pids,
                       shared_runtime, wait_status)

pytestmark = needs_sandboxes

QUOTA_MB = 64  # ATELIER_DISK_QUOTA_MB of this module's stack
USAGE_EVERY_MS = 1000  # ATELIER_CULL_INTERVAL_MS: how often disk usage reaches the API


@pytest.fixture(scope="module")
def rt(services, tmp_path_factory):
    yield from shared_runtime(services, tmp_path_factory,
                              {"ATELIER_DISK_QUOTA_MB": str(QUOTA_MB),
                               "ATELIER_CULL_INTERVAL_MS": str(USAGE_EVERY_MS)})


@pytest.fixture(scope="module")
def alice(rt):
    return rt.new_box("alice")


@pytest.fixture(scope="module")
def bob(rt):
    return rt.new_box("bob")


def failed(res):
    return res["exit_code"] != 0 and not res["timed_out"]


def token():
    return uuidlib.uuid4().hex[:12]


def py_json(box, code, timeout_s=None):
    """Run a Python probe that prints one JSON object; return it."""
    res = box.py(code, timeout_s)
    assert res["exit_code"] == 0, res
    return json.loads(res["stdout"])


# ---- 1. host files ------------------------------------------------------------------

def test_host_files_outside_the_allowed_set_cannot_be_read(rt, alice):
    secrets = ["/etc/shadow", "/etc/gshadow", "/root", "/home", rt.stack.services.dir,
               "/var/lib/postgresql", str(rt.base), os.path.dirname(alice.volume),
               "/proc/1/root", "/proc/1/root/etc/shadow", "/etc/ssl/private", "/sys",
               "/proc/kmsg", "/proc/kcore", "/dev/loop0", "/dev/mem", "/dev/kmsg"]
    for path in secrets:
        res = alice.sh("if [ -d {p} ]; then ls -A {p}; else timeout 2 head -c 64 {p}; fi"
                       .format(p=path))
        assert failed(res) and res["stdout"] == "", "%s readable from the sandbox: %s" % (path, res)
    # the allowed set: its own passwd (not the host's), /usr, the volume
    res = alice.sh("cat /etc/passwd; ls /usr/bin/python3 /workspace/script.py")
    assert res["exit_code"] == 0, res
    assert "user:x:1000:1000" in res["stdout"]
    with open("/etc/passwd") as f:
        host_passwd = f.read()
    assert not any(line in res["stdout"] for line in host_passwd.splitlines()
                   if line.startswith("root:") or line.startswith("postgres:"))
    res = alice.sh("ls /etc")
    present = set(res["stdout"].split())
    for name in ("shadow", "gshadow", "sudoers", "ssh", "ld.so.preload", "machine-id",
                 "gitconfig", "pip.conf", "profile.d", "resolv.conf", "security", "cron.d"):
        assert name not in present, "/etc/%s visible in the sandbox" % name


def test_usr_and_etc_are_read_only(alice):
    name = "atelier-sec-" + token()
    for d in ("/usr", "/usr/bin", "/etc", "/", "/opt/atelier"):
        res = alice.sh("touch %s/%s" % (d.rstrip("/"), name))
        assert failed(res) and "Read-only file system" in res["stderr"], (d, res)
        assert not os.path.exists(os.path.join(d, name)), "created %s/%s on the host" % (d, name)
    res = alice.sh("echo ok > /workspace/%s && cat /workspace/%s && rm /workspace/%s"
                   % (name, name, name))
    assert res["exit_code"] == 0 and res["stdout"] == "ok\n", res


# ---- 2. another workspace --------------------------------------------------------------

def test_another_workspace_is_invisible_and_unwritable(alice, bob):
    marker = "marker-" + token()
    res = bob.sh("echo %s > %s && ls -la" % (marker, marker))
    assert res["exit_code"] == 0 and marker in res["stdout"], res
    assert os.path.exists(os.path.join(bob.volume, marker)), "bob's file is in his volume"

    searches = [
        "find / -xdev -name '%s*'" % marker,
        "find / \\( -path /proc -o -path /sys -o -path /usr \\) -prune -o -name '%s*' -print"
        % marker,
        "ls -la /workspace/.. /workspace /app /tmp /run/atelier | grep -F %s" % marker,
        "grep -rsF %s /workspace /app /tmp /run /dev/shm /etc /opt" % marker,
    ]
    for cmd in searches:
        res = alice.sh(cmd)
        assert marker not in res["stdout"], (cmd, res)
    guessed = os.path.join(bob.volume, marker)
    res = alice.sh("cat %s" % guessed)
    assert failed(res) and marker not in res["stdout"], res
    evil = os.path.join(bob.volume, "from-alice")
    res = alice.sh("echo x > %s" % evil)
    assert failed(res), res
    assert not os.path.exists(evil), "alice wrote into bob's volume"
    res = bob.sh("ls")
    assert "from-alice" not in res["stdout"]


# ---- 3. host processes ------------------------------------------------------------------

def host_pid_of(uuid, needle):
    """Host pid of the sandbox process whose command line holds needle."""
    for pid in sandbox_pids([uuid]):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if needle.encode() in f.read():
                    return pid
        except OSError:
            pass
    return None


def test_host_and_other_sandbox_processes_are_invisible(rt, alice, bob):
    sleeper = "600.%d" % (int(token()[:6], 16) % 1000 + 1)
    assert bob.sh("nohup sleep %s >/dev/null 2>&1 &" % sleeper)["exit_code"] == 0
    bob_pid = wait_for(lambda: host_pid_of(bob.uuid, sleeper), what="bob's sleeper")
    sm = rt.procs["session-manager"]

    res = alice.sh("ps -eo pid=,args=")
    assert res["exit_code"] == 0, res
    procs = [line.split(None, 1) for line in res["stdout"].splitlines()]
    assert procs[0][0] == "1" and procs[0][1].startswith("/opt/atelier/atelier-init"), procs
    assert len(procs) <= 4, "only init, the exec's shell and ps: %s" % procs
    assert sleeper not in res["stdout"]
    res = alice.sh("ls -d /proc/[0-9]* | wc -l")
    assert int(res["stdout"]) <= 4, res

    for pid in (sm.pid, bob_pid):
        res = alice.sh("test -e /proc/%d && echo visible; kill -9 %d" % (pid, pid))
        assert failed(res) and "visible" not in res["stdout"], (pid, res)
        assert "No such process" in res["stderr"], res
    assert sm.alive(), "the session-manager survived"
    assert os.path.exists("/proc/%d" % bob_pid), "bob's process survived"


# ---- 4. network ------------------------------------------------------------------------

NET_PROBE = r'''
import errno, json, socket
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__
def tcp(addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    def go():
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect((addr, port))
    return attempt(go)
def udp(addr, port):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    def go():
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.sendto(b"\0" * 12, (addr, port))
    return attempt(go)
def own_loopback():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=1):
            pass
def abstract():
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(ABSTRACT)
with open("/proc/net/dev") as f:
    ifaces = [l.split(":")[0].strip() for l in f.readlines()[2:]]
print(json.dumps({
    "ifaces": ifaces,
    "loopback": attempt(own_loopback),
    "tcp": {"%s:%d" % (a, p): tcp(a, p) for a, p in TARGETS},
    "udp53": {a: udp(a, 53) for a, _ in TARGETS},
    "packet": attempt(lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW).close()),
    "abstract": attempt(abstract),
}))
'''


def host_addresses():
    """The host's own global addresses (never anything beyond the host)."""
    out = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True).stdout
    return [a["local"] for i in json.loads(out or "[]") for a in i.get("addr_info", [])
            if a.get("scope") == "global"]


def listen_on(addr):
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.bind((addr, 0))
    s.listen(8)
    return s


def test_no_network_but_its_own_loopback(rt, alice):
    # listeners on the host's own addresses, so a connection that got out would succeed
    listeners = [listen_on(a) for a in host_addresses()]
    abstract = socket.socket(socket.AF_UNIX)
    name = "\0atelier-sec-" + token()
    abstract.bind(name)
    abstract.listen(1)
    try:
        targets = [("127.0.0.1", rt.stack.port)]
        targets += [s.getsockname()[:2] for s in listeners]
        for addr, port in targets:  # control: each target answers on the host
            socket.create_connection((addr, port), timeout=1).close()
        code = "TARGETS = %r\nABSTRACT = %r\n%s" % (targets, name, NET_PROBE)
        out = py_json(alice, code)
    finally:
        for s in listeners + [abstract]:
            s.close()
    assert out["ifaces"] == ["lo"], out
    assert out["loopback"] == "ok", out
    assert out["tcp"]["127.0.0.1:%d" % rt.stack.port] == "ECONNREFUSED", out
    for target, result in out["tcp"].items():
        assert result != "ok", "connected to %s from the sandbox" % target
    for addr, result in out["udp53"].items():
        if addr != "127.0.0.1":
            assert result in ("ENETUNREACH", "EHOSTUNREACH"), (addr, out)
    assert out["packet"] == "EPERM", out
    assert out["abstract"] == "ECONNREFUSED", "host abstract socket reached: %s" % out
    res = alice.sh("test -e /etc/resolv.conf && echo present; ip -o link | cut -d: -f2")
    assert res["stdout"].split() == ["lo"], res


# ---- 5. mount, ptrace, modules, keys, bpf, kexec, TIOCSTI --------------------------------

SYSCALL_PROBE = r'''
import ctypes, errno, fcntl, json, os, termios, time
libc = ctypes.CDLL(None, use_errno=True)
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno())
def ioctl(fd, req):
    try:
        fcntl.ioctl(fd, req, b"x" if req == termios.TIOCSTI else b"\0" * 8)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
sibling = os.fork()
if sibling == 0:
    time.sleep(30)
    os._exit(0)
# x86_64 numbers; arguments that would fail harmlessly if a call ever got through
out = {
    "ptrace_attach": sc(101, 16, sibling, 0, 0),
    "ptrace_traceme": sc(101, 0, 0, 0, 0),
    "process_vm_readv": sc(310, sibling, 0, 0, 0, 0, 0),
    "mount": sc(165, 0, 0, 0, 0, 0),
    "umount2": sc(166, 0, 0),
    "pivot_root": sc(155, 0, 0),
    "unshare_user": sc(272, 0x10000000),
    "setns": sc(308, -1, 0),
    "init_module": sc(175, 0, 0, 0),
    "finit_module": sc(313, -1, 0, 0),
    "delete_module": sc(176, 0, 0),
    "kexec_load": sc(246, 0, 0, 0, 0),
    "kexec_file_load": sc(320, -1, -1, 0, 0, 0),
    "bpf": sc(321, 0, 0, 0),
    "keyctl": sc(250, 0, -3, 0),
    "add_key": sc(248, 0, 0, 0, 0, 0),
    "request_key": sc(249, 0, 0, 0, 0),
    "perf_event_open": sc(298, 0, 0, -1, -1, 0),
    "syslog": sc(103, 3, 0, 0),
}
master, slave = os.openpty()
out["tiocsti_slave"] = ioctl(slave, termios.TIOCSTI)
out["tiocsti_master"] = ioctl(master, termios.TIOCSTI)
out["tiocsti_high_bits"] = sc(16, slave, 0xffffffff00000000 | termios.TIOCSTI,
                               ctypes.addressof(ctypes.c_char(b"x")))
out["control_getpid"] = sc(39)
out["control_tiocgwinsz"] = ioctl(slave, termios.TIOCGWINSZ)
os.kill(sibling, 9)
os.waitpid(sibling, 0)
with open("/proc/self/status") as f:
    out["status"] = dict(l.rstrip("\n").split(":\t", 1) for l in f if ":\t" in l)
print(json.dumps(out))
'''


def read_modules_disabled():
    """The host's switch (absent on kernels built without modules)."""
    try:
        with open("/proc/sys/kernel/modules_disabled") as f:
            return f.read()
    except FileNotFoundError:
        return None


@pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers are x86_64's")
def test_privileged_syscalls_are_refused(alice):
    modules_disabled = read_modules_disabled()
    out = py_json(alice, SYSCALL_PROBE)
    status = out.pop("status")
    assert out.pop("control_getpid") == "ok" and out.pop("control_tiocgwinsz") == "ok", out
    for call, result in out.items():
        assert result in ("EPERM", "ENOSYS"), "%s: %s (not refused by the filter)" % (call, result)
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", status
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[cap], 16) == 0, (cap, status[cap])
    assert read_modules_disabled() == modules_disabled


def test_mount_unshare_and_strace_fail(alice):
    res = alice.sh("mkdir -p /tmp/x && mount -t tmpfs x /tmp/x")
    assert failed(res), res
    res = alice.sh("unshare -rm true")
    assert failed(res) and "Operation not permitted" in res["stderr"], res
    res = alice.sh("grep -c ' /tmp/x ' /proc/self/mountinfo")
    assert res["stdout"].strip() == "0", res
    if alice.sh("command -v strace")["exit_code"] == 0:
        res = alice.sh("strace -f true")
        assert failed(res) and "Operation not permitted" in res["stderr"], res


# ---- 6. symlinks placed in the volume ----------------------------------------------------

def backdate_atime(path):
    """atime before mtime: the next read of path moves atime (relatime too)."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_mtime_ns - 10**10, st.st_mtime_ns))


def host_canary():
    """A world-writable dir with a world-writable secret file: a write that
    followed a link out would succeed (so only confinement can stop it), and
    a read would move its atime. Returns (dir, file, content)."""
    d = tempfile.mkdtemp(prefix="atelier-canary-")
    os.chmod(d, 0o777)
    path = os.path.join(d, "canary.txt")
    content = "canary-%s\n" % token()
    with open(path, "w") as f:
        f.write(content)
    os.chmod(path, 0o666)
    backdate_atime(path)
    return d, path, content


def snapshot(d):
    """Names, inode, mode, size, mtime and atime of everything under d (stat
    only: reading the files here would move their atime)."""
    snap = {}
    for root, dirs, files in os.walk(d):
        for n in dirs + files:
            st = os.lstat(os.path.join(root, n))
            snap[os.path.join(root, n)] = (st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns,
                                           st.st_atime_ns)
    return snap


def api_file(box, path):
    r = box.stack.get("/api/workspace/%s/files/%s" % (box.uuid, path), headers=box.h)
    return r.status_code, (r.json() if r.status_code == 200 else r.text)


def sleep_wake(box):
    """As the service would: the wake's `load` job extracts the files again."""
    for action, status in (("sleep", "sleeping"), ("wake", "ready")):
        r = box.stack.post("/session/%s/%s" % (box.uuid, action),
                           headers=box.stack.admin_headers())
        assert r.status_code in (200, 202), r.text  # 202: queued, 200: done (seed bodies)
        wait_status(box.stack, box.h, box.uuid, status)


def test_symlinks_in_the_volume_are_never_followed_out(rt, alice):
    box = rt.new_box("links", owner=alice)
    cdir, canary, secret = host_canary()
    try:
        before = snapshot(cdir)
        r = box.stack.request("PUT", "/api/workspace/%s/files/sub/data.txt" % box.uuid,
                              json={"content": "data\n"}, headers=box.h)
        assert r.status_code == 200, r.text
        _, script = api_file(box, "script.py")
        plant = ("ln -sfn {c} script.py && rm -rf sub && ln -s {d} sub && ln -s / root && "
                 "ln -s {d} cdir && ln -s {c} leak.txt && ls -l").format(c=canary, d=cdir)
        res = box.sh(plant)
        assert res["exit_code"] == 0 and res["stdout"].count(" -> ") == 5, res

        sleep_wake(box)  # the wake's load re-extracts script.py and sub/data.txt
        assert snapshot(cdir) == before, "a host file read or changed through a link"
        res = box.sh("cat script.py sub/data.txt; test -L script.py || echo regular")
        assert res["stdout"] == script["content"] + "data\nregular\n", res
        code, now = api_file(box, "script.py")
        assert code == 200 and now["content"] == script["content"], now
        listing = box.stack.get("/api/workspace/%s/files" % box.uuid, headers=box.h).json()
        for item in listing:
            code, body = api_file(box, item["path"])
            assert secret not in json.dumps(body), "%s serves the host canary" % item["path"]

        rt.delete(box)  # the volume goes with its links: nothing followed out
        assert snapshot(cdir) == before, "a host file read or changed by the delete"
        with open(canary) as f:
            assert f.read() == secret
    finally:
        shutil.rmtree(cdir)


# ---- 7. fork bomb -----------------------------------------------------------------------

class Sampler:
    """Reads a number from a cgroup file every few ms in a thread; keeps the peak."""

    def __init__(self, read):
        self.read, self.peak, self.samples = read, 0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.read())
                self.samples += 1
            except (OSError, ValueError):
                pass
            time.sleep(0.005)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


BOMB = "timeout -s KILL 6 bash -c ':(){ :|:& };:; sleep 30'; echo done"


def test_fork_bomb_is_held_by_the_pids_limit(rt, alice):
    box = rt.new_box("bomb", owner=alice)
    pids_max = int(cgroup_read(box.uuid, "pids", "pids.max"))

    def limit_hits():
        return keyed(cgroup_read(box.uuid, "pids", "pids.events"), "max")
    hits = limit_hits()
    with Sampler(lambda: int(cgroup_read(box.uuid, "pids", "pids.current"))) as pids, \
            concurrent.futures.ThreadPoolExecutor(1) as pool:
        bomb = pool.submit(box.sh, BOMB, 20)
        wait_for(lambda: limit_hits() > hits, timeout=10, what="the bomb reaching pids.max")
        # meanwhile the host and the other sessions carry on
        assert rt.stack.get("/health").status_code == 200
        res = alice.sh("echo ok")
        assert res["exit_code"] == 0 and res["stdout"] == "ok\n", res
        assert not bomb.done(), "checked while the bomb was still running"
        res = bomb.result(timeout=40)
    print("\npids.max %d, peak %d over %d samples, fork refusals %d"
          % (pids_max, pids.peak, pids.samples, limit_hits() - hits))
    assert res["stdout"] == "done\n", res
    assert pids.peak <= pids_max
    wait_for(lambda: box.sh("echo alive")["stdout"] == "alive\n", timeout=20,
             what="exec after the bomb")
    assert box.status()["status"] == "ready"
    assert rt.procs["session-manager"].alive()
    rt.delete(box)


# ---- 8. memory --------------------------------------------------------------------------

def memory_limit(uuid):
    raw = cgroup_read(uuid, "memory", "memory.limit_in_bytes", "memory.max").strip()
    return int(raw)


def oom_kills(uuid):
    return keyed(cgroup_read(uuid, "memory", "memory.oom_control", "memory.events"), "oom_kill")


@pytest.fixture(scope="module")
def oom(rt, alice):
    """One session that allocated twice its memory limit: (box, exec result)."""
    box = rt.new_box("oom", owner=alice)
    limit = memory_limit(box.uuid)
    assert limit == 512 << 20, "the small tier of POST /api/sessions/: %d" % limit
    res = box.sh("python3 -c \"b = b'\\x01' * %d; print(len(b))\"" % (2 * limit), 30)
    return box, res


def test_allocating_past_the_memory_limit_is_killed_inside(rt, oom):
    box, res = oom
    killed = res["exit_code"] == 137 or res.get("signal") == signal.SIGKILL
    assert killed and not res["timed_out"], res
    assert res["stdout"] == "", "the allocation never completed"
    assert oom_kills(box.uuid) >= 1
    assert rt.procs["session-manager"].alive() and rt.stack.get("/health").status_code == 200
    after = box.sh("echo alive")
    assert after["exit_code"] == 0 and after["stdout"] == "alive\n", after
    assert box.status()["status"] == "ready"


def test_an_oom_kill_is_reported(oom):
    box, res = oom
    assert res.get("oom_killed") is True, res
    assert box.status().get("oom_kills", 0) >= 1, box.status()


# ---- 9. disk ----------------------------------------------------------------------------

def image_of(rt, box):
    return image_path(rt.stack, rt.base, box.workspace_id)


@pytest.fixture(scope="module")
def disk(rt, alice):
    return rt.new_box("disk", owner=alice)


def test_filling_the_disk_stops_at_the_quota(rt, disk):
    img = image_of(rt, disk)
    assert os.path.getsize(img) == QUOTA_MB << 20, "volume image of %d bytes" % \
        os.path.getsize(img)
    res = disk.sh("dd if=/dev/zero of=big bs=1M count=%d" % (QUOTA_MB + 36), 60)
    assert failed(res) and "No space left on device" in res["stderr"], res
    allocated = os.stat(img).st_blocks * 512
    print("\nimage allocated after the fill: %.1f MiB" % (allocated / 2**20))
    assert allocated <= (QUOTA_MB + 1) << 20
    res = disk.sh("rm -f big && echo fits > small && cat small")
    assert res["stdout"] == "fits\n", res


def test_a_save_to_a_full_volume_is_507(rt, disk):
    assert os.path.getsize(image_of(rt, disk)) == QUOTA_MB << 20
    res = disk.sh("dd if=/dev/zero of=big bs=1M count=%d" % (QUOTA_MB + 36), 60)
    assert "No space left on device" in res["stderr"], res
    url = "/api/workspace/%s/files/after-full.txt" % disk.uuid

    def refused():  # once the manager has seen the volume full (every USAGE_EVERY_MS)
        r = disk.stack.request("PUT", url, json={"content": "x" * 4096}, headers=disk.h)
        return [r] if r.status_code == 507 else None  # (a 507 Response is falsy)
    try:
        r, = wait_for(refused, timeout=5 * USAGE_EVERY_MS / 1000,
                      what="a save refused with 507")
        assert r.headers["content-type"].startswith("application/json") and r.json()["detail"]
    finally:
        disk.sh("rm -f big")
