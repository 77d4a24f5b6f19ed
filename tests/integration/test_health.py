"""Gateway HTTP basics and /api/health/detailed against the real stack."""
import socket

import requests

from harness import ROLES, wait_for


def test_liveness_endpoints(stack):
    stack.start("gateway")
    for path in ("/health", "/api/health/", "/api/health"):
        r = stack.get(path)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.json()["status"] == "healthy"


def test_unknown_path_is_json_404_and_wrong_method_405(stack):
    stack.start("gateway")
    r = stack.get("/no/such/thing")
    assert r.status_code == 404
    assert r.json() == {"detail": "Not Found"}
    r = requests.delete(stack.url + "/health", timeout=5)
    assert r.status_code == 405
    assert r.json() == {"detail": "Method Not Allowed"}


def raw(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        chunks = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        except socket.timeout:
            pass
        return b"".join(chunks)


def test_malformed_http_gets_400_and_server_keeps_serving(stack):
    stack.start("gateway")
    # libwebsockets answers an unparseable request line itself, with a 4xx
    # (403 in lws 4.1), and closes that connection only
    for junk in (b"GARBAGE\r\n\r\n", b"G\x00T / HTTP/1.1\r\n\r\n", b"FOO / HTTP/1.1\r\n\r\n"):
        out = raw(stack.port, junk)
        assert out[:12] in (b"HTTP/1.0 400", b"HTTP/1.0 403", b"HTTP/1.1 400", b"HTTP/1.1 403"), out
        assert b"200 OK" not in out
    # binary junk, a huge header line
    raw(stack.port, bytes(range(256)) * 4)
    raw(stack.port, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n")
    for _ in range(3):
        assert stack.get("/health").status_code == 200


def test_detailed_shows_every_role_and_queues(stack):
    stack.start_all()

    def all_alive():
        d = stack.get("/api/health/detailed").json()
        return d if all(d["roles"][r]["alive"] == 1 for r in ROLES) else None

    d = wait_for(all_alive, what="all roles alive", timeout=5)
    assert d["status"] == "healthy"
    assert d["checks"]["postgres"]["ok"] and d["checks"]["redis"]["ok"]
    assert d["checks"]["postgres"]["rtt_ms"] >= 0
    for q in ("q:session", "q:sync", "q:backup"):
        # Redis 7 counts a consumer once its first read returns entries
        assert d["queues"][q]["depth"] == 0 and "consumers" in d["queues"][q]
    assert d["queues"]["q:dead"]["depth"] == 0
    inst = d["roles"]["sync-worker"]["instances"][0]
    assert inst["pid"] > 0 and inst["version"] and inst["started_at"] > 0


def test_detailed_reports_a_missing_role_as_degraded(stack):
    stack.start("gateway")
    stack.start("sync-worker")
    d = stack.get("/api/health/detailed").json()
    assert d["status"] == "degraded"
    assert d["roles"]["session-manager"]["alive"] == 0
    assert d["roles"]["sync-worker"]["alive"] == 1


def test_probe_round_trip_through_each_role(stack):
    procs = stack.start_all()
    d = stack.get("/api/health/detailed?probe=1").json()
    assert set(d["probe"]) == {"session-manager", "sync-worker", "backup-worker"}
    for role, p in d["probe"].items():
        assert p["ok"] is True, (role, p)
        assert p["instance"] == procs[role].instance
        assert 0 < p["rtt_ms"] < 5000
    assert d["status"] == "healthy"
    r = stack.get("/api/health/probe/sync-worker").json()
    assert r["ok"] and r["instance"] == procs["sync-worker"].instance
    assert stack.get("/api/health/probe/nope").status_code == 404


def test_probe_of_a_role_with_no_worker_times_out_as_degraded(stack):
    stack.start("gateway")
    stack.start("sync-worker")
    stack.start("backup-worker")
    d = stack.get("/api/health/detailed?probe=1", timeout=15).json()
    assert d["probe"]["sync-worker"]["ok"] is True
    assert d["probe"]["session-manager"]["ok"] is False
    assert d["status"] == "degraded"


def test_metrics_cover_every_role(stack):
    stack.start_all()
    stack.enqueue("sync", "ping", wait=True)

    def scraped():
        text = stack.get("/metrics").text
        return text if ('atelier_jobs_total{kind="ping",outcome="done",role="sync-worker"' in text
                        and 'role="backup-worker"' in text) else None

    text = wait_for(scraped, what="worker metrics in /metrics", timeout=8)
    assert "# TYPE atelier_http_requests_total counter" in text
    assert text.count("# TYPE atelier_jobs_inflight gauge") == 1
    assert 'atelier_jobs_total{kind="ping",outcome="done",role="sync-worker"' in text
    assert 'role="session-manager"' in text
