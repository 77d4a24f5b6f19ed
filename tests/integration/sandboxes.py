"""Helpers for tests that need real sandboxes (the `local` runtime driver:
bwrap, cgroups, loop-mounted volumes): the `runtime` fixture, a module-scoped
stack for suites that share sessions, and the calls a user makes to get a
ready session and run commands in it."""
import glob
import os
import pathlib
import shutil
import tempfile

import pytest

from harness import Stack, cgroup_dirs, cleanup_sandboxes, mounts_under, wait_for

ROLES = ("gateway", "session-manager", "sync-worker")

needs_sandboxes = [
    pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root (cgroups, loop mounts)"),
    pytest.mark.skipif(not os.access("/usr/bin/bwrap", os.X_OK), reason="bubblewrap missing"),
]


def status_of(stack, h, uuid):
    r = stack.get("/api/sessions/%s" % uuid, headers=h)
    assert r.status_code == 200, r.text
    return r.json()


def wait_status(stack, h, uuid, want, timeout=30.0):
    def check():
        s = status_of(stack, h, uuid)
        assert s["status"] != "error", "session failed: %s" % s.get("status_message")
        return s if s["status"] == want else None
    return wait_for(check, timeout=timeout, interval=0.02, what="status %s" % want)


def create_ready(stack, headers, name="sandbox"):
    """POST /api/sessions/ as the user of headers, then wait for `ready`."""
    r = stack.post("/api/sessions/", json={"name": name}, headers=headers)
    assert r.status_code == 201, r.text
    uuid = r.json()["uuid"]
    wait_status(stack, headers, uuid, "ready")
    return uuid


def exec_api(stack, headers, uuid, command, timeout_s=None):
    """POST /api/sessions/{uuid}/exec: the command's result
    {exit_code, stdout, stderr, duration_ms, timed_out, ...}."""
    body = {"command": command}
    if timeout_s:
        body["timeout_s"] = timeout_s
    r = stack.post("/api/sessions/%s/exec" % uuid, json=body, headers=headers,
                   timeout=(timeout_s or 30) + 20)
    assert r.status_code == 200, "exec %r: %d %s" % (command, r.status_code, r.text)
    return r.json()


def delete_session(stack, headers, uuid, timeout=30.0):
    """DELETE /api/sessions/{uuid} and wait until its row says terminated."""
    r = stack.request("DELETE", "/api/sessions/%s" % uuid, headers=headers)
    assert r.status_code == 202, r.text
    wait_for(lambda: stack.query("SELECT status FROM code_sessions WHERE uuid = %s",
                                 uuid)[0][0] == "terminated", timeout=timeout,
             what="session %s terminated" % uuid)


def sandbox_pids(uuids):
    """Host pids of processes in the cgroup of any of these sessions (scanned
    from /proc, so a process that left the group's files is still found)."""
    found = []
    for path in glob.glob("/proc/[0-9]*/cgroup"):
        try:
            with open(path) as f:
                groups = f.read()
        except OSError:
            continue
        if any("/atelier/%s" % u in groups for u in uuids):
            found.append(int(path.split("/")[2]))
    return found


def leftovers(uuids, paths):
    """What the sandboxes of these sessions left on the host: cgroups,
    mounts under any of paths, processes. Empty when everything was cleaned."""
    left = [d for u in uuids for d in cgroup_dirs(u)]
    left += ["mount %s" % m for p in paths for m in mounts_under(str(p))]
    return left + ["pid %d" % p for p in sandbox_pids(uuids)]


def workspace_base():
    # outside pytest's 0700 tmp dirs: the sandbox user (65534 on the host)
    # must reach its volume through every folder above it
    base = pathlib.Path(tempfile.mkdtemp(prefix="atelier-rt-"))
    os.chmod(base, 0o755)
    return base


def remove_base(base):
    if not mounts_under(str(base)):
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def runtime(stack):
    """gateway, session-manager and sync-worker on a fresh volume base;
    yields (base, run_base, uuids, session-manager); sessions whose uuid the
    test appends to uuids are cleaned up whatever happened."""
    base = workspace_base()
    env = {"WORKSPACE_BASE_PATH": str(base)}
    stack.start("gateway", env=env)
    sm = stack.start("session-manager", env=env)
    stack.start("sync-worker", env=env)
    uuids = []
    run_base = os.path.join(stack.services.dir, "run", "sandboxes")
    yield base, run_base, uuids, sm
    stack.stop(sm)
    cleanup_sandboxes(uuids, [str(base)], run_base)
    remove_base(base)


