"""The session-manager's duties beside the jobs, on real sandboxes: idle
culling, re-attaching after kill -9 (10 sandboxes), orphans and vanished
sandboxes, several managers sharing sessions by lease, and 20 sleep/wake
cycles that keep every file."""
import os
import re
import signal
import threading
import time

import pytest

from harness import cgroup_dirs, cleanup_sandboxes, mounts_under, wait_for
from sandboxes import (create_ready, exec_api, needs_sandboxes, remove_base, sandbox_pids,
                       status_of, volume_dir, wait_status, workspace_base)

pytestmark = needs_sandboxes

FAST_LOOK = {"ATELIER_CULL_INTERVAL_MS": "300"}


@pytest.fixture
def rt(stack):
    """A volume base and a way to start roles on it; everything the test's
    sessions left is removed at the end."""
    class Runtime:
        base = workspace_base()
        uuids = []
        run_base = os.path.join(stack.services.dir, "run", "sandboxes")

        def start(self, role, **env):
            return stack.start(role, env=dict(env, WORKSPACE_BASE_PATH=str(self.base)))

        def session(self, h, name="ops"):
            uuid = create_ready(stack, h, name)
            self.uuids.append(uuid)
            return uuid

    r = Runtime()
    yield r
    for p in stack.procs:
        if p.role == "session-manager" and p.alive():
            stack.stop(p)
    cleanup_sandboxes(r.uuids, [str(r.base)], r.run_base)
    remove_base(r.base)


def row(stack, uuid, *cols):
    return stack.query("SELECT %s FROM code_sessions WHERE uuid = %%s" % ", ".join(cols), uuid)[0]


def test_idle_sessions_sleep_then_go_busy_ones_stay(stack, rt):
    rt.start("gateway")
    rt.start("sync-worker")
    rt.start("session-manager", ATELIER_IDLE_SLEEP_S="2", ATELIER_SLEEP_DELETE_S="2", **FAST_LOOK)
    user, h = stack.new_user()
    idle = rt.session(h, "idle")
    busy = rt.session(h, "busy")
    # a background job burning CPU is activity; an idle shell is not
    exec_api(stack, h, busy, "nohup python3 -c 'while True: pass' >/dev/null 2>&1 &")

    wait_for(lambda: row(stack, idle, "status")[0] == "sleeping", timeout=15, what="idle asleep")
    assert row(stack, idle, "status_message", "replicas") == ("Sleeping (idle)", 0)
    assert not sandbox_pids([idle]), "a sleeping session runs nothing"
    wait_for(lambda: row(stack, idle, "status")[0] == "terminated", timeout=15,
             what="asleep too long: deleted")
    reasons = [a["detail"]["reason"] for a in stack.audit("session.cull") if a["target"] == idle]
    assert reasons == ["idle_sleep", "asleep_delete"], reasons
    assert cgroup_dirs(idle) == []

    s = status_of(stack, h, busy)
    assert s["status"] == "ready" and s["last_activity_kind"] == "cpu", s
    assert s["memory_bytes"] > 0 and s["disk_total_bytes"] > 0, s
    assert not [a for a in stack.audit("session.cull") if a["target"] == busy]


