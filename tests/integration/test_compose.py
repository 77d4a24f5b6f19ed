"""The docker-compose stack comes up: every role alive, sync-worker scaled to 3.

Opt-in (minutes of work, root, a Docker engine): runs only with
ATELIER_TEST_DOCKER=1, and skips with the reason when dockerd, docker,
docker-compose or debootstrap is missing (deploy/local/install-deps --docker
installs them) or when not root. It installs nothing itself.

What it does (docs/docker.md tells the same):
  1. starts a private dockerd with its own --data-root, --exec-root, socket,
     --pidfile and --cgroup-parent under a temp dir, without docker0, iptables
     rules or ip_forward changes (the host's network setup is left as it is);
  2. makes the base image debian:bookworm-slim with
     `debootstrap --variant=minbase bookworm` + `docker import`, keeping the
     rootfs tarball in $ATELIER_TEST_CACHE (default /var/cache/atelier-test)
     so that later runs skip debootstrap;
  3. `docker-compose -p <unique> up -d --build --scale sync-worker=3` with the
     gateway published on a free 127.0.0.1 port; the only addition to
     docker-compose.yml is an override file giving the image builds the host
     network (this dockerd has no NAT for its bridges; apt needs the mirror);
  4. polls GET /api/health/detailed until every role is alive and
     sync-worker has exactly 3 live instances, checks that ?probe=1 gets a
     ping through every worker queue and that a bubblewrap sandbox starts in
     the session-manager container;
  5. `docker-compose down -v`, stops dockerd by its PID and removes all it
     made (mounts, cgroups, state dirs, the temp dir).

Environment: ATELIER_TEST_DOCKER=1 (required), ATELIER_TEST_CACHE,
ATELIER_DEBIAN_MIRROR (default http://deb.debian.org/debian),
ATELIER_TEST_DOCKER_STORAGE (force a storage driver; default: dockerd's
choice, then vfs if dockerd will not start with it),
ATELIER_TEST_KEEP=1 (leave the stack and dockerd running for a look; prints
how to reach them and how to clean up).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
CACHE = Path(os.environ.get("ATELIER_TEST_CACHE", "/var/cache/atelier-test"))
BASE_TAR = CACHE / "debian-bookworm-minbase-v1.tar"
BASE_IMAGE = "debian:bookworm-slim"
MIRROR = os.environ.get("ATELIER_DEBIAN_MIRROR", "http://deb.debian.org/debian")
ROLES = ("gateway", "session-manager", "sync-worker", "backup-worker")
SYNC_WORKERS = 3
SERVICES = ("redis", "postgres") + ROLES

# Debian's own programs first: /usr/local/bin may hold a newer docker client
# without a daemon (and without buildx) that docker-compose would otherwise
# call for its builds.
SEARCH_PATH = os.pathsep.join(
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin", os.environ.get("PATH", "")])

STARTUP_TIMEOUT = 60          # dockerd answering on its socket
DEBOOTSTRAP_TIMEOUT = 1200
UP_TIMEOUT = 2400             # image builds included
HEALTH_TIMEOUT = 300          # after `up` returned
DOWN_TIMEOUT = 300


def _tool(name):
    return shutil.which(name, path=SEARCH_PATH)


def _skip_reason():
    if os.environ.get("ATELIER_TEST_DOCKER") != "1":
        return ("docker-compose stack test is opt-in (takes minutes): "
                "set ATELIER_TEST_DOCKER=1 to run it")
    missing = [t for t in ("dockerd", "docker", "docker-compose", "debootstrap")
               if not _tool(t)]
    if missing:
        return ("missing %s: install with deploy/local/install-deps --docker"
                % ", ".join(missing))
    if os.geteuid() != 0:
        return "needs root (dockerd and debootstrap)"
    return None


pytestmark = pytest.mark.skipif(_skip_reason() is not None,
                                reason=_skip_reason() or "")


def _log(msg):
    sys.stderr.write("[test_compose %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def _tail(path, n=60):
    try:
        lines = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return "(no %s)" % path
    return "\n".join(lines[-n:])


def _run(argv, env, timeout, log=None, check=True):
    """Run argv; output to the file `log` (appended) or captured."""
    t0 = time.monotonic()
    if log:
        with open(log, "ab") as f:
            f.write(("\n$ %s\n" % " ".join(map(str, argv))).encode())
            f.flush()
            p = subprocess.run(argv, env=env, stdout=f, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=timeout)
        out = None
    else:
        p = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, timeout=timeout)
        out = p.stdout.decode(errors="replace")
    _log("%s: exit %d in %.1f s" % (" ".join(map(str, argv[:4])), p.returncode,
                                    time.monotonic() - t0))
    if check and p.returncode != 0:
        detail = _tail(log) if log else out
        raise AssertionError("%s failed (exit %d):\n%s" % (" ".join(map(str, argv)),
                                                           p.returncode, detail))
    return p.returncode, out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- private dockerd ------------------------------------------------------------


def _mounts_under(prefix):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == prefix or mp.startswith(prefix + "/"):
                out.append(mp)
    return out


def _pids_mentioning(text):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(d))
        except OSError:
            pass
    return pids


def _wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


class Dockerd:
    """A dockerd of our own, all its state under one temp dir."""

    # Made by dockerd/containerd outside --data-root/--exec-root; removed at
    # stop only when they were not there before we started.
    GLOBAL_LEFTOVERS = ("/run/docker", "/run/containerd", "/etc/docker/key.json")

    def __init__(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="atelier-dk-", dir="/tmp"))
        self.sock = self.tmp / "docker.sock"
        self.pidfile = self.tmp / "docker.pid"
        self.log = self.tmp / "dockerd.log"
        self.cgroup_parent = "atelier-test-%s" % self.tmp.name.rsplit("-", 1)[-1]
        self.proc = None
        self.preexisting = {p: os.path.exists(p) for p in self.GLOBAL_LEFTOVERS}
        self.env = dict(os.environ)
        self.env.update({
            "PATH": SEARCH_PATH,
            "DOCKER_HOST": "unix://%s" % self.sock,
            # docker-compose builds with the docker CLI and BuildKit, which
            # reads deploy/docker/Dockerfile.dockerignore (the classic builder
            # would tar the whole repository, build dirs included).
            "DOCKER_BUILDKIT": "1",
            "COMPOSE_DOCKER_CLI_BUILD": "1",
            "DOCKER_CONFIG": str(self.tmp / "client-config"),
        })
        self.docker = _tool("docker")

    def start(self):
        forced = os.environ.get("ATELIER_TEST_DOCKER_STORAGE")
        drivers = [forced] if forced else [None, "vfs"]
        errors = []
        for driver in drivers:
            err = self._start_with(driver)
            if err is None:
                return
            errors.append("storage driver %s: %s" % (driver or "(dockerd's choice)", err))
            self._stop_process()
        raise AssertionError("dockerd would not start:\n" + "\n\n".join(errors))

    def _start_with(self, driver):
        argv = [_tool("dockerd"),
                "--data-root", str(self.tmp / "data"),
                "--exec-root", str(self.tmp / "exec"),
                "-H", "unix://%s" % self.sock,
                "--pidfile", str(self.pidfile),
                "--cgroup-parent", "/" + self.cgroup_parent,
                # Leave the host's network alone: no docker0, no iptables
                # rules, no ip_forward. Compose networks are bridges of their
                # own; published ports go through docker-proxy.
                "--bridge", "none",
                "--iptables=false",
                "--ip-forward=false",
                "--ip-masq=false"]
        if driver:
            argv += ["--storage-driver", driver]
        _log("starting %s" % " ".join(argv))
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env,
                                     start_new_session=True)
        logf.close()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return "exited with %d:\n%s" % (self.proc.returncode, _tail(self.log, 30))
            r = subprocess.run([self.docker, "version", "--format", "{{.Server.Version}}"],
                               env=self.env, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                info = subprocess.run(
                    [self.docker, "info", "--format",
                     "{{.Driver}} cgroup={{.CgroupDriver}} v{{.CgroupVersion}}"],
                    env=self.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                _log("dockerd %s up (pid %d): %s" % (r.stdout.decode().strip(), self.proc.pid,
                                                     info.stdout.decode().strip()))
                return None
            time.sleep(0.5)
        return "no answer on %s within %d s:\n%s" % (self.sock, STARTUP_TIMEOUT,
                                                    _tail(self.log, 30))

    def _stop_process(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                _log("dockerd did not stop in 60 s: SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None
        # containerd and shims it started, if any outlived it: they name our
        # temp dir on their command lines.
        for pid in _pids_mentioning(str(self.tmp)):
            _log("killing leftover pid %d" % pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            _wait_gone(pid, 10)

    def stop_and_clean(self):
        self._stop_process()
        for mp in sorted(_mounts_under(str(self.tmp)), key=len, reverse=True):
            if subprocess.run(["umount", mp], stderr=subprocess.DEVNULL).returncode != 0:
                subprocess.run(["umount", "-l", mp])
        for base in Path("/sys/fs/cgroup").glob("*/" + self.cgroup_parent):
            for d in sorted((p for p in base.rglob("*") if p.is_dir()),
                            key=lambda p: len(p.parts), reverse=True) + [base]:
                try:
                    d.rmdir()
                except OSError:
                    pass
        for path, existed in self.preexisting.items():
            if not existed and os.path.exists(path):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
        shutil.rmtree(self.tmp, ignore_errors=True)
        left = [m for m in _mounts_under(str(self.tmp))]
        assert not left, "mounts left behind: %s" % left


# ---- base image ---------------------------------------------------------------


def _make_base_tarball(workdir):
    """debootstrap a minbase bookworm and tar it into the cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    rootfs = workdir / "rootfs"
    log = workdir / "debootstrap.log"
    try:
        _run([_tool("debootstrap"), "--variant=minbase", "bookworm", str(rootfs), MIRROR],
             env=dict(os.environ, PATH=SEARCH_PATH), timeout=DEBOOTSTRAP_TIMEOUT, log=log)
        # As Debian's own slim images: no service starts in package scripts,
        # no docs or man pages, no apt cache.
        policy = rootfs / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        (rootfs / "etc/dpkg/dpkg.cfg.d/atelier-slim").write_text(
            "path-exclude /usr/share/doc/*\n"
            "path-include /usr/share/doc/*/copyright\n"
            "path-exclude /usr/share/man/*\n"
            "path-exclude /usr/share/info/*\n")
        (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(
            'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
            '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
            'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";\n')
        for sub in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / sub).glob("*"):
                if p.is_file():
                    p.unlink()
        tmp_tar = BASE_TAR.with_suffix(".tar.part-%d" % os.getpid())
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(tmp_tar), "."],
             env=None, timeout=600)
        os.replace(tmp_tar, BASE_TAR)
    finally:
        for mp in sorted(_mounts_under(str(rootfs)), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp])
        shutil.rmtree(rootfs, ignore_errors=True)


