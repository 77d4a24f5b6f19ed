"""The authorization matrix: every record endpoint x {no credentials, a
wrong key, another user, the owner, the service API key}. Another user's
session, workspace or file is 404 (existence is not revealed); naming
another user in ?user_id= is 403; no or bad credentials are 401."""
import io
import uuid

import pytest

NO_CREDS, BAD_KEY, OTHER, OWNER, SERVICE = "none", "badkey", "other", "owner", "service"


@pytest.fixture
def world(stack):
    # no session-manager: actions that wait for it answer 202 after 200 ms
    stack.start("gateway", env={"ATELIER_REPLY_TIMEOUT_MS": "200"})
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    r = stack.post("/api/sessions", json={"name": "a1"}, headers=ha)
    assert r.status_code == 201, r.text
    s = r.json()
    r = stack.post("/api/keys", json={"name": "a-key"}, headers=ha)
    assert r.status_code == 201, r.text
    return {"stack": stack, "a": a, "b": b, "ha": ha, "hb": hb, "s": s, "key": r.json(),
            "creds": {NO_CREDS: {}, BAD_KEY: {"X-API-Key": "atk_wrong"}, OTHER: hb, OWNER: ha,
                      SERVICE: stack.admin_headers()}}


def fresh_session(w):
    r = w["stack"].post("/api/sessions", json={"name": "x"}, headers=w["ha"])
    assert r.status_code == 201, r.text
    return r.json()["uuid"]


def fill(path, w):
    return (path.replace("{uuid}", w["s"]["uuid"]).replace("{ws}", w["s"]["workspace_id"])
            .replace("{a}", str(w["a"]["id"])).replace("{job}", w["s"]["job_id"])
            .replace("{key}", str(w["key"]["id"])))


# (method, path, body kind, body, expected for OTHER, for OWNER, for SERVICE)
# body kind: json | raw | files | None
CASES = [
    ("GET", "/api/users/me", None, None, 200, 200, 404),
    ("GET", "/api/users", None, None, 403, 403, 200),
    ("GET", "/api/keys", None, None, 200, 200, 200),
    ("DELETE", "/api/keys/{key}", None, None, 404, 200, 404),  # revoked by then
    ("GET", "/api/jobs/{job}", None, None, 404, 200, 200),
    ("GET", "/api/sessions?user_id={a}", None, None, 403, 200, 200),
    ("GET", "/api/sessions/{uuid}", None, None, 404, 200, 200),
    ("GET", "/api/sessions/{uuid}?user_id={a}", None, None, 403, 200, 200),
    ("POST", "/api/sessions", "json", {"name": "m", "user_id": "{a}"}, 403, 201, 201),
    ("GET", "/session/{uuid}/status", None, None, 404, 200, 200),
    ("GET", "/sessions", None, None, 200, 200, 200),
    ("POST", "/session/{uuid}/sleep", None, None, 404, 202, 202),
    ("POST", "/session/{uuid}/wake", None, None, 404, 202, 202),
    ("POST", "/session/{uuid}/scale", "json", {"scale": "up"}, 404, 202, 202),
    ("POST", "/session/{uuid}/chat", "json", {"message": "hi"}, 404, 202, 202),
    ("POST", "/workspace/{uuid}/shutdown", None, None, 404, 202, 202),
    ("GET", "/api/workspace/{uuid}/files", None, None, 404, 200, 200),
    ("GET", "/api/workspace/{ws}/files", None, None, 404, 200, 200),
    ("GET", "/api/workspace/{uuid}/files/script.py", None, None, 404, 200, 200),
    ("PUT", "/api/workspace/{uuid}/files/m.py", "json", {"content": "x = 1\n"}, 404, 200, 200),
    ("DELETE", "/api/workspace/{uuid}/files/m.py", None, None, 404, 200, 404),
    ("GET", "/api/workspace/{uuid}/file/script.py", None, None, 404, 200, 200),
    ("POST", "/api/workspace/{uuid}/file/n.py", "json", {"content": "y = 2\n"}, 404, 200, 200),
    ("DELETE", "/api/workspace/{uuid}/file/n.py", None, None, 404, 200, 404),
    ("GET", "/api/workspace/{uuid}/status", None, None, 404, 200, 200),
    ("POST", "/api/workspace/{uuid}/ensure-defaults", None, None, 404, 200, 200),
    ("POST", "/api/workspace/{uuid}/ensure-default", None, None, 404, 200, 200),
    ("POST", "/api/workspace/{uuid}/folders", "json", {"path": "dir"}, 404, 201, 200),
    ("POST", "/api/workspace/{uuid}/move", "json", {"from": "script.py", "to": "dir/s.py"},
     404, 200, 404),
    ("POST", "/api/workspace/{uuid}/upload", "files", {"files": ("up.txt", b"up\n")},
     404, 201, 201),
    ("GET", "/api/workspace/{uuid}/download/up.txt", None, None, 404, 200, 200),
    ("GET", "/api/workspace/{uuid}/download", None, None, 404, 200, 200),
]


