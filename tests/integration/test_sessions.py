"""Sessions, FastAPI family (/api/sessions): create, list, get, delete.
Real gateway, PostgreSQL and Redis; no session manager runs, so every job
stays queued and its stream entry is read back with XRANGE."""
import hashlib
import json
import re
import struct
import uuid

FAST = {"ATELIER_BCRYPT_COST": "4", "ATELIER_LOGIN_RATE_PER_MIN": "1000"}
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
SESSION_FIELDS = {"id", "uuid", "user_id", "name", "language", "is_active", "status",
                  "status_message", "tier", "replicas", "cpu_millis", "memory_mb",
                  "workspace_id", "created_at", "updated_at", "last_activity", "job_id",
                  "last_activity_kind", "oom_kills", "memory_bytes", "disk_used_bytes",
                  "disk_total_bytes"}
SCRIPT = 'print("Hello from Atelier!")\n'


# ---- helpers shared with test_client_api.py ---------------------------------


def unpack(buf):
    """Decode the msgpack subset the job codec writes (maps, arrays, strings,
    integers, booleans, nil, binary)."""
    def item(i):
        b = buf[i]
        if b <= 0x7f:
            return b, i + 1
        if b >= 0xe0:
            return b - 0x100, i + 1
        if 0x80 <= b <= 0x8f:
            return seq(i + 1, b & 0x0f, True)
        if 0x90 <= b <= 0x9f:
            return seq(i + 1, b & 0x0f, False)
        if 0xa0 <= b <= 0xbf:
            n = b & 0x1f
            return buf[i + 1:i + 1 + n].decode(), i + 1 + n
        simple = {0xc0: None, 0xc2: False, 0xc3: True}
        if b in simple:
            return simple[b], i + 1
        sized = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q",
                 0xd0: ">b", 0xd1: ">h", 0xd2: ">i", 0xd3: ">q"}
        if b in sized:
            n = struct.calcsize(sized[b])
            return struct.unpack(sized[b], buf[i + 1:i + 1 + n])[0], i + 1 + n
        lens = {0xd9: ">B", 0xda: ">H", 0xdb: ">I", 0xc4: ">B", 0xc5: ">H", 0xc6: ">I"}
        if b in lens:
            w = struct.calcsize(lens[b])
            n = struct.unpack(lens[b], buf[i + 1:i + 1 + w])[0]
            raw = buf[i + 1 + w:i + 1 + w + n]
            return (raw.decode() if b >= 0xd9 else raw), i + 1 + w + n
        if b in (0xde, 0xdc):
            n = struct.unpack(">H", buf[i + 1:i + 3])[0]
            return seq(i + 3, n, b == 0xde)
        if b in (0xdf, 0xdd):
            n = struct.unpack(">I", buf[i + 1:i + 5])[0]
            return seq(i + 5, n, b == 0xdf)
        raise ValueError("msgpack type 0x%02x not expected in a job" % b)

    def seq(i, n, is_map):
        out = {} if is_map else []
        for _ in range(n):
            if is_map:
                k, i = item(i)
                v, i = item(i)
                out[k] = v
            else:
                v, i = item(i)
                out.append(v)
        return out, i

    value, end = item(0)
    assert end == len(buf)
    return value


def stream_jobs(stack, stream="q:session"):
    """The jobs on a stream, decoded, oldest first."""
    return [unpack(fields[b"j"]) for _, fields in stack.r.xrange(stream)]


def stream_job(stack, job_id):
    found = [j for j in stream_jobs(stack) if j["id"] == job_id]
    assert len(found) == 1, "job %s is %d times on q:session" % (job_id, len(found))
    return found[0]


def job_row(stack, job_id):
    rows = stack.query("SELECT kind, role, session, state, args::text FROM jobs WHERE id = %s",
                       job_id)
    assert len(rows) == 1, "no jobs row %s" % job_id
    kind, role, session, state, args = rows[0]
    return {"kind": kind, "role": role, "session": session, "state": state,
            "args": json.loads(args)}


def assert_job(stack, job_id, kind, session, args):
    """The job's durable row and its stream entry agree and say what is expected."""
    row = job_row(stack, job_id)
    assert row == {"kind": kind, "role": "session", "session": session, "state": "queued",
                   "args": args}
    entry = stream_job(stack, job_id)
    assert entry["kind"] == kind and entry["session"] == session and entry["attempt"] == 1
    assert entry["args"] == args