def volume_name(stack, workspace_id):
    """The workspace's volume, relative to WORKSPACE_BASE_PATH (the
    session-manager names it with the same SQL function)."""
    return stack.query("SELECT ws_volume_name(%s)", workspace_id)[0][0]


def volume_dir(stack, base, workspace_id):
    return os.path.join(str(base), volume_name(stack, workspace_id))


def image_path(stack, base, workspace_id):
    return os.path.join(str(base), ".images", volume_name(stack, workspace_id) + ".img")


class Box:
    """A ready session, its user, and where its volume is on the host."""

    def __init__(self, stack, user, headers, uuid, workspace_id, base):
        self.stack, self.user, self.h, self.uuid = stack, user, headers, uuid
        self.workspace_id = workspace_id
        self.volume = volume_dir(stack, base, workspace_id)

    def sh(self, command, timeout_s=None):
        return exec_api(self.stack, self.h, self.uuid, command, timeout_s)

    def py(self, code, timeout_s=None):
        """Run a Python program inside (through a quoted here-document)."""
        return self.sh("python3 - <<'ATELIER_PY'\n%s\nATELIER_PY" % code, timeout_s)

    def status(self):
        return status_of(self.stack, self.h, self.uuid)


class SharedRuntime:
    """One stack for a whole test module: its roles run with env on a fresh
    volume base; sessions made through new_box are deleted through the API
    at the end, and the end checks that nothing of them is left."""

    def __init__(self, services, tmp, env):
        self.base = workspace_base()
        self.env = dict(env, WORKSPACE_BASE_PATH=str(self.base))
        self.stack = Stack(services, tmp)
        self.boxes = []
        try:
            self.procs = {role: self.stack.start(role, env=self.env) for role in ROLES}
        except BaseException:
            self.close()
            raise

    def new_box(self, name="sandbox", owner=None):
        """A ready session (with its own workspace) of a new user, or of the
        owner of another box (logins are rate-limited per client)."""
        user, h = (owner.user, owner.h) if owner else self.stack.new_user()
        uuid = create_ready(self.stack, h, name)
        ws = status_of(self.stack, h, uuid)["workspace_id"]
        box = Box(self.stack, user, h, uuid, ws, self.base)
        self.boxes.append(box)
        return box

    def delete(self, box):
        """Delete the box's session; nothing of its sandbox may remain."""
        delete_session(self.stack, box.h, box.uuid)
        wait_for(lambda: not leftovers([box.uuid], [box.volume]), timeout=10,
                 what="%s cleaned" % box.uuid)

    def close(self):
        """Delete what is still live, then list what was left behind."""
        problems = []
        for box in self.boxes:
            if self.stack.query("SELECT status FROM code_sessions WHERE uuid = %s",
                                box.uuid)[0][0] != "terminated":
                try:
                    delete_session(self.stack, box.h, box.uuid)
                except AssertionError as e:
                    problems.append(str(e))
        uuids = [b.uuid for b in self.boxes]
        try:
            wait_for(lambda: not leftovers(uuids, [self.base]), timeout=10, what="no leftovers")
        except AssertionError:
            problems += ["left behind: %s" % x for x in leftovers(uuids, [self.base])]
        problems += self.stack.close()
        cleanup_sandboxes(uuids, [str(self.base)],
                          os.path.join(self.stack.services.dir, "run", "sandboxes"))
        remove_base(self.base)
        return problems


def shared_runtime(services, tmp_path_factory, env=None):
    """Generator for a module-scoped fixture: yields a SharedRuntime and
    fails the module's teardown if anything was left behind."""
    rt = SharedRuntime(services, tmp_path_factory.mktemp("shared"), env or {})
    try:
        yield rt
    finally:
        problems = rt.close()
    assert not problems, "\n".join(problems)


def cgroup_file(uuid, controller, v1_name, v2_name=None):
    """Path of a control file of the session's group: cgroup v1 (per
    controller) where the host has it, else v2."""
    v1 = "/sys/fs/cgroup/%s/atelier/%s/%s" % (controller, uuid, v1_name)
    if os.path.isdir("/sys/fs/cgroup/%s" % controller):
        return v1
    return "/sys/fs/cgroup/atelier/%s/%s" % (uuid, v2_name or v1_name)


def cgroup_read(uuid, controller, v1_name, v2_name=None):
    with open(cgroup_file(uuid, controller, v1_name, v2_name)) as f:
        return f.read()


def keyed(text, key):
    """The value of `key N` in a keyed control file (pids.events, memory.events)."""
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            return int(v)
    return 0