def call(w, method, path, kind, body, who):
    st = w["stack"]
    kw = {"headers": dict(w["creds"][who])}
    if kind == "json":
        kw["json"] = {k: (int(fill(v, w)) if v == "{a}" else v) for k, v in body.items()}
    elif kind == "files":
        kw["files"] = {k: (n, io.BytesIO(d)) for k, (n, d) in body.items()}
    return st.request(method, fill(path, w), **kw)


def test_matrix(world):
    w = world
    st = w["stack"]
    failures = []
    for method, path, kind, body, other, owner, service in CASES:
        for who, want in ((NO_CREDS, 401), (BAD_KEY, 401), (OTHER, other), (OWNER, owner),
                          (SERVICE, service)):
            before = st.query("SELECT count(*) FROM audit_log")[0][0]
            r = call(w, method, path, kind, body, who)
            if r.status_code != want:
                failures.append("%s %s as %s: %d (want %d) %s" % (method, path, who,
                                                                  r.status_code, want,
                                                                  r.text[:120]))
            if r.status_code >= 400:
                assert r.headers["content-type"].startswith("application/json"), (method, path)
                assert "detail" in r.json()
                after = st.query("SELECT count(*) FROM audit_log")[0][0]
                if after != before and not path.startswith("/api/users"):
                    failures.append("%s %s as %s: refused but wrote audit rows" % (method, path,
                                                                                   who))
    assert not failures, "\n".join(failures)


def test_delete_matrix(world):
    """DELETE of a session: everyone but the owner and the service key is
    refused, and the session stays as it was."""
    w = world
    st = w["stack"]
    for who, want in ((NO_CREDS, 401), (BAD_KEY, 401), (OTHER, 404)):
        for path in ("/api/sessions/{u}", "/session/{u}"):
            u = fresh_session(w)
            r = st.request("DELETE", path.replace("{u}", u), headers=w["creds"][who])
            assert r.status_code == want, (who, path, r.text)
            assert st.query("SELECT status FROM code_sessions WHERE uuid = %s", u)[0][0] \
                == "initializing"
    for who in (OWNER, SERVICE):
        for path in ("/api/sessions/{u}", "/session/{u}"):
            u = fresh_session(w)
            r = st.request("DELETE", path.replace("{u}", u), headers=w["creds"][who])
            assert r.status_code == 202, (who, path, r.text)
            assert st.query("SELECT status FROM code_sessions WHERE uuid = %s", u)[0][0] \
                == "terminating"


def test_other_users_listing_never_shows_my_sessions(world):
    w = world
    st = w["stack"]
    mine = w["s"]["uuid"]
    r = st.get("/sessions", headers=w["hb"])
    assert mine not in r.text
    r = st.get("/api/sessions", headers=w["hb"])
    assert r.status_code == 200 and mine not in r.text
    r = st.get("/api/sessions", headers=w["ha"])
    assert mine in r.text
    r = st.get("/sessions", headers=st.admin_headers())
    assert mine in r.text


def test_compat_mode_allows_user_id_only_on_seed_routes(stack):
    stack.start("gateway", env={"ATELIER_AUTH": "compat"})
    a, ha = stack.new_user()
    s = stack.post("/api/sessions", json={"name": "c"}, headers=ha).json()
    uid = a["id"]
    r = stack.get("/api/sessions?user_id=%d" % uid)
    assert r.status_code == 200 and s["uuid"] in r.text
    r = stack.get("/api/workspace/%s/files?user_id=%d" % (s["uuid"], uid))
    assert r.status_code == 200
    r = stack.get("/api/workspace/%s/files?user_id=%d" % (s["uuid"], uid + 1000))
    assert r.status_code == 404
    assert stack.get("/api/keys?user_id=%d" % uid).status_code == 401
    assert stack.get("/api/users/me?user_id=%d" % uid).status_code == 401


def test_strict_mode_refuses_user_id_only(stack):
    stack.start("gateway")
    a, ha = stack.new_user()
    s = stack.post("/api/sessions", json={"name": "c"}, headers=ha).json()
    r = stack.get("/api/sessions?user_id=%d" % a["id"])
    assert r.status_code == 401
    r = stack.get("/api/workspace/%s/files?user_id=%d" % (s["uuid"], a["id"]))
    assert r.status_code == 401


def test_unique_ids_are_not_guessable_cross_user(world):
    """A random UUID and another user's UUID answer the same 404."""
    w = world
    st = w["stack"]
    r1 = st.get("/api/sessions/%s" % uuid.uuid4(), headers=w["hb"])
    r2 = st.get("/api/sessions/%s" % w["s"]["uuid"], headers=w["hb"])
    assert r1.status_code == r2.status_code == 404
    assert r1.json() == r2.json()
