"""The web IDE served by the gateway (gateway/routes_web.c, static_files.c),
from a web root of its own (ATELIER_WEB_ROOT) holding a stand-in for
gateway/web/dist: the app's page on its client routes with its security
headers and revalidation, hashed assets with and without gzip, names that
could reach other files refused, a 503 page until the bundle is built, and
/docs served from the same cache."""
import gzip
import hashlib
import http.client
import os
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from harness import wait_for

CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "font-src 'self' data:; img-src 'self' data: blob:; connect-src 'self'; "
       "worker-src 'self' blob:; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
INDEX = (b'<!doctype html>\n<html><head><link rel="stylesheet" href="/assets/app-4F2A.css">'
         b'<script type="module" src="/assets/app-4F2A.js"></script></head>'
         b'<body><div id="app"></div></body></html>\n')
JS = b"export const greeting = 'atelier';\n" * 400
CSS = b"body { margin: 0; }\n" * 100
WOFF2 = bytes(range(256)) * 8
REDOC = b"/* redoc stand-in */\n"
SECRET = b"not for the web\n"


def make_bundle(root):
    """root/web/dist as build.mjs makes it, and files it must not serve."""
    assets = root / "web" / "dist" / "assets"
    assets.mkdir(parents=True, exist_ok=True)
    (assets / "app-4F2A.js").write_bytes(JS)
    (assets / "app-4F2A.js.gz").write_bytes(gzip.compress(JS))
    (assets / "app-4F2A.css").write_bytes(CSS)
    (assets / "app-4F2A.css.gz").write_bytes(gzip.compress(CSS))
    (assets / "codicon-77AB.woff2").write_bytes(WOFF2)  # not gzipped by the build
    (assets / "only-9C.js.gz").write_bytes(gzip.compress(JS))  # no original beside it
    for name, data in (("font-1.ttf", b"ttf"), ("icon-1.svg", b"<svg/>"), ("logo-1.png", b"png"),
                       ("data-1.json", b"{}"), ("app-1.js.map", b"{}"),
                       ("app-1.LEGAL.txt", b"MIT"), ("blob-1.wasm", b"\0asm"),
                       ("a..b.js", b"x"), (".hidden", b"x")):
        (assets / name).write_bytes(data)
    (assets / "sub").mkdir(exist_ok=True)
    (assets / "sub" / "x.js").write_bytes(b"x")
    (root / "web" / "secret.txt").write_bytes(SECRET)
    (root / "secret.txt").write_bytes(SECRET)
    # the index last: the bundle is complete once it is there
    (root / "web" / "dist" / "index.html").write_bytes(INDEX)


def etag_of(data):
    return '"%s"' % hashlib.sha256(data).hexdigest()