def test_kill_9_with_ten_sandboxes_then_restart_reattaches_every_one(stack, rt):
    rt.start("gateway")
    rt.start("sync-worker")
    sm = rt.start("session-manager", **FAST_LOOK)
    user, h = stack.new_user()
    uuids = [None] * 10

    def make(i):
        uuids[i] = create_ready(stack, h, "r%d" % i)
    threads = [threading.Thread(target=make, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rt.uuids.extend(uuids)
    # each sandbox gets a process that must survive the manager's death
    for u in uuids:
        exec_api(stack, h, u, "nohup sleep 600 >/dev/null 2>&1 & echo $! > /tmp/bg; "
                              "echo %s > marker" % u)
    before = {u: sorted(sandbox_pids([u])) for u in uuids}

    stack.stop(sm, sig=signal.SIGKILL)
    sm2 = rt.start("session-manager", **FAST_LOOK)
    # the dead instance's lease runs out (2 s in tests), the new one adopts
    wait_for(lambda: len(re.findall(r"event=session_recovered .* outcome=attached",
                                    sm2.log())) == 10, timeout=20, what="10 re-attached")
    assert "outcome=restarted" not in sm2.log()
    for u in uuids:
        assert row(stack, u, "status", "owner_instance") == ("ready", sm2.instance)
        out = exec_api(stack, h, u, "kill -0 $(cat /tmp/bg) && cat marker")
        assert out["exit_code"] == 0 and out["stdout"] == u + "\n", out
        assert sorted(sandbox_pids([u])) == before[u] or set(before[u]) <= set(sandbox_pids([u]))


def test_orphans_go_and_vanished_sandboxes_come_back(stack, rt):
    rt.start("gateway")
    rt.start("sync-worker")
    sm = rt.start("session-manager", **FAST_LOOK)
    user, h = stack.new_user()
    orphan = rt.session(h, "orphan")
    lost = rt.session(h, "lost")

    # a crash between a sandbox and its record: the row says terminated
    # while the sandbox, its cgroup and its volume mount are still there
    stack.stop(sm, sig=signal.SIGKILL)
    stack.query("UPDATE code_sessions SET status = 'terminated' WHERE uuid = %s", orphan)
    vol = volume_dir(stack, rt.base, row(stack, orphan, "workspace_id::text")[0])
    assert sandbox_pids([orphan]) and cgroup_dirs(orphan) and mounts_under(vol)
    sm = rt.start("session-manager", **FAST_LOOK)
    wait_for(lambda: not sandbox_pids([orphan]) and not cgroup_dirs(orphan)
             and not mounts_under(vol), timeout=15, what="orphan removed")
    assert "event=orphan_removed session=%s" % orphan in sm.log()

    # a sandbox that dies behind the manager's back is started again
    for pid in sandbox_pids([lost]):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: re.search(r"event=session_recovered session=%s .*outcome=restarted" % lost,
                               sm.log()), timeout=15, what="lost sandbox restarted")
    # the line is logged before the row goes to loading_files: a `ready` read
    # right after it may be the old one, and exec then answers 409 until the
    # restart's load is done
    def echo_back():
        r = stack.post("/api/sessions/%s/exec" % lost, json={"command": "echo back"}, headers=h,
                       timeout=50)
        assert r.status_code in (200, 409), r.text
        return r.status_code == 200 and r.json()["stdout"] == "back\n"
    wait_for(echo_back, timeout=30, interval=0.2, what="exec in the restarted sandbox")
    assert status_of(stack, h, lost)["status"] == "ready"

    # ... or, with ATELIER_RESTART_LOST=false, marked error for the user to wake
    stack.stop(sm)
    sm = rt.start("session-manager", ATELIER_RESTART_LOST="false", **FAST_LOOK)
    wait_for(lambda: row(stack, lost, "owner_instance")[0] == sm.instance, timeout=15,
             what="adopted")
    for pid in sandbox_pids([lost]):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: row(stack, lost, "status")[0] == "error", timeout=15, what="marked error")
    assert "wake" in row(stack, lost, "status_message")[0]
    r = stack.post("/session/%s/wake" % lost, headers=h)
    assert r.status_code == 200, r.text
    wait_status(stack, h, lost, "ready")


def test_two_managers_share_the_sessions_by_lease(stack, rt):
    rt.start("gateway")
    rt.start("sync-worker")
    a = rt.start("session-manager", **FAST_LOOK)
    b = rt.start("session-manager", **FAST_LOOK)
    user, h = stack.new_user()
    uuids = [rt.session(h, "m%d" % i) for i in range(6)]
    owners = {row(stack, u, "owner_instance")[0] for u in uuids}
    assert owners <= {a.instance, b.instance}
    # every job reaches its session's owner, whichever instance read it
    for u in uuids:
        assert exec_api(stack, h, u, "echo ok")["stdout"] == "ok\n"
        assert stack.post("/session/%s/scale" % u, json={"scale": "up"},
                          headers=h).status_code == 200
    # one dies: the other adopts its sessions once the lease has expired
    stack.stop(a, sig=signal.SIGKILL)
    wait_for(lambda: all(row(stack, u, "owner_instance")[0] == b.instance for u in uuids),
             timeout=20, what="all adopted by %s" % b.instance)
    for u in uuids:
        assert exec_api(stack, h, u, "echo still")["stdout"] == "still\n"


def test_twenty_sleep_wake_cycles_keep_every_file(stack, rt):
    rt.start("gateway")
    rt.start("sync-worker")
    rt.start("session-manager")
    user, h = stack.new_user()
    uuid = rt.session(h, "cycles")
    out = exec_api(stack, h, uuid, 'python3 -c "import numpy, pandas, scipy; print(numpy.pi)"')
    assert out["exit_code"] == 0 and out["stdout"].startswith("3.14"), out
    files = "/api/workspace/%s/files/" % uuid
    for i in range(20):
        # one file written inside the sandbox, one saved through the API
        exec_api(stack, h, uuid, "mkdir -p made && head -c 100000 /dev/urandom > made/f%d && "
                                 "sha256sum made/f%d >> sums" % (i, i))
        r = stack.request("PUT", files + "api/n%d.txt" % i, json={"content": "note %d\n" % i},
                          headers=h)
        assert r.status_code in (200, 201), r.text
        assert stack.post("/session/%s/sleep" % uuid, headers=h).status_code == 200
        assert stack.post("/session/%s/wake" % uuid, headers=h).status_code == 200
        wait_status(stack, h, uuid, "ready")
        out = exec_api(stack, h, uuid, "sha256sum -c --quiet sums && cat api/n*.txt | wc -l && "
                                       "ls made | wc -l")
        assert out["exit_code"] == 0, (i, out)
        assert out["stdout"].split() == [str(i + 1), str(i + 1)], (i, out)
