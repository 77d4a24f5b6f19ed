"""GET /openapi.json and GET /docs: the served document is valid OpenAPI 3.1,
lists every route of gateway/routes.c with the right security, matches what
the handlers really answer, and the docs page loads only local assets."""
import json
import os
import re
import shutil
import subprocess
import uuid

import pytest

from harness import ROOT, wait_for

DOCS_DIR = os.path.join(ROOT, "gateway", "docs")
VALIDATOR = os.path.join(DOCS_DIR, "validate.mjs")
ROUTES_C = os.path.join(ROOT, "gateway", "routes.c")
METHODS = {"GET": "get", "POST": "post", "PUT": "put", "DEL": "delete"}
PUBLIC = ("AUTH_PUBLIC", "AUTH_LOGIN")


def route_table():
    """(method, OpenAPI path, auth level) for every line of routes.c's table."""
    text = open(ROUTES_C).read()
    rows = re.findall(r'\{(GET|POST|PUT|DEL),\s*"([^"]+)",\s*\w+,\s*(AUTH_\w+)', text)
    assert len(rows) > 40, "could not parse the route table of %s" % ROUTES_C
    return [(METHODS[m], re.sub(r"\{(\w+)\*\}", r"{\1}", p), auth) for m, p, auth in rows]


def node_or_skip():
    node = shutil.which("node") or shutil.which("nodejs")
    if not node:
        pytest.skip("node is not installed (deploy/local/install-deps installs nodejs): "
                    "cannot run the OpenAPI validator")
    assert os.path.isdir(os.path.join(DOCS_DIR, "node_modules", "@seriousme")), \
        "gateway/docs/node_modules is missing: run `make deps` (npm ci in gateway/docs)"
    return node


def validate(node, doc_path, samples_path=None):
    cmd = [node, VALIDATOR, doc_path] + (["--samples", samples_path] if samples_path else [])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_served_document_is_valid_openapi_and_lists_every_route(stack, tmp_path):
    node = node_or_skip()
    stack.start("gateway")
    r = stack.get("/openapi.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("cache-control") == "no-cache"
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    # the build embeds the checked-in file as is
    with open(os.path.join(ROOT, "gateway", "openapi.json"), "rb") as f:
        assert r.content == f.read()

    served = tmp_path / "openapi.json"
    served.write_bytes(r.content)
    v = validate(node, str(served))
    assert v.returncode == 0, "validator:\n" + v.stdout + v.stderr
    assert "valid OpenAPI 3.1" in v.stdout

    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http",
                                     "scheme": "bearer", "bearerFormat": "JWT"}
    assert schemes["apiKeyAuth"] == {**schemes["apiKeyAuth"], "type": "apiKey",
                                     "in": "header", "name": "X-API-Key"}
    assert doc["security"] == [{"bearerAuth": []}, {"apiKeyAuth": []}]
    assert set(doc["components"]["schemas"]["Error"]["properties"]) == {"detail"}

    table = route_table()
    missing = [(m, p) for m, p, _ in table if m not in doc["paths"].get(p, {})]
    assert not missing, "routes.c endpoints missing from openapi.json: %s" % missing
    documented = {(m, p) for p, item in doc["paths"].items() for m in item if m in
                  METHODS.values()}
    extra = documented - {(m, p) for m, p, _ in table}
    assert not extra, "openapi.json documents endpoints routes.c does not have: %s" % extra

    for method, path, auth in table:
        o = doc["paths"][path][method]
        where = "%s %s" % (method.upper(), path)
        public = auth in PUBLIC
        assert (o.get("security") == []) == public, "%s: security %r but %s" % (
            where, o.get("security"), auth)
        codes = set(o["responses"])
        assert any(c.startswith("2") for c in codes), where
        if not public:
            assert {"401", "429", "503"} <= codes, "%s lacks auth errors: %s" % (where, codes)
        if auth == "AUTH_ADMIN":
            assert "403" in codes, where
        if "requestBody" in o and "application/json" in o["requestBody"]["content"]:
            assert {"400", "413", "422"} <= codes, "%s lacks body errors: %s" % (where, codes)
        for code, resp in o["responses"].items():
            if code[0] in "45" and "$ref" in resp:
                target = doc["components"]["responses"][resp["$ref"].rsplit("/", 1)[1]]
                schema = target["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/Error"}, (where, code)
    # 429 carries Retry-After; If-Match is documented on writes
    assert "Retry-After" in doc["components"]["responses"]["TooManyRequests"]["headers"]
    put = doc["paths"]["/api/workspace/{id}/files/{path}"]["put"]
    assert {"$ref": "#/components/parameters/IfMatch"} in put["parameters"]
    assert "412" in put["responses"]
    upload = doc["paths"]["/api/workspace/{id}/upload"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    zip_ = doc["paths"]["/api/workspace/{id}/download"]["get"]["responses"]["200"]
    assert "application/zip" in zip_["content"]


def test_validator_rejects_a_broken_document(tmp_path):
    """The check above means something: a dangling $ref, an undeclared path
    parameter and an invalid field are each reported."""
    node = node_or_skip()
    with open(os.path.join(ROOT, "gateway", "openapi.json")) as f:
        doc = json.load(f)
    item = doc["paths"]["/api/jobs/{id}"]["get"]
    item["parameters"] = []
    item["responses"]["200"]["content"]["application/json"]["schema"] = {
        "$ref": "#/components/schemas/NoSuchThing"}
    doc["paths"]["/health"]["get"]["responses"] = "not an object"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    v = validate(node, str(bad))
    assert v.returncode == 1
    assert "path parameter {id} not declared" in v.stderr
    assert "NoSuchThing does not resolve" in v.stderr
    assert "/paths/~1health/get/responses" in v.stderr


def test_docs_page_loads_only_local_assets(stack):
    stack.start("gateway")
    r = stack.get("/docs")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert 'spec-url="/openapi.json"' in html
    srcs = re.findall(r'<(?:script|link|img)[^>]*?(?:src|href)="([^"]*)"', html)
    assert srcs, html
    for src in srcs:
        assert src.startswith("/") and not src.startswith("//"), "non-local asset %s" % src
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)
    # the browser is told to load nothing from elsewhere
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert stack.get("/docs/").status_code == 200

    js = stack.get("/docs/redoc.standalone.js")
    assert js.status_code == 200, js.text
    assert js.headers["content-type"].startswith("application/javascript")
    assert "max-age" in js.headers["cache-control"]
    assert js.headers["x-content-type-options"] == "nosniff"
    with open(os.path.join(DOCS_DIR, "node_modules", "redoc", "bundles",
                           "redoc.standalone.js"), "rb") as f:
        assert js.content == f.read()
    lic = stack.get("/docs/redoc.standalone.js.LICENSE.txt")
    assert lic.status_code == 200 and lic.headers["content-type"].startswith("text/plain")
    head = stack.request("HEAD", "/docs/redoc.standalone.js")
    assert head.status_code == 200 and head.content == b""

    # only the allow-list: no path into node_modules or out of it
    for bad in ("/docs/redoc.js", "/docs/package.json", "/docs/index.html", "/docs/validate.mjs",
                "/docs/node_modules/redoc/bundles/redoc.standalone.js",
                "/docs/..%2Fpackage.json", "/docs/%2e%2e/%2e%2e/etc/passwd",
                "/docs/redoc%2Fbundles%2Fredoc.standalone.js"):
        b = stack.get(bad)
        assert b.status_code in (400, 403, 404), (bad, b.status_code, b.text[:200])


