"""Users: register, login, logout, list, me; bearer tokens (forged, expired,
revoked); per-e-mail login rate limit. Real gateway, PostgreSQL and Redis."""
import base64
import calendar
import hashlib
import hmac
import json
import os
import re
import statistics
import time
import uuid

import requests

from harness import free_port

FAST = {"ATELIER_BCRYPT_COST": "4", "ATELIER_LOGIN_RATE_PER_MIN": "1000"}
# req_ip() answers the IPv4-mapped form on a dual-stack listener
LOOPBACK = ("127.0.0.1", "::ffff:127.0.0.1")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
USER_FIELDS = {"id", "username", "email", "is_admin", "is_active", "created_at", "updated_at"}
PASSWORD = "correct horse battery"


def email():
    return "u%s@example.com" % uuid.uuid4().hex[:10]


def register(stack, mail, password=PASSWORD, **extra):
    return stack.post("/api/users/register", json=dict(email=mail, password=password, **extra))


def login(stack, mail, password=PASSWORD):
    return stack.post("/api/users/login", json={"email": mail, "password": password})


def bearer(token):
    return {"Authorization": "Bearer " + token}


def count(stack, sql, *args):
    return stack.query(sql, *args)[0][0]


# ---- register -------------------------------------------------------------


def test_register_answers_the_user_and_stores_a_bcrypt_hash(stack):
    stack.start("gateway", env=FAST)
    mail = email()
    r = register(stack, mail)
    assert r.status_code == 201, r.text
    user = r.json()
    assert set(user) == USER_FIELDS
    assert user["email"] == mail and user["username"] == mail  # username defaults to the email
    assert user["is_admin"] is False and user["is_active"] is True
    assert isinstance(user["id"], int)
    assert ISO.match(user["created_at"]) and ISO.match(user["updated_at"])

    (pw_hash,) = stack.query("SELECT password_hash FROM users WHERE id = %s", user["id"])[0]
    assert pw_hash.startswith("$2b$04$") and len(pw_hash) == 60
    assert PASSWORD not in pw_hash

    [row] = stack.audit("user.register")
    assert row["actor"] == "user:%d" % user["id"]
    assert row["user_id"] == user["id"]
    assert row["target"] == mail
    assert row["ip"] in LOOPBACK

    r = register(stack, "Second@Example.ORG", username="second_user")
    assert r.status_code == 201, r.text
    assert r.json()["username"] == "second_user"
    assert r.json()["email"] == "Second@Example.ORG"  # stored as given


def test_register_hashes_at_the_default_cost(stack):
    stack.start("gateway", env={"ATELIER_LOGIN_RATE_PER_MIN": "1000"})
    mail = email()
    assert register(stack, mail).status_code == 201
    (pw_hash,) = stack.query("SELECT password_hash FROM users")[0]
    assert pw_hash.startswith("$2b$10$")
    assert login(stack, mail).status_code == 200