def counts(stack):
    """Rows of every table a session operation writes."""
    return {t: stack.query("SELECT count(*) FROM %s" % t)[0][0]
            for t in ("users", "workspaces", "workspace_items", "code_sessions", "jobs",
                      "chat_messages", "audit_log")} | {"stream": stack.r.xlen("q:session")}


def session_row(stack, uuid_):
    rows = stack.query("SELECT user_id, status, tier, cpu_millis, memory_mb, replicas, "
                       "is_active, workspace_id::text, name, language FROM code_sessions "
                       "WHERE uuid = %s", uuid_)
    if not rows:
        return None
    keys = ("user_id", "status", "tier", "cpu_millis", "memory_mb", "replicas", "is_active",
            "workspace_id", "name", "language")
    return dict(zip(keys, rows[0]))


def default_file(stack, workspace_id):
    return stack.query("SELECT path, name, type, content, size, sha256, version, parent_id "
                       "FROM workspace_items WHERE workspace_id = %s", workspace_id)


def assert_default_file(stack, workspace_id):
    assert default_file(stack, workspace_id) == [
        ("script.py", "script.py", "file", SCRIPT, len(SCRIPT),
         hashlib.sha256(SCRIPT.encode()).hexdigest(), 1, None)]


def user_key(stack, user_id, admin=False):
    """An API key bound to one user (user_id) or a service key (None), made
    directly in the table so these tests need only the session routes."""
    key = "atk_test_" + uuid.uuid4().hex
    stack.query("INSERT INTO api_keys (user_id, name, key_hash, prefix, is_admin) "
                "VALUES (%s, 'test', %s, %s, %s)", user_id,
                hashlib.sha256(key.encode()).hexdigest(), key[:12], admin)
    return {"X-API-Key": key}


def create(stack, headers, **body):
    return stack.post("/api/sessions", json=body, headers=headers)


# ---- create ------------------------------------------------------------------


def test_create_records_session_workspace_file_job_and_audit(stack):
    stack.start("gateway", env=FAST)
    user, h = stack.new_user()
    r = create(stack, h, name="demo", language="python")
    assert r.status_code == 201, r.text
    s = r.json()
    assert set(s) == SESSION_FIELDS
    assert UUID4.match(s["uuid"])
    assert s["user_id"] == user["id"] and s["name"] == "demo" and s["language"] == "python"
    assert s["status"] == "initializing" and s["is_active"] is True
    assert (s["tier"], s["cpu_millis"], s["memory_mb"], s["replicas"]) == ("small", 500, 512, 1)
    assert ISO.match(s["created_at"]) and ISO.match(s["updated_at"])
    assert ISO.match(s["last_activity"])
    assert UUID4.match(s["job_id"])

    row = session_row(stack, s["uuid"])
    assert row == {"user_id": user["id"], "status": "initializing", "tier": "small",
                   "cpu_millis": 500, "memory_mb": 512, "replicas": 1, "is_active": True,
                   "workspace_id": s["workspace_id"], "name": "demo", "language": "python"}
    ws = stack.query("SELECT user_id, name FROM workspaces WHERE id = %s", s["workspace_id"])
    assert ws == [(user["id"], "session-" + s["uuid"])]
    assert_default_file(stack, s["workspace_id"])

    assert_job(stack, s["job_id"], "start", s["uuid"],
               {"workspace_id": s["workspace_id"], "tier": "small", "cpu_millis": 500,
                "memory_mb": 512, "user_id": user["id"]})

    [a] = stack.audit("session.create")
    assert a["actor"] == "user:%d" % user["id"] and a["user_id"] == user["id"]
    assert a["target"] == s["uuid"] and a["ip"] in LOOPBACK
    assert a["detail"]["job_id"] == s["job_id"]
    assert a["detail"]["workspace_id"] == s["workspace_id"]
    assert a["detail"]["workspace_created"] is True and a["detail"]["tier"] == "small"
    assert stack.audit("user.create") == []


def test_create_without_body_uses_defaults_and_each_session_gets_its_own_workspace(stack):
    stack.start("gateway", env=FAST)
    user, h = stack.new_user()
    a = stack.post("/api/sessions", headers=h)
    assert a.status_code == 201, a.text
    a = a.json()
    assert a["name"] == "" and a["language"] == "python"
    b = create(stack, h, user_id=user["id"], language="javascript", name=None)
    assert b.status_code == 201, b.text
    b = b.json()
    assert b["language"] == "javascript"
    assert a["workspace_id"] != b["workspace_id"] and a["uuid"] != b["uuid"]
    assert stack.query("SELECT count(*) FROM workspaces WHERE user_id = %s", user["id"]) == [(2,)]
    assert_default_file(stack, b["workspace_id"])
    assert [j["kind"] for j in stream_jobs(stack)] == ["start", "start"]
    # trailing slash as in the seed's paths
    assert stack.post("/api/sessions/", json={}, headers=h).status_code == 201


