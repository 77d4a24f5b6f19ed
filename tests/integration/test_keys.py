"""API keys: create (bound, service, admin), list, revoke; keys are stored
hashed and act only within their scope. Real gateway, PostgreSQL and Redis."""
import hashlib
import re
import time

import requests

from harness import free_port

FAST = {"ATELIER_BCRYPT_COST": "4", "ATELIER_LOGIN_RATE_PER_MIN": "1000"}
# req_ip() answers the IPv4-mapped form on a dual-stack listener
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CREATED_FIELDS = {"id", "name", "key", "prefix", "user_id", "is_admin", "created_at",
                  "expires_at"}
LISTED_FIELDS = {"id", "name", "prefix", "user_id", "is_admin", "created_at", "expires_at",
                 "last_used_at", "revoked_at"}


def key_headers(key):
    return {"X-API-Key": key}


def create(stack, headers, **body):
    return stack.post("/api/keys", json=body, headers=headers)


def tables(stack):
    return [t for (t,) in stack.query("SELECT tablename FROM pg_tables WHERE schemaname = "
                                      "'public'")]


def stored_anywhere(stack, text):
    """Tables holding text in any column of any row."""
    return [t for t in tables(stack)
            if stack.query("SELECT count(*) FROM %s x WHERE x::text LIKE %%s" % t,
                           "%" + text + "%")[0][0]]


def test_user_creates_a_key_bound_to_themself(stack):
    gw = stack.start("gateway", env=FAST)
    user, headers = stack.new_user()
    r = create(stack, headers, name="laptop")
    assert r.status_code == 201, r.text
    k = r.json()
    assert set(k) == CREATED_FIELDS
    assert k["key"].startswith("atk_") and len(k["key"]) == 4 + 43  # 32 random bytes
    assert k["prefix"] == k["key"][:12]
    assert k["user_id"] == user["id"] and k["is_admin"] is False and k["name"] == "laptop"
    assert ISO.match(k["created_at"]) and k["expires_at"] is None

    rows = stack.query("SELECT key_hash, prefix, user_id, is_admin FROM api_keys")
    assert rows == [(hashlib.sha256(k["key"].encode()).hexdigest(), k["prefix"], user["id"],
                     False)]
    # the secret is nowhere: not in any table, not in the log
    assert stored_anywhere(stack, k["key"]) == []
    assert stored_anywhere(stack, k["key"][12:]) == []
    assert k["key"] not in gw.log()

    [row] = stack.audit("key.create")
    assert row["actor"] == "user:%d" % user["id"] and row["user_id"] == user["id"]
    assert row["ip"] in LOOPBACK and row["target"] == "key:%d" % k["id"]
    assert row["detail"]["name"] == "laptop" and row["detail"]["key_user_id"] == user["id"]

    # the key acts as its user
    r = stack.get("/api/users/me", headers=key_headers(k["key"]))
    assert r.status_code == 200 and r.json() == user
    # ...and only as its user
    assert stack.get("/api/users", headers=key_headers(k["key"])).status_code == 403
    # keys made with a key stay bound to the same user
    r = create(stack, key_headers(k["key"]), name="from a key")
    assert r.status_code == 201 and r.json()["user_id"] == user["id"]
    actor = stack.audit("key.create")[-1]["actor"]
    assert actor == "key:%d" % k["id"]


def test_a_key_bound_to_one_user_cannot_reach_another(stack):
    stack.start("gateway", env=FAST)
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    key_a = create(stack, ha, name="a").json()["key"]
    r = stack.get("/api/users/me", headers=key_headers(key_a))
    assert r.status_code == 200 and r.json()["id"] == a["id"] and r.json() != b
    assert stack.get("/api/users/me?user_id=%d" % b["id"],
                     headers=key_headers(key_a)).json()["id"] == a["id"]
    r = stack.get("/api/keys?user_id=%d" % b["id"], headers=key_headers(key_a))
    assert r.status_code == 403
    r = create(stack, key_headers(key_a), name="for b", user_id=b["id"])
    assert r.status_code == 403
    assert count_keys(stack) == 1


def count_keys(stack):
    return stack.query("SELECT count(*) FROM api_keys")[0][0]


