"""Client API v3.1 (/session/create, /session/{uuid}/..., /sessions,
/workspace/{id}/shutdown). Real gateway, PostgreSQL and Redis; no session
manager runs, so every job stays queued: the answers say "queued", never that
the work is done, and the jobs rows and stream entries are asserted."""
import json
import threading
import uuid

from test_sessions import (FAST, ISO, LOOPBACK, UUID4, assert_default_file, assert_job,
                           counts, job_row, session_row, stream_jobs, user_key)

URL = "https://vs-code-{uuid}.preview.example/{uuid}/"
# no session-manager here: actions that wait for it answer 202 (queued) after 300 ms
ENV = dict(FAST, ATELIER_WORKSPACE_URL=URL, ATELIER_REPLY_TIMEOUT_MS="300")
STATUS_FIELDS = {"user_id", "status", "created_at", "last_activity", "tier", "cpu_millis",
                 "memory_mb", "status_message", "last_activity_kind", "oom_kills", "memory_bytes",
                 "disk_used_bytes", "disk_total_bytes"}


def create(stack, headers, **body):
    return stack.post("/session/create", json=body, headers=headers)


def new_session(stack, headers=None, user_id=None):
    body = {"user_id": user_id or "c%s@example.com" % uuid.uuid4().hex[:8]}
    r = create(stack, headers or stack.admin_headers(), **body)
    assert r.status_code == 201, r.text
    return r.json()


def post(stack, uuid_, action, headers=None, **kw):
    return stack.post("/session/%s/%s" % (uuid_, action),
                      headers=headers or stack.admin_headers(), **kw)


# ---- create --------------------------------------------------------------------


def test_create_makes_user_default_workspace_session_job_and_audit(stack):
    stack.start("gateway", env=ENV)
    r = create(stack, stack.admin_headers(), user_id="john@example.com")
    assert r.status_code == 201, r.text
    s = r.json()
    assert set(s) == {"uuid", "user_id", "status", "created_at", "workspace_url"}
    assert UUID4.match(s["uuid"]) and s["user_id"] == "john@example.com"
    assert s["status"] == "created" and ISO.match(s["created_at"])
    assert s["workspace_url"] == URL.replace("{uuid}", s["uuid"])

    users = stack.query("SELECT id, username, email, external_id, password_hash, is_admin "
                        "FROM users")
    assert len(users) == 1
    uid = users[0][0]
    assert users[0][1:] == ("john@example.com", "john@example.com", "john@example.com", None,
                            False)
    [(ws_id, ws_name)] = stack.query("SELECT id::text, name FROM workspaces WHERE user_id = %s",
                                     uid)
    assert ws_name == "workspace"
    assert_default_file(stack, ws_id)
    row = session_row(stack, s["uuid"])
    assert row["user_id"] == uid and row["workspace_id"] == ws_id
    assert (row["status"], row["tier"], row["cpu_millis"], row["memory_mb"]) == (
        "initializing", "standard", 1000, 1024)

    [(job_id,)] = stack.query("SELECT id::text FROM jobs")
    assert_job(stack, job_id, "start", s["uuid"],
               {"workspace_id": ws_id, "tier": "standard", "cpu_millis": 1000, "memory_mb": 1024,
                "user_id": uid})

    [a] = stack.audit("session.create")
    assert a["actor"] == "key:bootstrap" and a["target"] == s["uuid"] and a["ip"] in LOOPBACK
    assert a["detail"]["user_id"] == uid and a["detail"]["workspace_created"] is True
    assert a["detail"]["job_id"] == job_id and a["detail"]["tier"] == "standard"
    [u] = stack.audit("user.create")
    assert u["target"] == str(uid) and u["detail"]["external_id"] == "john@example.com"


def test_second_create_reuses_the_user_and_default_workspace(stack):
    stack.start("gateway", env=ENV)
    first = new_session(stack, user_id="amy@example.com")
    second = new_session(stack, user_id="amy@example.com")
    assert first["uuid"] != second["uuid"]
    assert stack.query("SELECT count(*) FROM users") == [(1,)]
    [(ws_id,)] = stack.query("SELECT id::text FROM workspaces")
    assert session_row(stack, first["uuid"])["workspace_id"] == ws_id
    assert session_row(stack, second["uuid"])["workspace_id"] == ws_id
    assert_default_file(stack, ws_id)  # once, version 1: not re-created
    audits = stack.audit("session.create")
    assert [a["detail"]["workspace_created"] for a in audits] == [True, False]
    assert len(stack.audit("user.create")) == 1
    assert [j["kind"] for j in stream_jobs(stack)] == ["start", "start"]