def test_service_key_creates_for_the_user_it_names(stack):
    stack.start("gateway", env=FAST)
    user, _ = stack.new_user()
    for headers, actor in ((stack.admin_headers(), "key:bootstrap"),
                           (user_key(stack, None), "key:")):
        r = create(stack, headers, user_id=user["id"], name="by key")
        assert r.status_code == 201, r.text
        s = r.json()
        assert s["user_id"] == user["id"] and s["tier"] == "small"
        assert session_row(stack, s["uuid"])["user_id"] == user["id"]
        a = stack.audit("session.create")[-1]
        assert a["actor"].startswith(actor) and a["target"] == s["uuid"]
        assert a["detail"]["user_id"] == user["id"]
        assert_job(stack, s["job_id"], "start", s["uuid"],
                   {"workspace_id": s["workspace_id"], "tier": "small", "cpu_millis": 500,
                    "memory_mb": 512, "user_id": user["id"]})

    before = counts(stack)
    r = create(stack, stack.admin_headers())
    assert r.status_code == 422 and "user_id" in r.json()["detail"]
    r = create(stack, stack.admin_headers(), user_id=987654)
    assert r.status_code == 404 and r.json()["detail"] == "User not found"
    assert counts(stack) == before


def test_create_for_another_user_is_403_and_changes_nothing(stack):
    stack.start("gateway", env=FAST)
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    before = counts(stack)
    r = create(stack, ha, user_id=b["id"])
    assert r.status_code == 403, r.text
    assert "detail" in r.json()
    # a key bound to a is a only
    r = create(stack, user_key(stack, a["id"]), user_id=b["id"])
    assert r.status_code == 403
    assert counts(stack) == before
    r = create(stack, user_key(stack, a["id"]))
    assert r.status_code == 201 and r.json()["user_id"] == a["id"]


def test_create_takes_a_tier_with_its_resources(stack):
    stack.start("gateway", env=dict(FAST, ATELIER_TIERS="small=500:512,standard=1000:1024,large=2000:4096"))
    user, h = stack.new_user()
    r = stack.get("/api/tiers", headers=h)
    assert r.status_code == 200, r.text
    assert r.json() == [{"name": "small", "cpu_millis": 500, "memory_mb": 512},
                        {"name": "standard", "cpu_millis": 1000, "memory_mb": 1024},
                        {"name": "large", "cpu_millis": 2000, "memory_mb": 4096}]
    assert stack.get("/api/tiers").status_code == 401
    for tier, cpu, mem in (("standard", 1000, 1024), ("large", 2000, 4096), ("small", 500, 512)):
        r = create(stack, h, name=tier, tier=tier)
        assert r.status_code == 201, r.text
        s = r.json()
        assert (s["tier"], s["cpu_millis"], s["memory_mb"]) == (tier, cpu, mem)


def test_create_rejects_bad_input_without_changing_anything(stack):
    stack.start("gateway", env=FAST)
    user, h = stack.new_user()
    before = counts(stack)
    jh = dict(h, **{"Content-Type": "application/json"})
    cases = [
        (b'{"name": ', 400),
        (b'{"name": "a", "name": "b"}', 400),
        (b'[1, 2]', 422),
        (b'"text"', 400),
        (json.dumps({"user_id": "abc"}).encode(), 422),
        (json.dumps({"user_id": str(user["id"])}).encode(), 422),
        (json.dumps({"user_id": 0}).encode(), 422),
        (json.dumps({"user_id": -3}).encode(), 422),
        (json.dumps({"user_id": 1.5}).encode(), 422),
        (json.dumps({"user_id": True}).encode(), 422),
        (json.dumps({"name": 123}).encode(), 422),
        (json.dumps({"name": ["x"]}).encode(), 422),
        (json.dumps({"name": "x" * 256}).encode(), 422),
        (json.dumps({"name": "bad\nname"}).encode(), 422),
        (json.dumps({"language": ""}).encode(), 422),
        (json.dumps({"language": 3}).encode(), 422),
        (json.dumps({"language": "py thon"}).encode(), 422),
        (json.dumps({"language": "x" * 33}).encode(), 422),
        (json.dumps({"tier": "huge"}).encode(), 422),
        (json.dumps({"tier": 2}).encode(), 422),
        (json.dumps({"tier": ""}).encode(), 422),
    ]
    for body, status in cases:
        r = stack.post("/api/sessions", data=body, headers=jh)
        assert r.status_code == status, (body, r.status_code, r.text)
        assert isinstance(r.json()["detail"], str)
    assert counts(stack) == before


