"""The session lifecycle on the `local` runtime driver, end to end: gateway,
session-manager and sync-worker against real bwrap sandboxes, cgroups and
loop-mounted volumes. create -> ready (files loaded), exec, sleep/wake,
scale, delete; nothing of the sandbox is left afterwards."""
import json
import os
import pathlib
import time

import pytest

from harness import cgroup_dirs, mounts_under, wait_for
from sandboxes import runtime, status_of, volume_dir, wait_status  # noqa: F401 (a fixture)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="sandboxes need root (cgroups, loop mounts)"),
    pytest.mark.skipif(not os.access("/usr/bin/bwrap", os.X_OK), reason="bubblewrap missing"),
]

CG_V1_MEMORY = "/sys/fs/cgroup/memory"
CG_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")


def memory_limit(uuid):
    if os.path.isdir(CG_V1_MEMORY):
        with open("%s/atelier/%s/memory.limit_in_bytes" % (CG_V1_MEMORY, uuid)) as f:
            return int(f.read())
    with open("/sys/fs/cgroup/atelier/%s/memory.max" % uuid) as f:
        return int(f.read())


def images(base):
    """The volumes' images under base (.images/ is hidden from glob), not the
    spares formatted ahead of need (.images/+spare/)."""
    return [os.path.join(d, f) for d, _, files in os.walk(str(base)) for f in files
            if f.endswith(".img") and "/+spare" not in d]


def exec_job(stack, uuid, command, timeout_s=None):
    args = {"command": command}
    if timeout_s:
        args["timeout_s"] = timeout_s
    r = stack.post("/api/jobs", json={"role": "session", "kind": "exec", "session": uuid,
                                      "args": args, "wait": True, "timeout_ms": 60000},
                   headers=stack.admin_headers(), timeout=70)
    assert r.status_code in (200, 500), r.text
    return r.json()


def test_session_lifecycle_on_local_driver(stack, runtime):
    base, run_base, uuids, sm = runtime
    user, h = stack.new_user()

    t0 = time.monotonic()
    r = stack.post("/api/sessions", json={"name": "runtime"}, headers=h)
    assert r.status_code == 201, r.text
    s = r.json()
    uuid = s["uuid"]
    uuids.append(uuid)
    ready = wait_status(stack, h, uuid, "ready")
    create_ms = (time.monotonic() - t0) * 1000
    print("\ncreate -> ready: %.0f ms" % create_ms)
    assert ready["replicas"] == 1

    vol = pathlib.Path(volume_dir(stack, base, s["workspace_id"]))
    assert (vol / "script.py").read_text() == 'print("Hello from Atelier!")\n'
    row = stack.query("SELECT owner_instance FROM code_sessions WHERE uuid = %s", uuid)
    assert row[0][0] == sm.instance

    t = time.monotonic()
    out = exec_job(stack, uuid, "python3 script.py; echo $((6*7))")
    print("exec round trip: %.0f ms" % ((time.monotonic() - t) * 1000))
    assert out["ok"], out
    res = out["result"]
    assert "Hello from Atelier!" in res["stdout"] and "42" in res["stdout"], res
    assert res["exit_code"] == 0 and not res["timed_out"] and not res["stdout_truncated"]
    assert stack.job(out["id"])["state"] == "done"

    # a failing command is a result, not a failed job; stderr and status come back
    out = exec_job(stack, uuid, "echo oops >&2; exit 3")
    assert out["ok"] and out["result"]["exit_code"] == 3 and out["result"]["stderr"] == "oops\n"

    # a file saved through the API reaches the volume by the load on wake
    u = "/api/workspace/%s/files/notes.txt" % uuid
    assert stack.request("PUT", u, json={"content": "kept across sleep\n"}, headers=h).ok

    # sleep, wake and scale answer once the manager has done them, with
    # client-api-v3.1.md's bodies
    t = time.monotonic()
    r = stack.post("/session/%s/sleep" % uuid, headers=h)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("uuid", "action", "status")} == {
        "uuid": uuid, "action": "sleep", "status": "sleeping"}
    slept = status_of(stack, h, uuid)
    assert slept["status"] == "sleeping"
    print("sleep: %.0f ms" % ((time.monotonic() - t) * 1000))
    assert slept["replicas"] == 0
    assert not mounts_under(str(vol)), "a sleeping session holds no mount"
    out = exec_job(stack, uuid, "true")
    assert not out["ok"] and "sleeping" in out["error"], out

    t = time.monotonic()
    r = stack.post("/session/%s/wake" % uuid, headers=h)
    assert r.status_code == 200 and r.json()["status"] == "waking", r.text
    woke = wait_status(stack, h, uuid, "ready")
    print("wake -> ready: %.0f ms" % ((time.monotonic() - t) * 1000))
    assert woke["replicas"] == 1
    out = exec_job(stack, uuid, "cat notes.txt")
    assert out["ok"] and out["result"]["stdout"] == "kept across sleep\n", out

    t = time.monotonic()
    r = stack.post("/session/%s/scale" % uuid, json={"scale": "up"}, headers=h)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("uuid", "action", "status", "cpu_millis", "memory_mb")} == {
        "uuid": uuid, "action": "scale_up", "status": "success", "cpu_millis": 2000,
        "memory_mb": 2048}
    assert status_of(stack, h, uuid)["tier"] == "large"
    print("scale: %.0f ms" % ((time.monotonic() - t) * 1000))
    assert memory_limit(uuid) == 2 << 30

    t = time.monotonic()
    r = stack.request("DELETE", "/api/sessions/%s" % uuid, headers=h)
    assert r.status_code == 202, r.text
    wait_for(lambda: stack.query("SELECT status, replicas, terminated_at IS NOT NULL "
                                 "FROM code_sessions WHERE uuid = %s", uuid)[0]
             == ("terminated", 0, True), what="terminated")
    print("delete: %.0f ms" % ((time.monotonic() - t) * 1000))
    assert cgroup_dirs(uuid) == []
    assert not os.path.exists(os.path.join(run_base, uuid))
    assert not mounts_under(str(base))


