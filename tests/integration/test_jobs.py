"""The job queue: reclaim after kill -9, dead letters, load sharing."""
import collections
import signal
import time

from harness import wait_for

CLAIM = {"ATELIER_JOB_CLAIM_TIMEOUT_MS": "1000"}


def test_job_of_a_killed_worker_completes_exactly_once_elsewhere(stack):
    stack.start("gateway")
    a = stack.start("sync-worker", env=CLAIM)
    b = stack.start("sync-worker", env=CLAIM)
    job = stack.enqueue("sync", "selftest", {"sleep_ms": 2500, "effect": True})
    jid = job["id"]
    running = wait_for(lambda: (stack.job(jid) or {}).get("state") == "running" and stack.job(jid),
                       what="job running")
    victim, survivor = (a, b) if running["owner"] == a.instance else (b, a)
    assert running["owner"] == victim.instance
    victim.signal(signal.SIGKILL)
    victim.wait(5)

    done = wait_for(lambda: (stack.job(jid) or {}).get("state") == "done" and stack.job(jid),
                    timeout=20, what="job done after reclaim")
    assert done["owner"] == survivor.instance
    assert done["attempts"] == 2
    assert [(a["actor"], a["target"]) for a in stack.audit("job.enqueue")] == \
        [("key:bootstrap", jid)]
    effects = stack.query("SELECT count(*) FROM audit_log WHERE action = 'selftest.effect' "
                          "AND target = %s", jid)[0][0]
    assert effects == 1
    assert "event=jobs_reclaimed" in survivor.log()
    # nothing left pending for the dead consumer
    wait_for(lambda: stack.r.xpending("q:sync", "g:sync")["pending"] == 0, what="no pending")
    time.sleep(1.5)  # a second reclaim round must not run it again
    assert stack.query("SELECT count(*) FROM audit_log WHERE target = %s "
                       "AND action = 'selftest.effect'", jid)[0][0] == 1


def test_job_already_done_by_a_dead_worker_is_only_acked(stack):
    """A worker that made the effect durable but died before XACK: the next
    owner sees the done row and acknowledges without running it again."""
    stack.start("gateway")
    job = stack.enqueue("sync", "selftest", {"effect": True})
    jid = job["id"]
    # the job sits in q:sync with no consumer; mark it done as if a dead
    # worker had finished it
    stack.query("UPDATE jobs SET state = 'done', result = '{\"by\": \"ghost\"}' WHERE id = %s",
                jid)
    w = stack.start("sync-worker")
    wait_for(lambda: "event=job_already_done job=%s" % jid in w.log(), what="already-done ack")
    assert stack.query("SELECT count(*) FROM audit_log WHERE target = %s "
                       "AND action = 'selftest.effect'", jid)[0][0] == 0
    wait_for(lambda: stack.r.xpending("q:sync", "g:sync")["pending"] == 0, what="acked")


def test_always_failing_job_lands_in_dead_letter_queue(stack):
    stack.start("gateway")
    env = {"ATELIER_JOB_MAX_ATTEMPTS": "3", "ATELIER_JOB_RETRY_BACKOFF_MS": "10"}
    stack.start("backup-worker", env=env)
    job = stack.enqueue("backup", "selftest", {"fail": "disk on fire"})
    jid = job["id"]
    dead = wait_for(lambda: (stack.job(jid) or {}).get("state") == "dead" and stack.job(jid),
                    what="job dead")
    assert dead["attempts"] == 3
    assert dead["error"] == "disk on fire"
    entries = stack.r.xrange("q:dead")
    assert len(entries) == 1
    fields = entries[0][1]
    assert fields[b"role"] == b"backup"
    assert fields[b"error"] == b"disk on fire"
    assert fields[b"attempts"] == b"3"
    d = stack.get("/api/health/detailed").json()
    assert d["queues"]["q:dead"]["depth"] == 1
    r = stack.get("/api/jobs/" + jid, headers=stack.admin_headers()).json()
    assert r["state"] == "dead" and r["error"] == "disk on fire"


def test_job_that_fails_then_succeeds_is_retried(stack):
    stack.start("gateway")
    stack.start("session-manager", env={"ATELIER_JOB_RETRY_BACKOFF_MS": "10"})
    job = stack.enqueue("session", "selftest", {"fail": "flaky", "fail_times": 2})
    done = wait_for(lambda: (stack.job(job["id"]) or {}).get("state") == "done"
                    and stack.job(job["id"]), what="job done")
    assert done["attempts"] == 3
    assert done["result"]["attempt"] == 3
    assert stack.r.xlen("q:dead") == 0


def test_permanent_failure_and_unknown_kind_go_dead_at_once(stack):
    stack.start("gateway")
    stack.start("sync-worker")
    j1 = stack.enqueue("sync", "selftest", {"fail": "bad input", "permanent": True})
    j2 = stack.enqueue("sync", "no-such-kind")
    for jid, err in ((j1["id"], "bad input"), (j2["id"], 'unknown job kind "no-such-kind"')):
        dead = wait_for(lambda: (stack.job(jid) or {}).get("state") == "dead" and stack.job(jid),
                        what="dead")
        assert dead["error"].startswith(err)
        assert dead["attempts"] <= 1


def test_malformed_entry_goes_to_dead_letters(stack):
    w = stack.start("sync-worker")
    stack.r.xadd("q:sync", {"j": b"\xc1not msgpack"})
    wait_for(lambda: stack.r.xlen("q:dead") == 1, what="dead letter")
    fields = stack.r.xrange("q:dead")[0][1]
    assert b"malformed" in fields[b"error"] or b"decode" in fields[b"error"]
    assert "event=job_malformed" in w.log()
    assert w.alive()


def test_wait_returns_the_workers_reply(stack):
    stack.start("gateway")
    w = stack.start("backup-worker")
    r = stack.enqueue("backup", "selftest", {"sleep_ms": 50}, wait=True)
    assert r["ok"] is True and r["instance"] == w.instance
    assert r["result"]["slept_ms"] == 50
    assert stack.job(r["id"])["state"] == "done"


def test_two_instances_share_the_load(stack):
    stack.start("gateway")
    workers = [stack.start("sync-worker", env={"ATELIER_WORKER_CONCURRENCY": "4"})
               for _ in range(2)]
    ids = [stack.enqueue("sync", "selftest", {"sleep_ms": 20})["id"] for _ in range(120)]
    wait_for(lambda: stack.query("SELECT count(*) FROM jobs WHERE state = 'done'")[0][0] == 120,
             timeout=30, what="all jobs done")
    owners = collections.Counter(r[0] for r in stack.query("SELECT owner FROM jobs"))
    assert set(owners) == {w.instance for w in workers}
    assert min(owners.values()) >= 120 * 0.2, owners
    assert len(ids) == 120