def test_concurrent_first_creates_make_one_user_and_one_workspace(stack):
    stack.start("gateway", env=ENV)
    results = []

    def one():
        results.append(create(stack, stack.admin_headers(), user_id="rush@example.com"))

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [201] * 16, [r.text for r in results]
    assert len({r.json()["uuid"] for r in results}) == 16
    assert stack.query("SELECT count(*) FROM users") == [(1,)]
    [(ws_id,)] = stack.query("SELECT id::text FROM workspaces")
    assert_default_file(stack, ws_id)
    assert stack.query("SELECT count(DISTINCT workspace_id), count(*) FROM code_sessions") == [
        (1, 16)]
    assert len(stack.audit("user.create")) == 1 and len(stack.audit("session.create")) == 16
    assert len(stream_jobs(stack)) == 16


def test_create_racing_a_registration_of_the_same_email_finds_that_user(stack):
    """The create's snapshot has no such user, so it inserts one, and waits
    on the e-mail index for the registration in flight; once that commits,
    the create runs again and attaches to the registered user."""
    stack.start("gateway", env=ENV)
    conn = stack.db()
    conn.autocommit = False
    cur = conn.cursor()
    cur.execute("INSERT INTO users (username, email) VALUES ('racer', 'racer@example.com') "
                "RETURNING id")
    racer = cur.fetchone()[0]
    results = []
    t = threading.Thread(target=lambda: results.append(
        create(stack, stack.admin_headers(), user_id="racer@example.com")))
    t.start()
    t.join(0.5)
    assert t.is_alive()  # blocked on the uncommitted row
    conn.commit()
    conn.close()
    t.join(10)
    [r] = results
    assert r.status_code == 201, r.text
    assert session_row(stack, r.json()["uuid"])["user_id"] == racer
    assert stack.query("SELECT count(*) FROM users") == [(1,)]
    assert stack.audit("user.create") == []


def test_create_for_a_non_email_id_and_for_a_registered_user(stack):
    stack.start("gateway", env=ENV)
    s = new_session(stack, user_id="customer-42")
    assert s["user_id"] == "customer-42"
    assert stack.query("SELECT username, email, external_id FROM users") == [
        ("customer-42", "customer-42@users.invalid", "customer-42")]

    # a user who registered: the service key's user_id (their e-mail) finds them
    user, h = stack.new_user()
    s = new_session(stack, user_id=user["email"].upper())
    row = session_row(stack, s["uuid"])
    assert row["user_id"] == user["id"]
    assert stack.query("SELECT count(*) FROM users") == [(2,)]
    # and they see it with their own token
    r = stack.get("/session/%s/status" % s["uuid"], headers=h)
    assert r.status_code == 200 and r.json()["session"]["user_id"] == user["email"]


def test_a_user_creates_only_for_themself(stack):
    stack.start("gateway", env=ENV)
    user, h = stack.new_user()
    other, _ = stack.new_user()
    r = stack.post("/session/create", headers=h)  # no body: for the caller
    assert r.status_code == 201, r.text
    assert r.json()["user_id"] == user["email"]
    assert session_row(stack, r.json()["uuid"])["user_id"] == user["id"]
    r = create(stack, h, user_id=user["email"])
    assert r.status_code == 201 and session_row(stack, r.json()["uuid"])["user_id"] == user["id"]
    assert stack.query("SELECT count(*) FROM workspaces") == [(1,)]

    before = counts(stack)
    for someone in (other["email"], "stranger@example.com", "x"):
        r = create(stack, h, user_id=someone)
        assert r.status_code == 403, (someone, r.text)
    r = create(stack, user_key(stack, user["id"]), user_id=other["email"])
    assert r.status_code == 403
    assert counts(stack) == before
    # a service key that is not the bootstrap one acts for anyone it names
    r = create(stack, user_key(stack, None), user_id=other["email"])
    assert r.status_code == 201 and session_row(stack, r.json()["uuid"])["user_id"] == other["id"]


