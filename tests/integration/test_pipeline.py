"""The request pipeline every endpoint goes through: credentials, admin
levels, rate limits (429 + Retry-After), CORS, body and URI limits."""
import time
import uuid

import requests

JOB = "/api/jobs/" + str(uuid.uuid4())


def test_missing_and_bad_credentials_are_401_with_json(stack):
    stack.start("gateway")
    for headers in ({}, {"X-API-Key": "nope"}, {"Authorization": "Bearer nope"},
                    {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"Authorization": "Bearer a.b.c"}):
        r = stack.get(JOB, headers=headers)
        assert r.status_code == 401, (headers, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["detail"]
    r = stack.get(JOB)
    assert r.headers.get("www-authenticate") == "Bearer"
    # the bootstrap key passes authentication (the job does not exist)
    r = stack.get(JOB, headers=stack.admin_headers())
    assert r.status_code == 404 and r.json() == {"detail": "Job not found"}


def test_admin_routes_refuse_non_admin_keys(stack):
    stack.start("gateway")
    stack.query("INSERT INTO users (username, email) VALUES ('u', 'u@example.com')")
    key = "atk_test_" + uuid.uuid4().hex
    import hashlib
    stack.query("INSERT INTO api_keys (user_id, name, key_hash) SELECT id, 'k', %s FROM users",
                hashlib.sha256(key.encode()).hexdigest())
    r = stack.post("/api/jobs", json={"role": "sync", "kind": "ping"}, headers={"X-API-Key": key})
    assert r.status_code == 403, r.text
    r = stack.post("/api/jobs", json={"role": "sync", "kind": "ping"})
    assert r.status_code == 401
    # revoking the key in the database takes effect within the cache lifetime
    stack.query("UPDATE api_keys SET revoked_at = now()")
    time.sleep(10.5)
    r = stack.get(JOB, headers={"X-API-Key": key})
    assert r.status_code == 401


def test_rate_limit_answers_429_with_retry_after(stack):
    stack.start("gateway", env={"ATELIER_RATE_LIMIT_RPS": "1", "ATELIER_RATE_LIMIT_BURST": "3"})
    codes = [stack.get(JOB, headers=stack.admin_headers()).status_code for _ in range(5)]
    assert codes[:3] == [404, 404, 404], codes
    assert codes[3:] == [429, 429], codes
    r = stack.get(JOB, headers=stack.admin_headers())
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert "Too many requests" in r.json()["detail"]
    # the bucket is in Redis, shared by every gateway
    assert stack.r.exists("rl:key:0")
    time.sleep(1.2)
    assert stack.get(JOB, headers=stack.admin_headers()).status_code == 404
    # public health checks are not limited
    assert all(stack.get("/health").status_code == 200 for _ in range(10))


def test_rate_limit_fails_open_without_redis_commands(stack):
    """The limiter never turns a Redis hiccup into an outage: it lets the
    request through and counts the failure."""
    stack.start("gateway", env={"ATELIER_RATE_LIMIT_RPS": "1", "ATELIER_RATE_LIMIT_BURST": "1"})
    stack.r.execute_command("CLIENT", "PAUSE", "300", "WRITE")
    assert stack.get(JOB, headers=stack.admin_headers()).status_code in (404, 429)


def test_login_attempts_are_limited_per_ip(stack):
    stack.start("gateway", env={"ATELIER_LOGIN_RATE_PER_MIN": "2"})
    codes = [stack.post("/api/users/login", json={"email": "x@example.com", "password": "wrong-pw1"}
                        ).status_code for _ in range(3)]
    assert codes[2] == 429, codes
    r = stack.post("/api/users/login", json={"email": "x@example.com", "password": "wrong-pw1"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_cors_allows_only_configured_origins(stack):
    stack.start("gateway", env={"CORS_ORIGINS": "http://ide.example, http://localhost:3000"})
    r = stack.get("/health", headers={"Origin": "http://ide.example"})
    assert r.headers["access-control-allow-origin"] == "http://ide.example"
    assert "ETag" in r.headers["access-control-expose-headers"]
    r = stack.get("/health", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    r = stack.request("OPTIONS", "/api/workspace/x/files/a.py",
                      headers={"Origin": "http://localhost:3000",
                               "Access-Control-Request-Method": "PUT"})
    assert r.status_code == 204
    assert "PUT" in r.headers["access-control-allow-methods"]
    assert "If-Match" in r.headers["access-control-allow-headers"]
    r = stack.request("OPTIONS", "/api/sessions", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["detail"]


def test_body_limits_answer_413_before_reading_on(stack):
    stack.start("gateway", env={"MAX_FILE_SIZE": "1024"})
    # JSON endpoints take 64 KiB
    r = stack.post("/api/jobs", data=b"{" + b" " * 70000 + b"}", headers=stack.admin_headers())
    assert r.status_code == 413 and "larger than 65536" in r.json()["detail"]
    # a file write takes 2 x MAX_FILE_SIZE + 64 KiB of JSON
    big = b"x" * (2 * 1024 + 65536 + 1)
    r = stack.request("PUT", "/api/workspace/%s/files/a.txt" % uuid.uuid4(), data=big,
                      headers=dict(stack.admin_headers(), **{"Content-Type": "text/plain"}))
    assert r.status_code == 413
    # the gateway is still fine
    assert stack.get("/health").status_code == 200


def test_overlong_uri_is_414_and_unknown_routes_are_json(stack):
    stack.start("gateway")
    r = stack.get("/api/workspace/x/files/" + "a" * 15000)
    assert r.status_code in (414, 431), r.status_code
    r = stack.get("/nope")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    r = stack.request("PATCH", "/api/sessions")
    assert r.status_code == 405 and "GET" in r.headers["allow"]


def test_x_request_id_is_echoed(stack):
    stack.start("gateway")
    r = stack.get("/health", headers={"X-Request-Id": "abcdef12"})
    assert r.headers["x-request-id"] == "abcdef12"
    r = requests.get(stack.url + "/health", timeout=5)
    assert len(r.headers["x-request-id"]) == 8