def test_only_admins_make_admin_service_or_foreign_keys(stack):
    stack.start("gateway", env=FAST)
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    r = create(stack, ha, name="x", is_admin=True)
    assert r.status_code == 403 and "admin" in r.json()["detail"]
    r = create(stack, ha, name="x", user_id=b["id"])
    assert r.status_code == 403
    r = create(stack, ha, name="x", user_id=a["id"])  # naming yourself is fine
    assert r.status_code == 201 and r.json()["user_id"] == a["id"]
    assert count_keys(stack) == 1

    admin = stack.admin_headers()
    # a service key: bound to nobody, acts for the users it names
    svc = create(stack, admin, name="ci")
    assert svc.status_code == 201, svc.text
    assert svc.json()["user_id"] is None and svc.json()["is_admin"] is False
    r = stack.get("/api/users/me", headers=key_headers(svc.json()["key"]))
    assert r.status_code == 404 and r.json()["detail"] == "This API key is not bound to a user"
    assert stack.get("/api/users", headers=key_headers(svc.json()["key"])).status_code == 403
    # a non-admin service key may not mint another service key or an admin key
    assert create(stack, key_headers(svc.json()["key"]), name="y").status_code == 403
    assert create(stack, key_headers(svc.json()["key"]), name="y", user_id=b["id"],
                  is_admin=True).status_code == 403

    # a key for user b, made by the admin
    kb = create(stack, admin, name="for b", user_id=b["id"])
    assert kb.status_code == 201 and kb.json()["user_id"] == b["id"]
    assert stack.get("/api/users/me", headers=key_headers(kb.json()["key"])).json() == b
    row = stack.audit("key.create")[-1]
    assert row["actor"] == "key:bootstrap" and row["user_id"] is None

    # an admin key lists users
    adm = create(stack, admin, name="ops", is_admin=True)
    assert adm.status_code == 201 and adm.json()["is_admin"] is True
    r = stack.get("/api/users", headers=key_headers(adm.json()["key"]))
    assert r.status_code == 200 and len(r.json()) == 2

    r = create(stack, admin, name="ghost", user_id=999999)
    assert r.status_code == 404 and r.json()["detail"] == "User not found"


def test_key_create_rejects_bad_input(stack):
    stack.start("gateway", env=FAST)
    _, headers = stack.new_user()
    for body, words in (({}, "name"),
                        ({"name": ""}, "name"),
                        ({"name": "x" * 101}, "name"),
                        ({"name": "tab\there"}, "control"),
                        ({"name": 5}, "name"),
                        ({"name": "k", "scope": "all"}, "Unknown field 'scope'"),
                        ({"name": "k", "user_id": "1"}, "user_id"),
                        ({"name": "k", "user_id": 0}, "user_id"),
                        ({"name": "k", "is_admin": 1}, "is_admin"),
                        ({"name": "k", "expires_in": 0}, "expires_in"),
                        ({"name": "k", "expires_in": "60"}, "expires_in"),
                        ({"name": "k", "expires_in": 1.5}, "expires_in")):
        r = create(stack, headers, **body)
        assert r.status_code == 422, (body, r.text)
        assert words in r.json()["detail"], (body, r.text)
    r = stack.post("/api/keys", data="{", headers=dict(headers, **{"Content-Type":
                                                                    "application/json"}))
    assert r.status_code == 400
    assert stack.post("/api/keys", json={"name": "k"}).status_code == 401
    assert count_keys(stack) == 0 and stack.audit("key.create") == []
    # 100 characters are fine, counted as characters, not bytes
    assert create(stack, headers, name="é" * 100).status_code == 201