def test_session_routes_need_credentials(stack):
    stack.start("gateway", env=FAST)
    some = str(uuid.uuid4())
    for method, path in (("GET", "/api/sessions"), ("POST", "/api/sessions"),
                         ("GET", "/api/sessions/" + some), ("DELETE", "/api/sessions/" + some)):
        r = stack.request(method, path, json={})
        assert r.status_code == 401, (method, path, r.text)
        assert "detail" in r.json()
        r = stack.request(method, path, json={}, headers={"X-API-Key": "wrong"})
        assert r.status_code == 401, (method, path, r.text)
    assert stack.query("SELECT count(*) FROM code_sessions") == [(0,)]


# ---- list and get ------------------------------------------------------------------


def test_list_is_the_callers_sessions_newest_first(stack):
    stack.start("gateway", env=FAST)
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    a1 = create(stack, ha, name="first").json()
    a2 = create(stack, ha, name="second").json()
    b1 = create(stack, hb).json()

    r = stack.get("/api/sessions", headers=ha)
    assert r.status_code == 200
    assert [s["uuid"] for s in r.json()] == [a2["uuid"], a1["uuid"]]
    assert all(set(s) == SESSION_FIELDS for s in r.json())
    assert r.json()[1] == a1  # the same object create answered
    r = stack.get("/api/sessions/", params={"user_id": a["id"]}, headers=ha)
    assert [s["uuid"] for s in r.json()] == [a2["uuid"], a1["uuid"]]
    # another user's id: 403, not their list
    r = stack.get("/api/sessions", params={"user_id": b["id"]}, headers=ha)
    assert r.status_code == 403
    assert stack.get("/api/sessions", params={"user_id": "abc"}, headers=ha).status_code == 422

    # a service key: everyone's, or the user it names
    r = stack.get("/api/sessions", headers=stack.admin_headers())
    assert [s["uuid"] for s in r.json()] == [b1["uuid"], a2["uuid"], a1["uuid"]]
    r = stack.get("/api/sessions", params={"user_id": b["id"]}, headers=user_key(stack, None))
    assert [s["uuid"] for s in r.json()] == [b1["uuid"]]

    # terminated sessions only when asked for
    stack.query("UPDATE code_sessions SET status = 'terminated' WHERE uuid = %s", a1["uuid"])
    assert [s["uuid"] for s in stack.get("/api/sessions", headers=ha).json()] == [a2["uuid"]]
    r = stack.get("/api/sessions", params={"include_terminated": "true"}, headers=ha)
    assert [(s["uuid"], s["status"]) for s in r.json()] == [(a2["uuid"], "initializing"),
                                                            (a1["uuid"], "terminated")]
    r = stack.get("/api/sessions", params={"include_terminated": "maybe"}, headers=ha)
    assert r.status_code == 422
    # paging
    r = stack.get("/api/sessions", params={"limit": 1, "offset": 1}, headers=stack.admin_headers())
    assert [s["uuid"] for s in r.json()] == [a2["uuid"]]
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"offset": -1}):
        assert stack.get("/api/sessions", params=bad, headers=ha).status_code == 422, bad
    # a user with no sessions gets an empty array
    c, hc = stack.new_user()
    assert stack.get("/api/sessions", headers=hc).json() == []


def test_get_answers_owner_and_service_key_and_404_for_anyone_else(stack):
    stack.start("gateway", env=FAST)
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    s = create(stack, ha).json()
    path = "/api/sessions/" + s["uuid"]
    r = stack.get(path, headers=ha)
    assert r.status_code == 200 and r.json() == s
    assert stack.get(path, params={"user_id": a["id"]}, headers=ha).json() == s
    assert stack.get("/api/sessions/" + s["uuid"].upper(), headers=ha).json() == s
    assert stack.get(path, headers=stack.admin_headers()).json() == s
    assert stack.get(path, params={"user_id": a["id"]},
                     headers=stack.admin_headers()).json() == s

    # b cannot tell it exists
    r = stack.get(path, headers=hb)
    assert r.status_code == 404 and r.json() == {"detail": "Session not found"}
    assert stack.get(path, headers=user_key(stack, b["id"])).status_code == 404
    r = stack.get(path, params={"user_id": b["id"]}, headers=stack.admin_headers())
    assert r.status_code == 404
    assert stack.get("/api/sessions/" + str(uuid.uuid4()), headers=ha).status_code == 404
    # a's token naming b: 403
    assert stack.get(path, params={"user_id": b["id"]}, headers=ha).status_code == 403
    for bad in ("not-a-uuid", "1234", s["uuid"][:-1], s["uuid"] + "0", "zzzzzzzz",
                "%27%20OR%201=1--"):
        r = stack.get("/api/sessions/" + bad, headers=ha)
        assert r.status_code == 422, (bad, r.text)
        assert "detail" in r.json()


