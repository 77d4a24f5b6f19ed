"""Process lifecycle: graceful SIGTERM, migrations, configuration errors."""
import os
import re
import signal
import subprocess
import time

from harness import ROOT, binary, wait_for


def test_sigterm_finishes_inflight_job_then_exits_zero(stack):
    stack.start("gateway")
    w = stack.start("sync-worker")
    job = stack.enqueue("sync", "selftest", {"sleep_ms": 1500})
    wait_for(lambda: (stack.job(job["id"]) or {}).get("state") == "running", what="running")
    t0 = time.monotonic()
    assert stack.stop(w, signal.SIGTERM, timeout=10) == 0
    assert time.monotonic() - t0 < 5
    assert stack.job(job["id"])["state"] == "done"
    assert stack.job(job["id"])["owner"] == w.instance
    log = w.log()
    assert "event=draining" in log and "event=drained" in log
    # the heartbeat is removed at once on a clean exit
    assert not stack.r.exists("hb:sync-worker:%s" % w.instance)
    d = stack.get("/api/health/detailed").json()
    assert d["roles"]["sync-worker"]["alive"] == 0


def test_sigterm_past_timeout_leaves_job_for_another_instance(stack):
    stack.start("gateway")
    env = {"ATELIER_SHUTDOWN_TIMEOUT_MS": "300", "ATELIER_JOB_CLAIM_TIMEOUT_MS": "1000"}
    w1 = stack.start("backup-worker", env=env)
    job = stack.enqueue("backup", "selftest", {"sleep_ms": 3000, "effect": True})
    wait_for(lambda: (stack.job(job["id"]) or {}).get("state") == "running", what="running")
    assert stack.stop(w1, signal.SIGTERM, timeout=10) == 0
    assert "event=drain_timeout" in w1.log()
    w2 = stack.start("backup-worker", env=env)
    done = wait_for(lambda: (stack.job(job["id"]) or {}).get("state") == "done"
                    and stack.job(job["id"]), timeout=20, what="done by second worker")
    assert done["owner"] == w2.instance
    assert stack.query("SELECT count(*) FROM audit_log WHERE target = %s "
                       "AND action = 'selftest.effect'", job["id"])[0][0] == 1


def test_gateway_sigterm_exits_zero(stack):
    g = stack.start("gateway")
    assert stack.get("/health").ok
    assert stack.stop(g, signal.SIGTERM) == 0


MIGRATIONS = len([f for f in os.listdir(os.path.join(ROOT, "shared", "sql"))
                  if f.endswith(".sql")])


def applied(proc):
    m = re.search(r"migrations_applied=(\d+)", proc.log())
    return int(m.group(1)) if m else None


def test_migrations_rerun_is_a_noop(stack):
    g = stack.start("gateway")
    assert applied(g) == MIGRATIONS
    stack.stop(g)
    tables = stack.query("SELECT count(*) FROM information_schema.tables "
                         "WHERE table_schema = 'public'")[0][0]
    g2 = stack.start("gateway")
    assert applied(g2) == 0
    assert stack.query("SELECT count(*) FROM schema_migrations")[0][0] == MIGRATIONS
    assert stack.query("SELECT count(*) FROM information_schema.tables "
                       "WHERE table_schema = 'public'")[0][0] == tables
    for t in ("users", "api_keys", "auth_tokens", "workspaces", "code_sessions",
              "workspace_items", "jobs", "backups", "chat_messages", "audit_log"):
        assert stack.query("SELECT to_regclass(%s) IS NOT NULL", t)[0][0], t


def test_concurrent_start_applies_migrations_once(stack):
    procs = [stack.start(role, wait_ready=False) for role in
             ("gateway", "session-manager", "sync-worker", "backup-worker", "sync-worker")]
    for p in procs:
        wait_for(lambda: "event=started" in p.log(), what="%s started" % p.role)
    counts = sorted(applied(p) for p in procs)
    assert counts == [0, 0, 0, 0, MIGRATIONS], counts  # one process applied them all
    assert stack.query("SELECT count(*) FROM schema_migrations")[0][0] == MIGRATIONS


def run_with(stack, role, env):
    e = dict(stack.base_env)
    e.update(env)
    return subprocess.run([binary(role)], env=e, capture_output=True, text=True, timeout=20)


def test_bad_config_refuses_to_start_naming_setting_and_value(stack):
    cases = [
        ("gateway", {"MAX_FILE_SIZE": "lots"}, 'MAX_FILE_SIZE="lots"'),
        ("gateway", {"ATELIER_HTTP_PORT": "70000"}, 'ATELIER_HTTP_PORT="70000"'),
        ("sync-worker", {"REDIS_URL": "http://nope"}, 'REDIS_URL="http://nope"'),
        ("backup-worker", {"KUBERNETES_IN_CLUSTER": "maybe"}, 'KUBERNETES_IN_CLUSTER="maybe"'),
        ("session-manager", {"ATELIER_LOG_LEVEL": "loud"}, 'ATELIER_LOG_LEVEL="loud"'),
    ]
    for role, env, needle in cases:
        r = run_with(stack, role, env)
        assert r.returncode == 1, (role, env, r.stderr)
        assert needle in r.stderr, r.stderr
        assert "event=config_invalid" in r.stderr


def test_config_file_is_read_after_environment(stack, tmp_path):
    f = tmp_path / "atelier.conf"
    f.write_text("# test\nATELIER_HTTP_PORT=1\nATELIER_ACCESS_LOG=false\n")
    g = stack.start("gateway", env={"ATELIER_CONFIG": str(f)})  # env port wins
    stack.get("/health")
    assert "path=/health" not in g.log()  # access log off from the file


def test_gateway_port_in_use_fails_clearly(stack):
    stack.start("gateway")
    r = run_with(stack, "gateway", {"ATELIER_INSTANCE": "second"})
    assert r.returncode == 1
    assert "event=listen_failed" in r.stderr