def test_create_rejects_bad_input_without_changing_anything(stack):
    stack.start("gateway", env=ENV)
    before = counts(stack)
    jh = dict(stack.admin_headers(), **{"Content-Type": "application/json"})
    cases = [
        (b"", 422),  # a service key must name the user
        (b"{}", 422),
        (b'{"user_id": null}', 422),
        (b'{"user_id": ', 400),
        (b"[]", 422),
        (json.dumps({"user_id": 42}).encode(), 422),
        (json.dumps({"user_id": ["a"]}).encode(), 422),
        (json.dumps({"user_id": ""}).encode(), 422),
        (json.dumps({"user_id": "x" * 256}).encode(), 422),
        (json.dumps({"user_id": "bad\u0001id"}).encode(), 422),
        (json.dumps({"user_id": "tab\there"}).encode(), 422),
    ]
    for body, status in cases:
        r = stack.post("/session/create", data=body, headers=jh)
        assert r.status_code == status, (body, r.status_code, r.text)
        assert isinstance(r.json()["detail"], str)
    assert counts(stack) == before
    # 255 bytes is fine
    assert create(stack, stack.admin_headers(), user_id="y" * 255).status_code == 201


# ---- status and list ---------------------------------------------------------------


def test_status_reports_session_replicas_and_queue_length(stack):
    stack.start("gateway", env=ENV)
    s = new_session(stack, user_id="q@example.com")
    r = stack.get("/session/%s/status" % s["uuid"], headers=stack.admin_headers())
    assert r.status_code == 200, r.text
    st = r.json()
    assert set(st) == {"uuid", "session", "replicas", "queue_length"}
    assert set(st["session"]) == STATUS_FIELDS
    assert st["uuid"] == s["uuid"] and st["replicas"] == 1 and st["queue_length"] == 1
    inner = st["session"]
    assert inner["user_id"] == "q@example.com" and inner["status"] == "initializing"
    assert inner["created_at"] == s["created_at"] and ISO.match(inner["last_activity"])
    assert (inner["tier"], inner["cpu_millis"], inner["memory_mb"]) == ("standard", 1000, 1024)

    post(stack, s["uuid"], "sleep")
    post(stack, s["uuid"], "wake")
    st = stack.get("/session/%s/status" % s["uuid"], headers=stack.admin_headers()).json()
    assert st["queue_length"] == 3
    stack.query("UPDATE jobs SET state = 'done' WHERE kind = 'start'")
    stack.query("UPDATE jobs SET state = 'running' WHERE kind = 'sleep'")
    stack.query("UPDATE code_sessions SET replicas = 0, status = 'sleeping'")
    st = stack.get("/session/%s/status" % s["uuid"], headers=stack.admin_headers()).json()
    assert st["queue_length"] == 2 and st["replicas"] == 0
    assert st["session"]["status"] == "sleeping"


def test_list_shows_live_sessions_the_caller_may_see(stack):
    stack.start("gateway", env=ENV)
    user, h = stack.new_user()
    mine = stack.post("/session/create", headers=h).json()
    other = new_session(stack, user_id="other@example.com")
    gone = new_session(stack, user_id="other@example.com")
    stack.query("UPDATE code_sessions SET status = 'terminated' WHERE uuid = %s", gone["uuid"])

    r = stack.get("/sessions", headers=stack.admin_headers())
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"sessions", "count"} and body["count"] == 2
    assert [x["uuid"] for x in body["sessions"]] == [other["uuid"], mine["uuid"]]
    item = body["sessions"][0]
    assert set(item) == {"uuid", "user_id", "status", "replicas", "tier", "created_at",
                         "last_activity", "workspace_url"}
    assert item["user_id"] == "other@example.com" and item["status"] == "initializing"
    assert item["replicas"] == 1 and item["tier"] == "standard"
    assert item["workspace_url"] == URL.replace("{uuid}", other["uuid"])
    assert item["created_at"] == other["created_at"]

    r = stack.get("/sessions", headers=h).json()
    assert r["count"] == 1 and r["sessions"][0]["uuid"] == mine["uuid"]
    assert r["sessions"][0]["user_id"] == user["email"]
    nobody, hn = stack.new_user()
    assert stack.get("/sessions", headers=hn).json() == {"sessions": [], "count": 0}
    assert stack.get("/sessions").status_code == 401


# ---- delete -------------------------------------------------------------------------