def test_key_expiry(stack):
    stack.start("gateway", env=FAST)
    _, headers = stack.new_user()
    r = create(stack, headers, name="short", expires_in=2)
    assert r.status_code == 201
    k = r.json()
    assert ISO.match(k["expires_at"])
    created = time.strptime(k["created_at"][:19], "%Y-%m-%dT%H:%M:%S")
    expires = time.strptime(k["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")
    assert 1 <= time.mktime(expires) - time.mktime(created) <= 3
    time.sleep(2.5)
    assert stack.get("/api/users/me", headers=key_headers(k["key"])).status_code == 401


def test_key_list_shows_own_keys_without_secrets(stack):
    stack.start("gateway", env=FAST)
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    ka = [create(stack, ha, name="a%d" % i).json() for i in range(2)]
    kb = create(stack, hb, name="b0").json()
    svc = create(stack, stack.admin_headers(), name="svc").json()

    r = stack.get("/api/keys", headers=ha)
    assert r.status_code == 200, r.text
    assert [k["id"] for k in r.json()] == [k["id"] for k in ka]
    assert all(set(k) == LISTED_FIELDS for k in r.json())
    assert all(k["key"] not in r.text for k in ka)
    assert "key_hash" not in r.text
    assert [k["id"] for k in stack.get("/api/keys", headers=hb).json()] == [kb["id"]]
    r = stack.get("/api/keys?user_id=%d" % a["id"], headers=ha)  # naming yourself is fine
    assert r.status_code == 200 and len(r.json()) == 2
    assert stack.get("/api/keys?user_id=%d" % b["id"], headers=ha).status_code == 403
    # a service key sees itself only
    r = stack.get("/api/keys", headers=key_headers(svc["key"]))
    assert [k["id"] for k in r.json()] == [svc["id"]]

    admin = stack.admin_headers()
    r = stack.get("/api/keys", headers=admin)
    assert [k["id"] for k in r.json()] == [ka[0]["id"], ka[1]["id"], kb["id"], svc["id"]]
    r = stack.get("/api/keys?user_id=%d" % b["id"], headers=admin)
    assert [k["id"] for k in r.json()] == [kb["id"]]
    for q in ("abc", "0", "-2", ""):
        assert stack.get("/api/keys?user_id=" + q, headers=admin).status_code == 422, q
    assert stack.get("/api/keys").status_code == 401


def test_revoked_key_is_refused_and_others_keys_are_404(stack):
    stack.start("gateway", env=FAST)
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    ka = create(stack, ha, name="a").json()
    kb = create(stack, hb, name="b").json()
    # used once, so the gateway has it cached as valid
    assert stack.get("/api/users/me", headers=key_headers(ka["key"])).status_code == 200

    for who, kid in ((ha, kb["id"]), (ha, "abc"), (ha, "1e3"), (ha, "99999999"),
                     (key_headers(ka["key"]), kb["id"])):
        r = stack.request("DELETE", "/api/keys/%s" % kid, headers=who)
        assert r.status_code == 404 and r.json()["detail"] == "API key not found", (kid, r.text)
    assert stack.query("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL")[0][0] == 0

    r = stack.request("DELETE", "/api/keys/%d" % ka["id"], headers=ha)
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "message": "API key revoked"}
    assert stack.query("SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = %s",
                       ka["id"])[0][0]
    r = stack.get("/api/users/me", headers=key_headers(ka["key"]))
    assert r.status_code == 401 and r.json()["detail"] == "Invalid API key"
    assert stack.request("DELETE", "/api/keys/%d" % ka["id"], headers=ha).status_code == 404
    [row] = stack.audit("key.delete")
    assert row["actor"] == "user:%d" % a["id"] and row["user_id"] == a["id"]
    assert row["target"] == "key:%d" % ka["id"] and row["ip"] in LOOPBACK

    # a key may revoke itself; an admin may revoke anyone's
    kb2 = create(stack, hb, name="b2").json()
    r = stack.request("DELETE", "/api/keys/%d" % kb2["id"], headers=key_headers(kb2["key"]))
    assert r.status_code == 200
    r = stack.request("DELETE", "/api/keys/%d" % kb["id"], headers=stack.admin_headers())
    assert r.status_code == 200
    assert stack.get("/api/users/me", headers=key_headers(kb["key"])).status_code == 401
    assert stack.audit("key.delete")[-1]["actor"] == "key:bootstrap"


def test_key_revocation_reaches_every_gateway_at_once(stack):
    stack.start("gateway", env=FAST)
    other_port = free_port()
    stack.start("gateway", env=dict(FAST, ATELIER_HTTP_PORT=str(other_port)))
    other = "http://127.0.0.1:%d" % other_port
    _, headers = stack.new_user()
    k = create(stack, headers, name="k").json()
    assert requests.get(other + "/api/users/me", headers=key_headers(k["key"]),
                        timeout=10).status_code == 200
    assert stack.request("DELETE", "/api/keys/%d" % k["id"], headers=headers).status_code == 200
    deadline = time.monotonic() + 1.0  # far less than the 10 s cache lifetime
    while time.monotonic() < deadline:
        r = requests.get(other + "/api/users/me", headers=key_headers(k["key"]), timeout=10)
        if r.status_code == 401:
            break
        time.sleep(0.05)
    assert r.status_code == 401