def test_register_rejects_bad_input_and_changes_nothing(stack):
    stack.start("gateway", env=FAST)
    cases = [
        ({"password": PASSWORD}, 422, "email"),
        ({"email": 5, "password": PASSWORD}, 422, "email"),
        ({"email": "no-at.example.com", "password": PASSWORD}, 422, "'@'"),
        ({"email": "a@b@example.com", "password": PASSWORD}, 422, "'@'"),
        ({"email": "@example.com", "password": PASSWORD}, 422, "local part"),
        ({"email": "a@localhost", "password": PASSWORD}, 422, "dot"),
        ({"email": "a@.example.com", "password": PASSWORD}, 422, "dot"),
        ({"email": "a@example.com.", "password": PASSWORD}, 422, "dot"),
        ({"email": "a b@example.com", "password": PASSWORD}, 422, "spaces"),
        ({"email": "a\tb@example.com", "password": PASSWORD}, 422, "control"),
        ({"email": "a\x01b@example.com", "password": PASSWORD}, 422, "control"),
        ({"email": "a" * 243 + "@example.com", "password": PASSWORD}, 422, "254"),
        ({"email": "", "password": PASSWORD}, 422, "254"),
        ({"email": email()}, 422, "password"),
        ({"email": email(), "password": "short77"}, 422, "8..72"),
        ({"email": email(), "password": "x" * 73}, 422, "bcrypt"),
        ({"email": email(), "password": 12345678}, 422, "password"),
        ({"email": email(), "password": PASSWORD, "role": "admin"}, 422, "Unknown field 'role'"),
        ({"email": email(), "password": PASSWORD, "username": ""}, 422, "username"),
        ({"email": email(), "password": PASSWORD, "username": "a b"}, 422, "username"),
        ({"email": email(), "password": PASSWORD, "username": 7}, 422, "username"),
        ({"email": email(), "password": PASSWORD, "is_admin": "yes"}, 422, "is_admin"),
    ]
    for body, status, words in cases:
        r = stack.post("/api/users/register", json=body)
        assert r.status_code == status, (body, r.text)
        assert words in r.json()["detail"], (body, r.text)
    r = stack.post("/api/users/register", data="{\"email\": ",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "Invalid JSON" in r.json()["detail"]
    r = stack.post("/api/users/register", data="[1, 2]",
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    r = stack.post("/api/users/register")
    assert r.status_code == 422
    # the limit is in bytes: 37 two-byte characters are 74 bytes
    assert register(stack, email(), password="é" * 37).status_code == 422
    assert count(stack, "SELECT count(*) FROM users") == 0
    assert count(stack, "SELECT count(*) FROM audit_log") == 0
    assert register(stack, email(), password="x" * 72).status_code == 201
    assert register(stack, email(), password="12345678").status_code == 201


def test_register_duplicate_email_or_username_is_409(stack):
    stack.start("gateway", env=FAST)
    assert register(stack, "Alice@Example.com", username="alice").status_code == 201
    r = register(stack, "alice@example.COM")
    assert r.status_code == 409 and r.json()["detail"] == "Email already registered"
    r = register(stack, email(), username="ALICE")
    assert r.status_code == 409 and r.json()["detail"] == "Username already taken"
    assert count(stack, "SELECT count(*) FROM users") == 1
    assert len(stack.audit("user.register")) == 1


def test_only_an_admin_may_register_an_admin(stack):
    stack.start("gateway", env=FAST)
    r = register(stack, email(), is_admin=True)
    assert r.status_code == 403
    _, headers = stack.new_user()
    r = stack.post("/api/users/register", headers=headers,
                   json={"email": email(), "password": PASSWORD, "is_admin": True})
    assert r.status_code == 403
    assert count(stack, "SELECT count(*) FROM users WHERE is_admin") == 0

    mail = email()
    r = stack.post("/api/users/register", headers=stack.admin_headers(),
                   json={"email": mail, "password": PASSWORD, "is_admin": True})
    assert r.status_code == 201, r.text
    admin = r.json()
    assert admin["is_admin"] is True
    row = [a for a in stack.audit("user.register") if a["target"] == mail][0]
    assert row["actor"] == "key:bootstrap" and row["user_id"] == admin["id"]

    # an admin user's token may list users
    token = login(stack, mail).json()["access_token"]
    r = stack.get("/api/users", headers=bearer(token))
    assert r.status_code == 200 and len(r.json()) == 2
    # registering a non-admin with is_admin false is fine for anyone
    assert register(stack, email(), is_admin=False).status_code == 201


# ---- login -----------------------------------------------------------------


def test_login_answers_user_and_token_and_records_it(stack):
    stack.start("gateway", env=dict(FAST, ATELIER_TOKEN_TTL="3600"))
    mail = email()
    user = register(stack, mail, username="loginuser").json()
    before = time.time()
    r = login(stack, mail.upper())  # e-mail is case-insensitive
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"user", "access_token", "token_type", "expires_at"}
    assert body["user"] == user
    assert body["token_type"] == "bearer"
    assert ISO.match(body["expires_at"])
    exp = calendar.timegm(time.strptime(body["expires_at"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert before + 3600 - 5 <= exp <= time.time() + 3600 + 5

    claims = json.loads(b64d(body["access_token"].split(".")[1]))
    assert claims["sub"] == str(user["id"])
    jti_hash = hashlib.sha256(claims["jti"].encode()).hexdigest()
    rows = stack.query("SELECT user_id, kind, revoked_at, extract(epoch FROM expires_at)::bigint "
                       "FROM auth_tokens WHERE token_hash = %s", jti_hash)
    assert rows == [(user["id"], "bearer", None, claims["exp"])]
    assert body["access_token"] not in json.dumps(stack.query("SELECT * FROM auth_tokens"),
                                                  default=str)

    [row] = stack.audit("user.login")
    assert row["actor"] == "user:%d" % user["id"] and row["user_id"] == user["id"]
    assert row["ip"] in LOOPBACK and row["target"] == mail.upper()

    r = stack.get("/api/users/me", headers=bearer(body["access_token"]))
    assert r.status_code == 200 and r.json() == user
    # by username too
    r = stack.post("/api/users/login", json={"username": "LoginUser", "password": PASSWORD})
    assert r.status_code == 200 and r.json()["user"]["id"] == user["id"]


def test_login_failures_look_alike_and_are_audited(stack):
    stack.start("gateway", env=FAST)
    mail = email()
    register(stack, mail)
    for body in ({"email": mail, "password": "wrong password"},
                 {"email": "nobody@example.com", "password": PASSWORD},
                 {"email": mail, "password": PASSWORD + "x" * 80},
                 {"email": mail, "password": ""}):
        r = stack.post("/api/users/login", json=body)
        assert r.status_code == 401, (body, r.text)
        assert r.json() == {"detail": "Incorrect email or password"}
    rows = stack.audit("user.login_failed")
    assert [r["target"] for r in rows] == [mail, "nobody@example.com", mail, mail]
    assert [r["detail"]["reason"] for r in rows][:2] == ["bad_password", "unknown_user"]
    assert all(r["actor"] == "anonymous" and r["ip"] in LOOPBACK for r in rows)
    assert count(stack, "SELECT count(*) FROM auth_tokens") == 0

    for body, words in (({"password": PASSWORD}, "email"),
                        ({"email": mail}, "password"),
                        ({"email": mail, "password": 5}, "password"),
                        ({"email": mail, "password": PASSWORD, "remember": True}, "Unknown")):
        r = stack.post("/api/users/login", json=body)
        assert r.status_code == 422 and words in r.json()["detail"], (body, r.text)


def test_unknown_email_costs_as_much_time_as_a_wrong_password(stack):
    stack.start("gateway", env={"ATELIER_LOGIN_RATE_PER_MIN": "1000"})  # cost 10
    mail = email()
    assert register(stack, mail).status_code == 201

    def timed(m):
        t = time.monotonic()
        assert login(stack, m, "wrong password").status_code == 401
        return time.monotonic() - t

    known = statistics.median(timed(mail) for _ in range(5))
    unknown = statistics.median(timed("ghost@example.com") for _ in range(5))
    assert known > 0.02 and unknown > 0.02  # bcrypt at cost 10 ran in both cases
    assert 0.4 < unknown / known < 2.5, (known, unknown)


def test_disabled_user_gets_403_only_with_the_right_password(stack):
    stack.start("gateway", env=FAST)
    mail = email()
    user, headers = stack.new_user(email=mail, password=PASSWORD)
    stack.query("UPDATE users SET is_active = false WHERE id = %s", user["id"])
    r = login(stack, mail)
    assert r.status_code == 403 and "disabled" in r.json()["detail"]
    assert login(stack, mail, "wrong password").status_code == 401
    assert stack.audit("user.login_failed")[0]["detail"]["reason"] == "disabled"


# ---- logout ----------------------------------------------------------------


def test_logout_revokes_the_token(stack):
    stack.start("gateway", env=FAST)
    user, headers = stack.new_user()
    assert stack.get("/api/users/me", headers=headers).status_code == 200
    r = stack.post("/api/users/logout", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True, "message": "Logged out"}
    (revoked,) = stack.query("SELECT revoked_at FROM auth_tokens WHERE user_id = %s",
                             user["id"])[0]
    assert revoked is not None
    r = stack.get("/api/users/me", headers=headers)
    assert r.status_code == 401
    assert stack.post("/api/users/logout", headers=headers).status_code == 401
    [row] = stack.audit("user.logout")
    assert row["actor"] == "user:%d" % user["id"] and row["user_id"] == user["id"]
    assert row["ip"] in LOOPBACK and row["target"].startswith("token:")

    # other tokens of the same user still work
    r = login(stack, user["email"])
    assert stack.get("/api/users/me", headers=bearer(r.json()["access_token"])).status_code == 200


def test_logout_needs_a_bearer_token(stack):
    stack.start("gateway", env=FAST)
    r = stack.post("/api/users/logout", headers=stack.admin_headers())
    assert r.status_code == 400 and "DELETE /api/keys" in r.json()["detail"]
    assert stack.post("/api/users/logout").status_code == 401
    assert stack.audit("user.logout") == []


def test_logout_on_one_gateway_is_seen_at_once_by_another(stack):
    stack.start("gateway", env=FAST)
    other_port = free_port()
    stack.start("gateway", env=dict(FAST, ATELIER_HTTP_PORT=str(other_port)))
    other = "http://127.0.0.1:%d" % other_port
    _, headers = stack.new_user()
    # the other gateway caches the token as valid
    assert requests.get(other + "/api/users/me", headers=headers, timeout=10).status_code == 200
    assert stack.post("/api/users/logout", headers=headers).status_code == 200
    deadline = time.monotonic() + 1.0  # far less than the 10 s cache lifetime
    while time.monotonic() < deadline:
        r = requests.get(other + "/api/users/me", headers=headers, timeout=10)
        if r.status_code == 401:
            break
        time.sleep(0.05)
    assert r.status_code == 401


# ---- list and me -------------------------------------------------------------


def test_user_list_is_for_admins_with_paging(stack):
    stack.start("gateway", env=FAST)
    ids = [register(stack, email()).json()["id"] for _ in range(5)]
    r = stack.get("/api/users/", headers=stack.admin_headers())
    assert r.status_code == 200, r.text
    assert [u["id"] for u in r.json()] == ids
    assert all(set(u) == USER_FIELDS for u in r.json())
    r = stack.get("/api/users?limit=2&offset=1", headers=stack.admin_headers())
    assert [u["id"] for u in r.json()] == ids[1:3]
    r = stack.get("/api/users?offset=10", headers=stack.admin_headers())
    assert r.status_code == 200 and r.json() == []
    for q in ("limit=0", "limit=1001", "limit=abc", "limit=", "limit=-1", "offset=-1",
              "offset=1.5"):
        r = stack.get("/api/users?" + q, headers=stack.admin_headers())
        assert r.status_code == 422, (q, r.text)
    assert stack.get("/api/users?limit=1000", headers=stack.admin_headers()).status_code == 200

    _, headers = stack.new_user()
    assert stack.get("/api/users", headers=headers).status_code == 403
    assert stack.get("/api/users").status_code == 401
    assert "password" not in stack.get("/api/users", headers=stack.admin_headers()).text


def test_me_answers_the_caller_only(stack):
    stack.start("gateway", env=FAST)
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    assert stack.get("/api/users/me", headers=ha).json() == a
    assert stack.get("/api/users/me", headers=hb).json() == b
    r = stack.get("/api/users/me", headers=stack.admin_headers())
    assert r.status_code == 404
    assert r.json() == {"detail": "This API key is not bound to a user"}
    assert stack.get("/api/users/me").status_code == 401


# ---- forged, expired and tampered tokens -----------------------------------


def b64e(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64d(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret, claims, header=None):
    head = b64e(json.dumps(header or {"alg": "HS256", "typ": "JWT"}).encode())
    body = b64e(json.dumps(claims).encode())
    mac = hmac.new(secret.encode(), (head + "." + body).encode(), hashlib.sha256).digest()
    return head + "." + body + "." + b64e(mac)


def test_forged_expired_and_tampered_tokens(stack):
    gw = stack.start("gateway", env=FAST)
    with open(os.path.join(gw.env["ATELIER_DATA_DIR"], "secret", "jwt")) as f:
        secret = f.read()
    user, _ = stack.new_user()
    jti = uuid.uuid4().hex
    stack.query("INSERT INTO auth_tokens (user_id, token_hash, expires_at) "
                "VALUES (%s, %s, now() + interval '1 hour')",
                user["id"], hashlib.sha256(jti.encode()).hexdigest())
    now = int(time.time())
    claims = {"sub": str(user["id"]), "jti": jti, "iat": now, "exp": now + 600, "adm": False}

    # signed with the gateway's key and recorded: accepted (the forging is right)
    r = stack.get("/api/users/me", headers=bearer(sign(secret, claims)))
    assert r.status_code == 200 and r.json()["id"] == user["id"]

    expired = sign(secret, dict(claims, iat=now - 120, exp=now - 60))
    r = stack.get("/api/users/me", headers=bearer(expired))
    assert r.status_code == 401 and r.json()["detail"] == "Token expired"

    r = stack.get("/api/users/me", headers=bearer(sign("x" * 48, claims)))
    assert r.status_code == 401 and r.json()["detail"] == "Invalid token"

    good = sign(secret, claims)
    head, body, mac = good.split(".")
    tampered = head + "." + b64e(json.dumps(dict(claims, adm=True)).encode()) + "." + mac
    assert stack.get("/api/users", headers=bearer(tampered)).status_code == 401

    none_head = b64e(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    for tok in (none_head + "." + body + ".", none_head + "." + body + "." + mac):
        r = stack.get("/api/users/me", headers=bearer(tok))
        assert r.status_code == 401 and r.json()["detail"] == "Invalid token"

    # a well-signed token with no auth_tokens row (never issued) is refused
    ghost = sign(secret, dict(claims, jti=uuid.uuid4().hex))
    assert stack.get("/api/users/me", headers=bearer(ghost)).status_code == 401
    # claiming another user's id with a recorded jti is refused too
    other, _ = stack.new_user()
    r = stack.get("/api/users/me", headers=bearer(sign(secret, dict(claims, sub=str(other["id"])))))
    assert r.status_code == 401


# ---- rate limit ------------------------------------------------------------


def test_login_attempts_are_limited_per_ip_and_per_email(stack):
    stack.start("gateway", env={"ATELIER_BCRYPT_COST": "4", "ATELIER_LOGIN_RATE_PER_MIN": "3"})
    mail = "victim@example.com"
    for _ in range(3):
        assert login(stack, mail, "guess").status_code == 401
    r = login(stack, mail, "guess")
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["Retry-After"]) <= 20  # one token per 20 s
    assert len(stack.audit("user.login_failed")) == 3

    # a fresh IP bucket: the e-mail's own bucket still refuses this address...
    for key in stack.r.keys("rl:login:ip:*"):
        stack.r.delete(key)
    digest = hashlib.sha256(mail.encode()).hexdigest()
    assert stack.r.exists("rl:login:email:" + digest)
    r = login(stack, mail.upper(), "guess")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert "account" in r.json()["detail"]
    r = register(stack, mail)
    assert r.status_code == 429 and "Retry-After" in r.headers
    # ...but not another one
    assert login(stack, "other@example.com", "guess").status_code == 401
    assert count(stack, "SELECT count(*) FROM users") == 0


def test_sigterm_while_bcrypt_runs_answers_or_drops_cleanly(stack):
    """Hashes still on the thread pool when the gateway stops must not touch
    the torn-down database pool (the harness fails on any sanitizer report)."""
    import signal
    import threading

    gw = stack.start("gateway", env={"ATELIER_BCRYPT_COST": "13",
                                     "ATELIER_LOGIN_RATE_PER_MIN": "1000"})
    statuses = []

    def reg():
        try:
            statuses.append(register(stack, email()).status_code)
        except requests.RequestException:
            statuses.append("dropped")

    threads = [threading.Thread(target=reg) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the hashes are running (cost 13: ~0.6 s each)
    gw.signal(signal.SIGTERM)
    for t in threads:
        t.join(15)
    assert gw.wait(15) == 0
    assert len(statuses) == 4
    assert set(statuses) <= {201, 503, "dropped"}, statuses
    assert "event=exit" in gw.log()