def test_delete_queues_backup_then_cleanup_once(stack):
    stack.start("gateway", env=ENV)
    s = new_session(stack)
    ws_id = session_row(stack, s["uuid"])["workspace_id"]
    r = stack.request("DELETE", "/session/" + s["uuid"], headers=stack.admin_headers())
    assert r.status_code == 202, r.text
    d = r.json()
    assert d == {"uuid": s["uuid"], "status": "terminating", "job_id": d["job_id"],
                 "message": "Session deletion queued (backup, then cleanup)"}
    assert session_row(stack, s["uuid"])["status"] == "terminating"
    assert_job(stack, d["job_id"], "delete", s["uuid"], {"workspace_id": ws_id, "backup": True})
    [a] = stack.audit("session.delete")
    assert a["actor"] == "key:bootstrap" and a["target"] == s["uuid"]
    assert_default_file(stack, ws_id)

    before = counts(stack)
    r = stack.request("DELETE", "/session/" + s["uuid"], headers=stack.admin_headers())
    assert r.status_code == 202 and r.json() == d
    assert counts(stack) == before
    # the FastAPI family sees the same record
    got = stack.get("/api/sessions/" + s["uuid"], headers=stack.admin_headers()).json()
    assert got["status"] == "terminating" and got["job_id"] == d["job_id"]
    stack.query("UPDATE code_sessions SET status = 'terminated' WHERE uuid = %s", s["uuid"])
    assert stack.request("DELETE", "/session/" + s["uuid"],
                         headers=stack.admin_headers()).status_code == 404
    assert stack.get("/sessions", headers=stack.admin_headers()).json()["count"] == 0


# ---- sleep, wake, scale ----------------------------------------------------------------


def test_sleep_wake_and_scale_are_queued_not_claimed_done(stack):
    stack.start("gateway", env=ENV)
    s = new_session(stack)
    ws_id = session_row(stack, s["uuid"])["workspace_id"]
    expected = [
        ("sleep", None, "sleep", "sleep", {}),
        ("wake", None, "wake", "wake", {}),
        ("scale", {"scale": "up"}, "scale_up", "scale",
         {"scale": "up", "tier": "large", "cpu_millis": 2000, "memory_mb": 2048}),
        ("scale", {"scale": "down"}, "scale_down", "scale",
         {"scale": "down", "tier": "standard", "cpu_millis": 1000, "memory_mb": 1024}),
    ]
    for path, body, action, kind, args in expected:
        r = post(stack, s["uuid"], path, json=body)
        assert r.status_code == 202, r.text
        a = r.json()
        assert set(a) == {"uuid", "action", "status", "job_id", "message"}
        assert a["uuid"] == s["uuid"] and a["action"] == action and a["status"] == "queued"
        assert UUID4.match(a["job_id"]) and a["message"]
        assert_job(stack, a["job_id"], kind, s["uuid"], dict(args, workspace_id=ws_id))
        audit = stack.audit("session." + kind)[-1]
        assert audit["target"] == s["uuid"] and audit["actor"] == "key:bootstrap"
        assert audit["detail"]["job_id"] == a["job_id"]
    # the record is untouched: only the session manager changes it
    row = session_row(stack, s["uuid"])
    assert (row["status"], row["tier"], row["cpu_millis"], row["replicas"]) == (
        "initializing", "standard", 1000, 1)
    assert [j["kind"] for j in stream_jobs(stack)] == ["start", "sleep", "wake", "scale", "scale"]
    # a sleep body, if any, is not read
    assert post(stack, s["uuid"], "sleep", json={"anything": 1}).status_code == 202


def test_scale_rejects_unknown_values_without_changing_anything(stack):
    stack.start("gateway", env=ENV)
    s = new_session(stack)
    before = counts(stack)
    jh = dict(stack.admin_headers(), **{"Content-Type": "application/json"})
    for body, status in ((b'{"scale": "sideways"}', 422), (b'{"scale": "UP"}', 422),
                         (b'{"scale": 1}', 422), (b"{}", 422), (b"", 422), (b"[]", 422),
                         (b'{"scale": ', 400)):
        r = stack.post("/session/%s/scale" % s["uuid"], data=body, headers=jh)
        assert r.status_code == status, (body, r.text)
        assert "detail" in r.json()
    assert counts(stack) == before


def test_actions_on_a_session_going_away_are_409(stack):
    stack.start("gateway", env=ENV)
    s = new_session(stack)
    stack.request("DELETE", "/session/" + s["uuid"], headers=stack.admin_headers())
    before = counts(stack)
    for status in ("terminating", "terminated"):
        stack.query("UPDATE code_sessions SET status = %s", status)
        for path, body in (("sleep", None), ("wake", None), ("scale", {"scale": "up"}),
                           ("chat", {"message": "hi"})):
            r = post(stack, s["uuid"], path, json=body)
            assert r.status_code == 409, (status, path, r.text)
            assert status in r.json()["detail"]
        r = stack.post("/workspace/%s/shutdown" % s["uuid"], headers=stack.admin_headers())
        assert r.status_code == 409
    assert counts(stack) == before