def raw(stack, method, path, headers=None):
    """The request exactly as written (no path normalisation, no decoding
    of the body): (status, lower-case headers, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        c.endheaders()
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def start(stack, root):
    return stack.start("gateway", env={"ATELIER_WEB_ROOT": str(root)})


def test_pages_answer_the_app_with_its_headers_and_revalidate(stack, tmp_path):
    root = tmp_path / "root"
    make_bundle(root)
    start(stack, root)
    sid = str(uuid.uuid4())
    for path in ("/", "/login", "/register", "/w/" + sid, "/w/%s/" % sid, "/login?next=%2Fw%2Fx"):
        st, h, body = raw(stack, "GET", path)
        assert st == 200, (path, st, body[:200])
        assert body == INDEX, path
        assert h["content-type"] == "text/html; charset=utf-8"
        assert h["cache-control"] == "no-cache"
        assert h["content-security-policy"] == CSP
        assert h["referrer-policy"] == "no-referrer"
        assert h["x-content-type-options"] == "nosniff"
        assert h["etag"] == etag_of(INDEX)

    tag = etag_of(INDEX)
    for inm in (tag, "W/" + tag, '"other", ' + tag, "*"):
        st, h, body = raw(stack, "GET", "/w/" + sid, {"If-None-Match": inm})
        assert st == 304 and body == b"", (inm, st)
        assert h["etag"] == tag and h["cache-control"] == "no-cache"
    st, _, body = raw(stack, "GET", "/", {"If-None-Match": '"%s"' % ("0" * 64)})
    assert st == 200 and body == INDEX
    # HEAD: the headers of the GET, no body; then the connection still works
    st, h, body = raw(stack, "HEAD", "/")
    assert st == 200 and body == b"" and int(h["content-length"]) == len(INDEX)
    with requests.Session() as s:
        assert s.head(stack.url + "/login").status_code == 200
        assert s.get(stack.url + "/", headers={"If-None-Match": tag}).status_code == 304
        assert s.get(stack.url + "/register").content == INDEX  # after a 304 on the same socket

    # the API's own paths stay the API's: JSON 404s, not the page
    for path in ("/api/nope", "/api/workspace", "/w/", "/w/a/b", "/index.html", "/dist/index.html",
                 "/web/dist/index.html", "/loginx"):
        r = stack.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert r.json() == {"detail": "Not Found"}, path
    assert stack.get("/api/health").json()["status"]
    assert stack.post("/").status_code == 405


def test_assets_with_and_without_gzip(stack, tmp_path):
    root = tmp_path / "root"
    make_bundle(root)
    start(stack, root)
    gz = (root / "web" / "dist" / "assets" / "app-4F2A.js.gz").read_bytes()

    for ae in ("gzip", "gzip, deflate, br", "br;q=1.0, gzip;q=0.5", "*", "identity, *;q=0.1",
               "GZIP"):
        st, h, body = raw(stack, "GET", "/assets/app-4F2A.js", {"Accept-Encoding": ae})
        assert st == 200, ae
        assert h.get("content-encoding") == "gzip", ae
        assert body == gz and gzip.decompress(body) == JS, ae
        assert h["vary"].lower() == "accept-encoding"
        assert h["content-type"] == "application/javascript; charset=utf-8"
        assert h["cache-control"] == "public, max-age=31536000, immutable"
        assert h["x-content-type-options"] == "nosniff"
        assert h["etag"] == etag_of(gz)
    for ae in (None, "identity", "gzip;q=0", "br, gzip;q=0.000", "gzip; x=1; Q=0", "*;q=0",
               "deflate"):
        st, h, body = raw(stack, "GET", "/assets/app-4F2A.js",
                          {"Accept-Encoding": ae} if ae else {})
        assert st == 200 and body == JS, ae
        assert "content-encoding" not in h, ae
        assert h["vary"].lower() == "accept-encoding", ae  # a .gz exists: the answer varies
        assert h["etag"] == etag_of(JS)

    # each representation revalidates against its own tag
    st, h, body = raw(stack, "GET", "/assets/app-4F2A.js",
                      {"Accept-Encoding": "gzip", "If-None-Match": etag_of(gz)})
    assert st == 304 and body == b"" and h["content-encoding"] == "gzip"
    st, _, body = raw(stack, "GET", "/assets/app-4F2A.js",
                      {"Accept-Encoding": "gzip", "If-None-Match": etag_of(JS)})
    assert st == 200 and body == gz
    st, h, body = raw(stack, "HEAD", "/assets/app-4F2A.css", {"Accept-Encoding": "gzip"})
    assert st == 200 and body == b"" and h["content-encoding"] == "gzip"
    assert h["content-type"] == "text/css; charset=utf-8"

    # no .gz beside it: the file itself, with no Vary
    st, h, body = raw(stack, "GET", "/assets/codicon-77AB.woff2", {"Accept-Encoding": "gzip"})
    assert st == 200 and body == WOFF2 and h["content-type"] == "font/woff2"
    assert "content-encoding" not in h and "vary" not in h
    # only the .gz: served to clients that take it, else not found
    st, h, body = raw(stack, "GET", "/assets/only-9C.js", {"Accept-Encoding": "gzip"})
    assert st == 200 and gzip.decompress(body) == JS
    assert raw(stack, "GET", "/assets/only-9C.js")[0] == 404

    types = {"font-1.ttf": "font/ttf", "icon-1.svg": "image/svg+xml", "logo-1.png": "image/png",
             "data-1.json": "application/json", "app-1.js.map": "application/json",
             "app-1.LEGAL.txt": "text/plain; charset=utf-8",
             "blob-1.wasm": "application/octet-stream"}
    for name, ctype in types.items():
        r = stack.get("/assets/" + name)
        assert r.status_code == 200, name
        assert r.headers["content-type"] == ctype, name
        assert r.content == (root / "web" / "dist" / "assets" / name).read_bytes()

    # requests (what a script would use) decodes the gzip it asked for
    r = stack.get("/assets/app-4F2A.js")
    assert r.content == JS and r.headers["content-encoding"] == "gzip"


def test_requests_during_the_first_read_wait_for_it(stack, tmp_path):
    """Requests that arrive together while a file is being read all get it,
    and the file is read once."""
    root = tmp_path / "root"
    make_bundle(root)
    gw = start(stack, root)
    gz = (root / "web" / "dist" / "assets" / "app-4F2A.js.gz").read_bytes()

    def fetch(i):
        path = "/assets/app-4F2A.js" if i % 3 == 0 else "/"
        return i, raw(stack, "GET", path, {"Accept-Encoding": "gzip"} if i % 2 else {})

    with ThreadPoolExecutor(max_workers=24) as pool:
        for i, (st, _, body) in pool.map(fetch, range(48)):
            assert st == 200, i
            assert body == ((gz if i % 2 else JS) if i % 3 == 0 else INDEX), i
    for rel in ("web/dist/index.html", "web/dist/assets/app-4F2A.js",
                "web/dist/assets/app-4F2A.js.gz"):
        loaded = [line for line in gw.log().splitlines()
                  if "event=static_file_loaded" in line and line.split("path=")[1].split()[0]
                  == os.path.join(str(root), rel)]
        assert len(loaded) == 1, (rel, loaded)


def test_asset_names_that_could_reach_other_files_are_not_found(stack, tmp_path):
    root = tmp_path / "root"
    make_bundle(root)
    start(stack, root)
    for path in ("/assets/app-4F2A.js.gz", "/assets/..%2fsecret.txt",
                 "/assets/%2e%2e%2fsecret.txt", "/assets/..%2F..%2Fsecret.txt",
                 "/assets/%2e%2e%2f%2e%2e%2fsecret.txt", "/assets/../secret.txt",
                 "/assets/../../secret.txt", "/assets/a..b.js", "/assets/.hidden",
                 "/assets/%2e", "/assets/sub", "/assets/sub/x.js", "/assets/sub%2fx.js",
                 "/assets/x/..", "/assets/-x.js", "/assets/_x.js", "/assets/a%20b.js",
                 "/assets/nope-1.js", "/assets/" + "a" * 300 + ".js", "/assets/", "/assets"):
        st, h, body = raw(stack, "GET", path, {"Accept-Encoding": "gzip"})
        assert st == 404, (path, st, body[:200])
        assert h["content-type"].startswith("application/json"), path
        assert SECRET not in body, path
    # libwebsockets removes dot segments before routing (RFC 3986 5.2.4, as
    # browsers do), "%2e%2e" included: these are requests for / itself
    for path in ("/assets/..", "/assets/%2e%2e", "/assets/%2E%2E"):
        st, _, body = raw(stack, "GET", path)
        assert st == 200 and body == INDEX, (path, st, body[:200])


def test_made_up_names_do_not_crowd_out_the_bundle(stack, tmp_path):
    """The cache holds at most 1024 names: a client asking for more names
    that do not exist does not keep the real assets from being served."""
    root = tmp_path / "root"
    make_bundle(root)
    start(stack, root)
    with requests.Session() as s:
        for i in range(1100):
            assert s.get(stack.url + "/assets/nope-%d.js" % i).status_code == 404
        r = s.get(stack.url + "/assets/app-4F2A.css")
        assert r.status_code == 200 and r.content == CSS
        assert s.get(stack.url + "/").content == INDEX


def test_file_over_the_limit_is_refused(stack, tmp_path):
    root = tmp_path / "root"
    make_bundle(root)
    with open(root / "web" / "dist" / "assets" / "huge-1.js", "wb") as f:
        f.truncate(16 * 1024 * 1024 + 1)  # sparse: nothing is written
    gw = start(stack, root)
    r = stack.get("/assets/huge-1.js", headers={"Accept-Encoding": "identity"})
    assert r.status_code == 503 and "larger" in r.json()["detail"]
    assert "over the 16777216-byte limit" in gw.log()
    assert stack.get("/assets/app-4F2A.js").status_code == 200


def test_missing_bundle_answers_a_503_page_until_it_is_built(stack, tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    gw = start(stack, root)
    for path in ("/", "/w/" + str(uuid.uuid4())):
        r = stack.get(path)
        assert r.status_code == 503, path
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert "not built" in r.text and "make deps" in r.text
        assert "ATELIER_WEB_ROOT" in r.text and "node build.mjs" in r.text
        assert r.headers["cache-control"] == "no-store"
        assert str(root) not in r.text  # the path is for the log, not for clients
    assert stack.get("/assets/app-4F2A.js").status_code == 404
    index = os.path.join(str(root), "web", "dist", "index.html")
    wait_for(lambda: any("level=warn" in line and "event=static_file_unreadable" in line
                         and index in line for line in gw.log().splitlines()),
             what="a warning naming %s" % index)

    make_bundle(root)  # built while the gateway runs: picked up without a restart
    wait_for(lambda: stack.get("/").status_code == 200, timeout=10, what="/ after the build")
    assert stack.get("/").content == INDEX
    assert stack.get("/assets/app-4F2A.js").content == JS


def test_docs_and_the_app_share_the_web_root(stack, tmp_path):
    root = tmp_path / "root"
    make_bundle(root)
    bundles = root / "docs" / "node_modules" / "redoc" / "bundles"
    bundles.mkdir(parents=True)
    (bundles / "redoc.standalone.js").write_bytes(REDOC)
    start(stack, root)
    r = stack.get("/docs")
    assert r.status_code == 200 and "content-security-policy" in r.headers
    js = stack.get("/docs/redoc.standalone.js")
    assert js.status_code == 200 and js.content == REDOC
    assert js.headers["cache-control"] == "public, max-age=86400"
    assert js.headers["etag"] == etag_of(REDOC)
    again = stack.get("/docs/redoc.standalone.js", headers={"If-None-Match": etag_of(REDOC)})
    assert again.status_code == 304
    assert stack.get("/docs/redoc.standalone.js.LICENSE.txt").status_code == 503  # not there
    assert stack.get("/").content == INDEX