def test_docs_without_npm_install_answers_503_until_it_is_there(stack, tmp_path):
    root = tmp_path / "web"
    root.mkdir()
    stack.start("gateway", env={"ATELIER_WEB_ROOT": str(root)})
    r = stack.get("/docs")
    assert r.status_code == 503
    assert "make deps" in r.json()["detail"]
    assert stack.get("/docs/redoc.standalone.js").status_code == 503
    assert stack.get("/openapi.json").status_code == 200  # embedded: no file needed
    # installed while the gateway runs: picked up without a restart
    bundles = root / "docs" / "node_modules" / "redoc" / "bundles"
    bundles.mkdir(parents=True)
    (bundles / "redoc.standalone.js").write_text("/* redoc */")
    wait_for(lambda: stack.get("/docs").status_code == 200, timeout=10, what="docs after install")
    js = stack.get("/docs/redoc.standalone.js")
    assert js.status_code == 200 and js.text == "/* redoc */"


# ---- the document against real answers ------------------------------------------


class Recorder:
    """Calls the gateway and keeps (method, documented path, status, body) of
    every JSON answer, to be checked against the document's schemas."""

    def __init__(self, stack):
        self.stack = stack
        self.samples = []

    def call(self, method, template, path=None, expect=None, **kw):
        r = self.stack.request(method, path or template, **kw)
        if expect is not None:
            assert r.status_code == expect, "%s %s: %d %s" % (method, path or template,
                                                              r.status_code, r.text[:500])
        if r.headers.get("content-type", "").startswith("application/json"):
            self.samples.append({"method": method, "path": template, "status": r.status_code,
                                 "body": r.json()})
        return r