def test_exec_and_scale_refused_when_the_session_is_not_ready(stack, runtime):
    base, run_base, uuids, sm = runtime
    user, h = stack.new_user()
    s = stack.post("/api/sessions", json={"name": "refuse"}, headers=h).json()
    uuids.append(s["uuid"])
    wait_status(stack, h, s["uuid"], "ready")
    out = exec_job(stack, s["uuid"], "true", timeout_s=601)
    assert not out["ok"] and "timeout_s" in out["error"], out
    assert stack.post("/session/%s/sleep" % s["uuid"], headers=h).status_code == 200
    assert status_of(stack, h, s["uuid"])["status"] == "sleeping"
    # refused at the door: 409 with the reason, and no job queued
    r = stack.post("/session/%s/scale" % s["uuid"], json={"scale": "up"}, headers=h)
    assert r.status_code == 409 and "sleeping" in r.json()["detail"], r.text
    r = stack.post("/api/sessions/%s/exec" % s["uuid"], json={"command": "true"}, headers=h)
    assert r.status_code == 409 and "wake it first" in r.json()["detail"], r.text
    assert stack.query("SELECT kind, count(*) FROM jobs WHERE session = %s AND kind IN "
                       "('scale', 'exec') GROUP BY kind", s["uuid"]) == [("exec", 1)]
    # a job that reaches the manager in a state it cannot apply to is refused there
    out = exec_job(stack, s["uuid"], "true")
    assert not out["ok"] and "sleeping" in out["error"], out
    assert stack.request("DELETE", "/api/sessions/%s" % s["uuid"], headers=h).status_code == 202
    wait_for(lambda: stack.query("SELECT status FROM code_sessions WHERE uuid = %s",
                                 s["uuid"])[0][0] == "terminated", what="terminated")
    assert cgroup_dirs(s["uuid"]) == []


def test_jobs_of_one_session_run_in_order_and_events_are_published(stack, runtime):
    base, run_base, uuids, sm = runtime
    user, h = stack.new_user()
    s = stack.post("/api/sessions", json={"name": "order"}, headers=h).json()
    uuid = s["uuid"]
    uuids.append(uuid)
    wait_status(stack, h, uuid, "ready")
    # a 1 s exec, then a sleep queued behind it: the sleep must not kill it
    slow = stack.post("/api/jobs", json={"role": "session", "kind": "exec", "session": uuid,
                                         "args": {"command": "sleep 1; echo done"}},
                      headers=stack.admin_headers()).json()
    assert stack.post("/session/%s/sleep" % uuid, headers=h).status_code == 200
    wait_status(stack, h, uuid, "sleeping")
    job = stack.job(slow["id"])
    assert job["state"] == "done" and job["result"]["stdout"] == "done\n", job

    ps = stack.r.pubsub()
    ps.subscribe("ev:%s" % uuid)
    assert stack.post("/session/%s/wake" % uuid, headers=h).status_code == 200
    wait_status(stack, h, uuid, "ready")
    events = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not any(e["type"] == "pod_ready" for e in events):
        m = ps.get_message(timeout=0.2)
        if m and m["type"] == "message":
            events.append(json.loads(m["data"]))
    ps.close()
    kinds = [(e["type"], e.get("status")) for e in events]
    assert ("status", "loading_files") in kinds and ("status", "ready") in kinds, kinds
    assert ("pod_ready", None) in kinds, kinds
    assert all(e["sessionId"] == uuid and e["timestamp"] for e in events)