def _import_base(dockerd):
    if not BASE_TAR.exists():
        _log("no cached base image: debootstrap into %s" % BASE_TAR)
        _make_base_tarball(dockerd.tmp)
    else:
        _log("cached base image %s" % BASE_TAR)
    _run([dockerd.docker, "import", "--change", 'CMD ["bash"]', str(BASE_TAR), BASE_IMAGE],
         env=dockerd.env, timeout=600)


# ---- the test -----------------------------------------------------------------


def _get_json(url, timeout=5):
    req = urllib.request.Request(url, headers={"X-API-Key": os.environ.get("API_KEY", "")})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _post_json(url, body, headers=None, timeout=10):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers=dict({"Content-Type": "application/json"},
                                              **(headers or {})))
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _summary(h):
    return {
        "status": h.get("status"),
        "checks": {k: v.get("ok") for k, v in (h.get("checks") or {}).items()},
        "roles": {k: {"alive": v.get("alive"), "status": v.get("status")}
                  for k, v in (h.get("roles") or {}).items()},
    }


def _stack_ready(h):
    roles = h.get("roles") or {}
    for role in ROLES:
        r = roles.get(role)
        if not r:
            return False
        want = SYNC_WORKERS if role == "sync-worker" else 1
        if r.get("alive") != want:
            return False
        if "status" in r and r["status"] != "healthy":
            return False
    return True