def test_documented_schemas_match_real_answers(stack, tmp_path):
    node = node_or_skip()
    # with real sandboxes the runtime actions answer when done (200); without,
    # they answer 202 (queued) once the reply timeout has passed
    sandboxes = os.geteuid() == 0 and os.access("/usr/bin/bwrap", os.X_OK)
    stack.start("gateway", env={} if sandboxes else {"ATELIER_REPLY_TIMEOUT_MS": "200"})
    if sandboxes:
        stack.start("session-manager")
        stack.start("sync-worker")
    done = 200 if sandboxes else 202
    rec = Recorder(stack)
    call = rec.call
    admin = stack.admin_headers()

    call("GET", "/health", expect=200)
    call("GET", "/api/health", expect=200)
    call("GET", "/api/health/detailed")
    call("GET", "/api/jobs/{id}", "/api/jobs/%s" % uuid.uuid4(), headers=admin, expect=404)

    # users
    email = "doc%s@example.com" % uuid.uuid4().hex[:8]
    call("POST", "/api/users/register", json={"email": email, "password": "correct horse"},
         expect=201)
    call("POST", "/api/users/register", json={"email": email, "password": "correct horse"},
         expect=409)
    call("POST", "/api/users/register", json={"email": "nope", "password": "correct horse"},
         expect=422)
    call("POST", "/api/users/register", data="{", headers={"Content-Type": "application/json"},
         expect=400)
    login = call("POST", "/api/users/login", json={"email": email, "password": "correct horse"},
                 expect=200).json()
    me = {"Authorization": "Bearer " + login["access_token"]}
    call("POST", "/api/users/login", json={"email": email, "password": "wrong password"},
         expect=401)
    call("GET", "/api/users/me", headers=me, expect=200)
    call("GET", "/api/users/me", expect=401)
    call("GET", "/api/users", headers=admin, expect=200)
    call("GET", "/api/users", headers=me, expect=403)

    # keys
    key = call("POST", "/api/keys", json={"name": "doc"}, headers=me, expect=201).json()
    call("GET", "/api/keys", headers=me, expect=200)
    call("DELETE", "/api/keys/{id}", "/api/keys/%d" % key["id"], headers=me, expect=200)
    call("DELETE", "/api/keys/{id}", "/api/keys/%d" % key["id"], headers=me, expect=404)

    # sessions, FastAPI family
    sess = call("POST", "/api/sessions", json={"name": "doc"}, headers=me, expect=201).json()
    su = sess["uuid"]
    call("GET", "/api/sessions", headers=me, expect=200)
    call("GET", "/api/sessions/{uuid}", "/api/sessions/" + su, headers=me, expect=200)
    call("GET", "/api/sessions/{uuid}", "/api/sessions/%s" % uuid.uuid4(), headers=me,
         expect=404)
    call("GET", "/api/sessions", "/api/sessions?user_id=999999", headers=me, expect=403)

    # files, both families, on the session's workspace
    ws = "/api/workspace/" + su
    put = call("PUT", "/api/workspace/{id}/files/{path}", ws + "/files/src/main.py",
               json={"content": "print('hi')\n"}, headers=me)
    assert put.status_code in (200, 201), put.text
    got = call("GET", "/api/workspace/{id}/files/{path}", ws + "/files/src/main.py", headers=me,
               expect=200)
    etag = got.headers.get("ETag")
    call("PUT", "/api/workspace/{id}/files/{path}", ws + "/files/src/main.py",
         json={"content": "x"}, headers=dict(me, **{"If-Match": '"%s"' % ("0" * 64)}),
         expect=412)
    call("POST", "/api/workspace/{id}/file/{path}", ws + "/file/notes.txt",
         json={"content": "n"}, headers=me)
    call("GET", "/api/workspace/{id}/file/{path}", ws + "/file/notes.txt", headers=me,
         expect=200)
    call("GET", "/api/workspace/{id}/files", ws + "/files", headers=me, expect=200)
    call("GET", "/api/workspace/{id}/status", ws + "/status", headers=me, expect=200)
    call("POST", "/api/workspace/{id}/ensure-defaults", ws + "/ensure-defaults", headers=me,
         expect=200)
    call("POST", "/api/workspace/{id}/ensure-default", ws + "/ensure-default", headers=me,
         expect=200)
    call("POST", "/api/workspace/{id}/folders", ws + "/folders", json={"path": "docs/a"},
         headers=me, expect=201)
    call("POST", "/api/workspace/{id}/move", ws + "/move",
         json={"from": "notes.txt", "to": "docs/notes.txt"}, headers=me, expect=200)
    call("POST", "/api/workspace/{id}/upload", ws + "/upload", headers=me,
         files=[("files", ("bin.dat", bytes(range(256)), "application/octet-stream"))],
         expect=201)
    call("GET", "/api/workspace/{id}/files/{path}", ws + "/files/bin.dat", headers=me,
         expect=200)
    call("GET", "/api/workspace/{id}/files/{path}", ws + "/files/docs", headers=me,
         expect=200)  # a folder: its children
    call("GET", "/api/workspace/{id}/files", ws + "/files?path=docs", headers=me, expect=200)
    call("POST", "/api/workspace/{id}/folders", ws + "/folders", json={"path": "docs/a"},
         headers=me, expect=200)  # already there
    call("POST", "/api/workspace/{id}/move", ws + "/move",
         json={"from": "docs/notes.txt", "to": "bin.dat"}, headers=me, expect=409)
    call("GET", "/api/workspace/{id}/files/{path}", ws + "/files/a%5Cb.py", headers=me,
         expect=422)
    call("POST", "/api/workspace/{id}/upload", ws + "/upload", data=b"x", headers=dict(
        me, **{"Content-Type": "text/plain"}), expect=415)
    call("POST", "/api/keys", json={"name": "x" * 70000}, headers=me, expect=413)
    z = stack.get(ws + "/download", headers=me)
    assert z.status_code == 200 and z.headers["content-type"] == "application/zip"
    raw = stack.get(ws + "/download/bin.dat", headers=me)
    assert raw.status_code == 200 and raw.content == bytes(range(256))
    call("DELETE", "/api/workspace/{id}/files/{path}", ws + "/files/src/main.py",
         headers=dict(me, **({"If-Match": etag} if etag else {})), expect=200)
    call("DELETE", "/api/workspace/{id}/file/{path}", ws + "/file/docs", headers=me)
    call("DELETE", "/api/workspace/{id}/file/{path}", ws + "/file/missing.txt", headers=me,
         expect=404)
    call("DELETE", "/api/workspace/{id}/file/{path}", ws + "/file/docs?recursive=true",
         headers=me, expect=200)
    mine = call("POST", "/session/create", headers=me, expect=201).json()["uuid"]  # for itself

    # Client API family (service key)
    created = call("POST", "/session/create", json={"user_id": email}, headers=admin,
                   expect=201).json()
    cu = created["uuid"]
    if sandboxes:
        wait_for(lambda: stack.get("/session/%s/status" % cu, headers=admin)
                 .json()["session"]["status"] == "ready", timeout=30, what="ready")
        call("POST", "/api/sessions/{uuid}/exec", "/api/sessions/%s/exec" % cu,
             json={"command": "echo hi"}, headers=admin, expect=200)
    call("GET", "/session/{uuid}/status", "/session/%s/status" % cu, headers=admin, expect=200)
    call("GET", "/sessions", headers=admin, expect=200)
    call("POST", "/session/{uuid}/sleep", "/session/%s/sleep" % cu, headers=admin, expect=done)
    call("POST", "/session/{uuid}/scale", "/session/%s/scale" % cu, json={"scale": "up"},
         headers=admin, expect=409 if sandboxes else 202)  # asleep: wake it first
    call("POST", "/session/{uuid}/wake", "/session/%s/wake" % cu, headers=admin, expect=done)
    call("POST", "/session/{uuid}/scale", "/session/%s/scale" % cu, json={"scale": "up"},
         headers=admin, expect=done)
    call("POST", "/session/{uuid}/scale", "/session/%s/scale" % cu, json={"scale": "sideways"},
         headers=admin, expect=422)
    call("POST", "/session/{uuid}/chat", "/session/%s/chat" % cu, json={"message": "Hello!"},
         headers=admin, expect=202)
    call("POST", "/workspace/{id}/shutdown", "/workspace/%s/shutdown" % cu, headers=admin,
         expect=done)
    # (cu is shut down by now when sandboxes run: delete the user's other one)
    job = call("DELETE", "/session/{uuid}", "/session/" + mine, headers=admin, expect=202).json()
    call("GET", "/session/{uuid}/status", "/session/%s/status" % uuid.uuid4(), headers=admin,
         expect=404)
    call("DELETE", "/api/sessions/{uuid}", "/api/sessions/" + su, headers=me, expect=202)
    if job.get("job_id"):
        call("GET", "/api/jobs/{id}", "/api/jobs/" + job["job_id"], headers=admin, expect=200)

    call("POST", "/api/users/logout", headers=me, expect=200)
    call("GET", "/api/users/me", headers=me, expect=401)

    statuses = {(s["method"], s["path"], s["status"]) for s in rec.samples}
    assert len(statuses) > 40, statuses
    samples = tmp_path / "samples.json"
    samples.write_text(json.dumps(rec.samples))
    doc = tmp_path / "openapi.json"
    doc.write_bytes(stack.get("/openapi.json").content)
    v = validate(node, str(doc), str(samples))
    assert v.returncode == 0, "answers that do not match the document:\n" + v.stderr