# ---- chat ---------------------------------------------------------------------------------


def test_chat_records_the_message_and_queues_a_job(stack):
    stack.start("gateway", env=ENV)
    user, h = stack.new_user()
    s = stack.post("/session/create", headers=h).json()
    ws_id = session_row(stack, s["uuid"])["workspace_id"]
    text = "Hello!\nÜnïcode ✓ " + "x" * 1000
    r = post(stack, s["uuid"], "chat", headers=h, json={"message": text})
    assert r.status_code == 202, r.text
    c = r.json()
    assert set(c) == {"uuid", "message_id", "job_id", "status"}
    assert c["uuid"] == s["uuid"] and c["status"] == "queued" and isinstance(c["message_id"], int)
    rows = stack.query("SELECT session_uuid, user_id, role, message, job_id::text FROM "
                       "chat_messages WHERE id = %s", c["message_id"])
    assert rows == [(s["uuid"], user["id"], "user", text, c["job_id"])]
    assert_job(stack, c["job_id"], "chat", s["uuid"],
               {"workspace_id": ws_id, "message_id": c["message_id"]})
    [a] = stack.audit("session.chat")
    assert a["actor"] == "user:%d" % user["id"] and a["user_id"] == user["id"]
    assert a["detail"]["message_id"] == c["message_id"]
    assert text not in json.dumps(a)  # the text itself stays out of the audit log

    big = "y" * 60000
    r = post(stack, s["uuid"], "chat", headers=h, json={"message": big})
    assert r.status_code == 202
    assert stack.query("SELECT length(message) FROM chat_messages WHERE id = %s",
                       r.json()["message_id"]) == [(60000,)]


def test_chat_rejects_bad_messages_without_changing_anything(stack):
    stack.start("gateway", env=ENV)
    s = new_session(stack)
    before = counts(stack)
    jh = dict(stack.admin_headers(), **{"Content-Type": "application/json"})
    for body, status in ((b'{"message": ""}', 422), (b"{}", 422), (b'{"message": 5}', 422),
                         (b'{"message": null}', 422), (b'{"msg": "hi"}', 422), (b"", 422),
                         (b'{"message": "hi"', 400),
                         (json.dumps({"message": "z" * 70000}).encode(), 413)):
        r = stack.post("/session/%s/chat" % s["uuid"], data=body, headers=jh)
        assert r.status_code == status, (body[:40], r.status_code, r.text)
        assert "detail" in r.json()
    assert counts(stack) == before


# ---- workspace shutdown ------------------------------------------------------------------


def test_shutdown_by_session_uuid_or_workspace_id(stack):
    stack.start("gateway", env=ENV)
    user, h = stack.new_user()
    s = stack.post("/session/create", headers=h).json()
    ws_id = session_row(stack, s["uuid"])["workspace_id"]
    for ref in (s["uuid"], ws_id, ws_id.upper()):
        r = stack.post("/workspace/%s/shutdown" % ref, headers=h)
        assert r.status_code == 202, r.text
        body = r.json()
        assert body == {"success": True, "message": "Workspace shutdown queued",
                        "workspace_id": ws_id, "session_id": s["uuid"], "job_id": body["job_id"]}
        assert_job(stack, body["job_id"], "shutdown", s["uuid"], {"workspace_id": ws_id})
        a = stack.audit("workspace.shutdown")[-1]
        assert a["target"] == ws_id and a["actor"] == "user:%d" % user["id"]
        assert a["detail"] == {"session": s["uuid"], "job_id": body["job_id"]}
    assert session_row(stack, s["uuid"])["status"] == "initializing"

    # the named session wins over a newer one on the same workspace
    newer = stack.post("/session/create", headers=h).json()
    r = stack.post("/workspace/%s/shutdown" % s["uuid"], headers=h)
    assert r.json()["session_id"] == s["uuid"]
    r = stack.post("/workspace/%s/shutdown" % ws_id, headers=h)
    assert r.json()["session_id"] == newer["uuid"]
    assert job_row(stack, r.json()["job_id"])["session"] == newer["uuid"]

    # nothing live: 409
    stack.query("UPDATE code_sessions SET status = 'terminated'")
    before = counts(stack)
    r = stack.post("/workspace/%s/shutdown" % ws_id, headers=h)
    assert r.status_code == 409 and "no live session" in r.json()["detail"]
    assert counts(stack) == before