@pytest.fixture(scope="module")
def dockerd():
    d = Dockerd()
    keep = os.environ.get("ATELIER_TEST_KEEP") == "1"
    try:
        d.start()
        yield d
    finally:
        if keep:
            _log("ATELIER_TEST_KEEP=1: dockerd left running: DOCKER_HOST=%s, pid %s, "
                 "state in %s" % (d.env["DOCKER_HOST"], d.proc and d.proc.pid, d.tmp))
        else:
            d.stop_and_clean()


def test_compose_stack_scales_and_is_healthy(dockerd):
    _import_base(dockerd)
    project = "ateliertest%s" % uuid.uuid4().hex[:8]
    port = _free_port()
    env = dict(dockerd.env)
    env.update({
        "ATELIER_HTTP_PORT": str(port),
        "ATELIER_PUBLISH_HOST": "127.0.0.1",
        "COMPOSE_PROJECT_NAME": project,
    })
    override = dockerd.tmp / "docker-compose.test.yml"
    override.write_text('version: "2.4"\nservices:\n' + "".join(
        "  %s:\n    build:\n      network: host\n" % s for s in SERVICES))
    compose = [_tool("docker-compose"), "-p", project,
               "-f", str(COMPOSE_FILE), "-f", str(override)]
    log = dockerd.tmp / "compose.log"
    keep = os.environ.get("ATELIER_TEST_KEEP") == "1"
    url = "http://127.0.0.1:%d/api/health/detailed" % port
    try:
        _run(compose + ["up", "-d", "--build", "--scale", "sync-worker=%d" % SYNC_WORKERS],
             env=env, timeout=UP_TIMEOUT, log=log)
        t0 = time.monotonic()
        last, err = None, None
        while time.monotonic() - t0 < HEALTH_TIMEOUT:
            try:
                last = _get_json(url)
                err = None
                if _stack_ready(last):
                    break
            except (OSError, ValueError, urllib.error.URLError) as e:
                err = e
            time.sleep(2)
        else:
            _run(compose + ["ps"], env=env, timeout=60, log=log, check=False)
            _run(compose + ["logs", "--no-color", "--tail", "40"], env=env, timeout=60,
                 log=log, check=False)
            raise AssertionError(
                "stack not healthy within %d s; last answer: %s; last error: %s\n%s"
                % (HEALTH_TIMEOUT, json.dumps(_summary(last)) if last else None, err,
                   _tail(log, 120)))
        _log("all roles alive after %.1f s: %s"
             % (time.monotonic() - t0, json.dumps(_summary(last))))

        # A ping job through each worker role's queue and back.
        probed = _get_json(url + "?probe=1", timeout=30)
        probe = probed.get("probe") or {}
        for role in ("session-manager", "sync-worker", "backup-worker"):
            assert probe.get(role, {}).get("ok"), "probe %s: %s" % (role, probe.get(role))

        # The record API works in the containers: a user registers, logs in,
        # creates a session and saves a file; the API page is served.
        base = "http://127.0.0.1:%d" % port
        email = "compose-%s@example.com" % uuid.uuid4().hex[:6]
        creds = {"email": email, "password": "compose-password"}
        _post_json(base + "/api/users/register", creds)
        token = _post_json(base + "/api/users/login", creds)["access_token"]
        auth = {"Authorization": "Bearer " + token}
        sess = _post_json(base + "/api/sessions", {"name": "compose"}, auth)
        assert sess["status"] == "initializing"
        saved = _post_json(base + "/api/workspace/%s/file/hello.py" % sess["uuid"],
                           {"content": "print('hi')\n"}, auth)
        assert saved["success"] and saved["size"] == 12
        assert "/api/sessions" in _get_json(base + "/openapi.json")["paths"]
        with urllib.request.urlopen(base + "/docs/redoc.standalone.js", timeout=10) as r:
            assert r.status == 200 and len(r.read()) > 100000
        # the web IDE's bundle, when `make deps` built it on the host, is in the image
        if (REPO / "gateway" / "web" / "dist" / "index.html").exists():
            with urllib.request.urlopen(base + "/w/" + sess["uuid"], timeout=10) as r:
                assert r.status == 200 and "text/html" in r.headers["content-type"]
                assert r.read() == (REPO / "gateway" / "web" / "dist" / "index.html").read_bytes()

        # The session-manager container can make a bubblewrap sandbox (the
        # capabilities docker-compose.yml grants it are enough).
        rc, out = _run(compose + [
            "exec", "-T", "session-manager", "bwrap", "--unshare-all", "--die-with-parent",
            "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
            "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
            "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
            "--", "/bin/sh", "-c", "echo sandbox-pid=$$"], env=env, timeout=60, check=False)
        # The line printed from inside the new pid namespace is the proof.
        # rc 137 happens now and then on this host: bwrap's monitor sometimes
        # reports the namespace's SIGKILL teardown after sh has exited 0.
        assert rc in (0, 137) and "sandbox-pid=2" in out, "bwrap in session-manager: %s" % out

        # Every container healthy by its own healthcheck too.
        rc, out = _run([dockerd.docker, "ps", "--filter", "label=com.docker.compose.project=%s"
                        % project, "--format", "{{.Names}} {{.Status}}"],
                       env=env, timeout=60)
        names = out.strip().splitlines()
        assert len(names) == 2 + 3 + SYNC_WORKERS, out
        t1 = time.monotonic()
        while any("(healthy)" not in n for n in names) and time.monotonic() - t1 < 90:
            time.sleep(3)
            _, out = _run([dockerd.docker, "ps", "--filter",
                           "label=com.docker.compose.project=%s" % project,
                           "--format", "{{.Names}} {{.Status}}"], env=env, timeout=60)
            names = out.strip().splitlines()
        assert all("(healthy)" in n for n in names), out
        print(json.dumps(_summary(last), indent=1))
    finally:
        if keep:
            _log("ATELIER_TEST_KEEP=1: stack left up on port %d; to clean up:\n"
                 "  DOCKER_HOST=%s docker-compose -p %s -f %s down -v\n"
                 "  kill $(cat %s); umount what is left under %s; rmdir the cgroups "
                 "/sys/fs/cgroup/*/%s; rm -rf %s"
                 % (port, env["DOCKER_HOST"], project, COMPOSE_FILE, dockerd.pidfile,
                    dockerd.tmp, dockerd.cgroup_parent, dockerd.tmp))
        else:
            _run(compose + ["down", "-v", "--remove-orphans", "--timeout", "20"],
                 env=env, timeout=DOWN_TIMEOUT, log=log, check=False)