def test_get_accepts_an_8_hex_short_session_id(stack):
    stack.start("gateway", env=FAST)
    a, ha = stack.new_user()
    s = create(stack, ha).json()
    stack.query("UPDATE code_sessions SET uuid = 'abcd1234' WHERE uuid = %s", s["uuid"])
    r = stack.get("/api/sessions/abcd1234", headers=ha)
    assert r.status_code == 200 and r.json()["uuid"] == "abcd1234"
    assert stack.get("/api/sessions/ABCD1234", headers=ha).json()["uuid"] == "abcd1234"


# ---- delete ---------------------------------------------------------------------


def test_delete_queues_a_delete_job_and_keeps_the_workspace(stack):
    stack.start("gateway", env=FAST)
    a, ha = stack.new_user()
    s = create(stack, ha).json()
    r = stack.request("DELETE", "/api/sessions/" + s["uuid"], headers=ha)
    assert r.status_code == 202, r.text
    d = r.json()
    assert set(d) == {"uuid", "status", "job_id", "message"}
    assert d["uuid"] == s["uuid"] and d["status"] == "terminating"
    assert d["message"] == "Session deletion queued"
    assert UUID4.match(d["job_id"]) and d["job_id"] != s["job_id"]

    row = session_row(stack, s["uuid"])
    assert row["status"] == "terminating" and row["is_active"] is False
    assert_job(stack, d["job_id"], "delete", s["uuid"],
               {"workspace_id": s["workspace_id"], "backup": True})
    # the workspace and its files stay
    assert stack.query("SELECT count(*) FROM workspaces WHERE id = %s", s["workspace_id"]) == [(1,)]
    assert_default_file(stack, s["workspace_id"])
    [audit] = stack.audit("session.delete")
    assert audit["actor"] == "user:%d" % a["id"] and audit["target"] == s["uuid"]
    assert audit["detail"]["job_id"] == d["job_id"] and audit["ip"] in LOOPBACK
    got = stack.get("/api/sessions/" + s["uuid"], headers=ha).json()
    assert got["status"] == "terminating" and got["job_id"] == d["job_id"]

    # again while terminating: the same job, nothing new
    before = counts(stack)
    r = stack.request("DELETE", "/api/sessions/" + s["uuid"], headers=ha)
    assert r.status_code == 202 and r.json() == d
    assert counts(stack) == before

    # once terminated it is gone for delete
    stack.query("UPDATE code_sessions SET status = 'terminated' WHERE uuid = %s", s["uuid"])
    r = stack.request("DELETE", "/api/sessions/" + s["uuid"], headers=ha)
    assert r.status_code == 404
    assert counts(stack) == before


def test_delete_of_another_users_session_is_404_and_changes_nothing(stack):
    stack.start("gateway", env=FAST)
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    s = create(stack, ha).json()
    before = counts(stack)
    path = "/api/sessions/" + s["uuid"]
    assert stack.request("DELETE", path, headers=hb).status_code == 404
    assert stack.request("DELETE", path, headers=user_key(stack, b["id"])).status_code == 404
    assert stack.request("DELETE", path, params={"user_id": b["id"]},
                         headers=stack.admin_headers()).status_code == 404
    assert stack.request("DELETE", path, params={"user_id": b["id"]},
                         headers=ha).status_code == 403
    assert stack.request("DELETE", "/api/sessions/nope", headers=ha).status_code == 422
    assert stack.request("DELETE", "/api/sessions/" + str(uuid.uuid4()),
                         headers=ha).status_code == 404
    after = counts(stack)
    assert after == before
    assert session_row(stack, s["uuid"])["status"] == "initializing"
    # the service key may delete it
    r = stack.request("DELETE", path, headers=stack.admin_headers())
    assert r.status_code == 202
    assert stack.audit("session.delete")[0]["actor"] == "key:bootstrap"
