"""POST /api/sessions/{uuid}/exec through the gateway: validation,
ownership, refusal at the door of a session that is not ready, and the
answer coming from the job's reply. No sync-worker runs, so
the session stays `loading_files`; a row forced to `ready` makes the job reach
the manager and run; with the sandbox killed, every attempt fails and the
answer is 502 with the reason. test_runtime.py runs real commands in real
sandboxes."""
import os
import signal

from harness import cgroup_dirs, wait_for


def cgroup_pids(uuid):
    pids = set()
    for d in cgroup_dirs(uuid):
        with open(os.path.join(d, "cgroup.procs")) as f:
            pids.update(int(x) for x in f.read().split())
    return pids


def test_exec_validates_checks_owner_and_answers_from_the_reply(stack):
    stack.start("gateway")
    stack.start("session-manager", env={"ATELIER_JOB_RETRY_BACKOFF_MS": "20"})
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    s = stack.post("/api/sessions", json={"name": "x"}, headers=ha).json()
    url = "/api/sessions/%s/exec" % s["uuid"]
    for body, want in (({}, 422), ({"command": ""}, 422), ({"command": 1}, 422),
                       ({"command": "true", "timeout_s": 0}, 422),
                       ({"command": "true", "timeout_s": 601}, 422),
                       ({"command": "true", "stdin": 5}, 422),
                       ({"command": "true", "shell": "sh"}, 422)):
        r = stack.post(url, json=body, headers=ha)
        assert r.status_code == want, (body, r.text)
    assert stack.post(url, data=b"{", headers=ha).status_code == 400
    assert stack.post(url, json={"command": "true"}).status_code == 401
    assert stack.post(url, json={"command": "true"}, headers=hb).status_code == 404

    # not ready (no sync-worker here: its files never load): 409 at once,
    # with the status, and nothing queued or audited
    wait_for(lambda: stack.query("SELECT status FROM code_sessions WHERE uuid = %s",
                                 s["uuid"])[0][0] == "loading_files", what="sandbox started")
    r = stack.post(url, json={"command": "true"}, headers=ha)
    assert r.status_code == 409 and "not ready yet" in r.json()["detail"], r.text
    assert not stack.query("SELECT 1 FROM jobs WHERE kind = 'exec'")
    assert not stack.audit("session.exec")

    # ready: the answer is the command's result, with its job and audit rows
    stack.query("UPDATE code_sessions SET status = 'ready' WHERE uuid = %s", s["uuid"])
    r = stack.post(url, json={"command": "echo hi", "timeout_s": 5}, headers=ha, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stdout"] == "hi\n" and body["exit_code"] == 0 and body["job_id"], body
    row = stack.query("SELECT kind, role, session, args->>'command', (args->>'timeout_s')::int, "
                      "state FROM jobs WHERE id = %s", body["job_id"])
    assert row == [("exec", "session", s["uuid"], "echo hi", 5, "done")]
    audit = stack.audit("session.exec")
    assert len(audit) == 1 and audit[0]["target"] == s["uuid"]
    assert audit[0]["actor"] == "user:%d" % a["id"]

    # the sandbox killed behind the manager's back: every attempt fails, 502
    # with the reason (the monitor's next look would restart it)
    for pid in cgroup_pids(s["uuid"]):
        os.kill(pid, signal.SIGKILL)
    r = stack.post(url, json={"command": "echo hi"}, headers=ha, timeout=60)
    assert r.status_code == 502 and "exec" in r.json()["detail"], r.text
    assert stack.job(r.json()["job_id"])["state"] == "dead"