def test_shutdown_bad_or_foreign_ids(stack):
    stack.start("gateway", env=ENV)
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    s = stack.post("/session/create", headers=ha).json()
    ws_id = session_row(stack, s["uuid"])["workspace_id"]
    before = counts(stack)
    for ref in (s["uuid"], ws_id):
        r = stack.post("/workspace/%s/shutdown" % ref, headers=hb)
        assert r.status_code == 404 and r.json() == {"detail": "Workspace not found"}
    assert stack.post("/workspace/%s/shutdown" % uuid.uuid4(), headers=ha).status_code == 404
    assert stack.post("/workspace/not-an-id/shutdown", headers=ha).status_code == 422
    assert stack.post("/workspace/%s/shutdown" % s["uuid"]).status_code == 401
    assert counts(stack) == before


# ---- ownership across every endpoint -------------------------------------------------------


def test_another_users_session_is_404_everywhere_and_unchanged(stack):
    stack.start("gateway", env=ENV)
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    s = stack.post("/session/create", headers=ha).json()
    u = s["uuid"]
    before = counts(stack)
    calls = [("GET", "/session/%s/status" % u, None), ("DELETE", "/session/" + u, None),
             ("POST", "/session/%s/sleep" % u, None), ("POST", "/session/%s/wake" % u, None),
             ("POST", "/session/%s/scale" % u, {"scale": "up"}),
             ("POST", "/session/%s/chat" % u, {"message": "hi"}),
             ("POST", "/workspace/%s/shutdown" % u, None)]
    for headers in (hb, user_key(stack, b["id"])):
        for method, path, body in calls:
            r = stack.request(method, path, json=body, headers=headers)
            assert r.status_code == 404, (method, path, r.text)
    for method, path, body in calls:
        assert stack.request(method, path, json=body).status_code == 401, path
        assert stack.request(method, path, json=body,
                             headers={"X-API-Key": "nope"}).status_code == 401, path
    assert counts(stack) == before
    assert stack.get("/sessions", headers=hb).json()["count"] == 0
    # the owner and the service key reach it
    assert stack.get("/session/%s/status" % u, headers=ha).status_code == 200
    assert stack.get("/session/%s/status" % u, headers=stack.admin_headers()).status_code == 200


def test_malformed_and_unknown_session_ids(stack):
    stack.start("gateway", env=ENV)
    new_session(stack)
    before = counts(stack)
    for bad in ("nope", "123", "g" * 8, "abcd12345", str(uuid.uuid4())[:-1] + "x"):
        for method, path, body in (("GET", "/session/%s/status", None),
                                   ("DELETE", "/session/%s", None),
                                   ("POST", "/session/%s/sleep", None),
                                   ("POST", "/session/%s/wake", None),
                                   ("POST", "/session/%s/scale", {"scale": "up"}),
                                   ("POST", "/session/%s/chat", {"message": "hi"})):
            r = stack.request(method, path % bad, json=body, headers=stack.admin_headers())
            assert r.status_code == 422, (method, path % bad, r.text)
            assert "detail" in r.json()
    unknown = str(uuid.uuid4())
    for method, path, body in (("GET", "/session/%s/status", None),
                               ("DELETE", "/session/%s", None),
                               ("POST", "/session/%s/sleep", None),
                               ("POST", "/session/%s/scale", {"scale": "down"}),
                               ("POST", "/session/%s/chat", {"message": "hi"})):
        r = stack.request(method, path % unknown, json=body, headers=stack.admin_headers())
        assert r.status_code == 404 and r.json() == {"detail": "Session not found"}
    assert counts(stack) == before


def test_short_8_hex_session_ids_are_accepted(stack):
    stack.start("gateway", env=ENV)
    s = new_session(stack)
    stack.query("UPDATE code_sessions SET uuid = '1823b3a8' WHERE uuid = %s", s["uuid"])
    r = stack.get("/session/1823b3a8/status", headers=stack.admin_headers())
    assert r.status_code == 200 and r.json()["uuid"] == "1823b3a8"
    r = post(stack, "1823B3A8", "sleep")
    assert r.status_code == 202 and r.json()["uuid"] == "1823b3a8"
    assert job_row(stack, r.json()["job_id"])["session"] == "1823b3a8"