def test_a_restarted_manager_reattaches_to_running_sandboxes(stack, runtime):
    base, run_base, uuids, sm = runtime
    user, h = stack.new_user()
    s = stack.post("/api/sessions", json={"name": "restart"}, headers=h).json()
    uuid = s["uuid"]
    uuids.append(uuid)
    wait_status(stack, h, uuid, "ready")
    assert exec_job(stack, uuid, "echo $$ > /tmp/pid; sleep 300 &")["ok"]
    stack.stop(sm)
    stack.start("session-manager", env={"WORKSPACE_BASE_PATH": str(base)})
    out = exec_job(stack, uuid, "echo alive")
    assert out["ok"] and out["result"]["stdout"] == "alive\n", out
    assert status_of(stack, h, uuid)["status"] == "ready"


def test_exec_results_timeout_cap_and_binary_output(stack, runtime):
    base, run_base, uuids, sm = runtime
    user, h = stack.new_user()
    s = stack.post("/api/sessions", json={"name": "exec"}, headers=h).json()
    uuids.append(s["uuid"])
    wait_status(stack, h, s["uuid"], "ready")
    out = exec_job(stack, s["uuid"], "echo start; sleep 5", timeout_s=1)
    res = out["result"]
    assert out["ok"] and res["timed_out"] and res["exit_code"] == -1, out
    assert res["stdout"] == "start\n" and res["duration_ms"] < 3000
    out = exec_job(stack, s["uuid"], "head -c 3000000 /dev/zero | tr '\\0' a")
    res = out["result"]
    assert res["stdout_truncated"] and len(res["stdout"]) == 1 << 20, len(res["stdout"])
    out = exec_job(stack, s["uuid"], "printf 'a\\000b\\377c'")
    assert out["result"]["stdout"] == "a\ufffdb\ufffdc", out
    out = stack.post("/api/jobs", json={"role": "session", "kind": "exec", "session": s["uuid"],
                                        "args": {"command": "cat", "stdin": "piped\n"},
                                        "wait": True},
                     headers=stack.admin_headers()).json()
    assert out["ok"] and out["result"]["stdout"] == "piped\n", out
    out = stack.post("/api/jobs", json={"role": "session", "kind": "exec",
                                        "session": "00000000-0000-4000-8000-000000000000",
                                        "args": {"command": "true"}, "wait": True},
                     headers=stack.admin_headers()).json()
    assert not out["ok"] and "not found" in out["error"], out


def test_workspace_shutdown_removes_the_volume(stack, runtime):
    base, run_base, uuids, sm = runtime
    user, h = stack.new_user()
    s = stack.post("/api/sessions", json={"name": "shut"}, headers=h).json()
    uuids.append(s["uuid"])
    wait_status(stack, h, s["uuid"], "ready")
    assert images(base)
    r = stack.post("/workspace/%s/shutdown" % s["workspace_id"], headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "message": "Workspace shutdown completed",
                        "workspace_id": s["workspace_id"], "session_id": s["uuid"],
                        "active_connections": 0, "pod_deleted": True, "pvc_deleted": True,
                        "job_id": r.json()["job_id"]}
    assert stack.query("SELECT status FROM code_sessions WHERE uuid = %s",
                       s["uuid"])[0][0] == "terminated"
    assert not images(base)
    assert not mounts_under(str(base)) and cgroup_dirs(s["uuid"]) == []


def test_delete_keeps_a_volume_another_live_session_uses(stack, runtime):
    base, run_base, uuids, sm = runtime
    user, h = stack.new_user()
    a = stack.post("/session/create", json={}, headers=h).json()["uuid"]
    b = stack.post("/session/create", json={}, headers=h).json()["uuid"]
    uuids.extend([a, b])
    wait_status(stack, h, a, "ready")
    wait_status(stack, h, b, "ready")
    ws = stack.query("SELECT DISTINCT workspace_id::text FROM code_sessions WHERE uuid IN (%s, %s)",
                     a, b)
    assert len(ws) == 1, "both on the user's default workspace"
    # which lives at {WORKSPACE_BASE_PATH}/{user_id}/ (workspace-s3-git.md)
    assert volume_dir(stack, base, ws[0][0]) == os.path.join(str(base), str(user["id"]))
    assert mounts_under(os.path.join(str(base), str(user["id"])))
    assert stack.request("DELETE", "/session/%s" % a, headers=h).status_code == 202
    wait_for(lambda: stack.query("SELECT status FROM code_sessions WHERE uuid = %s",
                                 a)[0][0] == "terminated", what="a terminated")
    assert len(images(base)) == 1
    out = exec_job(stack, b, "cat script.py")
    assert out["ok"] and "Hello from Atelier!" in out["result"]["stdout"], out
    assert stack.request("DELETE", "/session/%s" % b, headers=h).status_code == 202
    wait_for(lambda: stack.query("SELECT status FROM code_sessions WHERE uuid = %s",
                                 b)[0][0] == "terminated", what="b terminated")
    assert images(base) == [] and not mounts_under(str(base))
