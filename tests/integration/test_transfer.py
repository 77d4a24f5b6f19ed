"""Upload (multipart/form-data) and download (one file raw, the workspace as a
streamed .zip): round trips byte for byte, limits, hostile names, malformed
bodies, ownership, and the audit_log / jobs rows an upload writes."""
import hashlib
import io
import json
import socket
import urllib.parse
import uuid
import zipfile

import requests

BINARY = bytes(range(256)) * 4


def sha(data):
    return hashlib.sha256(data).hexdigest()


def make_user(stack, name=None):
    """A user, their workspace and an API key bound to them (all by SQL, so
    these tests do not depend on the users/sessions endpoints)."""
    name = name or "u" + uuid.uuid4().hex[:8]
    uid = stack.query("INSERT INTO users (username, email) VALUES (%s, %s) RETURNING id",
                      name, name + "@example.com")[0][0]
    ws = stack.query("INSERT INTO workspaces (user_id, name) VALUES (%s, %s) RETURNING id::text",
                     uid, "proj-" + name)[0][0]
    key = "k-" + uuid.uuid4().hex
    stack.query("INSERT INTO api_keys (user_id, name, key_hash) VALUES (%s, 'test', %s)",
                uid, sha(key.encode()))
    return {"id": uid, "ws": ws, "ws_name": "proj-" + name, "headers": {"X-API-Key": key}}


def add_session(stack, user, status):
    sid = str(uuid.uuid4())
    stack.query("INSERT INTO code_sessions (uuid, user_id, workspace_id, status) "
                "VALUES (%s, %s, %s, %s)", sid, user["id"], user["ws"], status)
    return sid


def multipart(parts, boundary="XbOuNdArY42"):
    """Raw multipart body: parts are (headers bytes, data bytes)."""
    out = b""
    for headers, data in parts:
        out += b"--" + boundary.encode() + b"\r\n" + headers + b"\r\n\r\n" + data + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return out, "multipart/form-data; boundary=" + boundary


def file_part(filename, data, name=b"files"):
    return (b'Content-Disposition: form-data; name="' + name + b'"; filename="' + filename +
            b'"\r\nContent-Type: application/octet-stream', data)


def upload_raw(stack, user, body, ctype, ws=None):
    return stack.post("/api/workspace/%s/upload" % (ws or user["ws"]), data=body,
                      headers=dict(user["headers"], **{"Content-Type": ctype}))


def items(stack, ws):
    rows = stack.query("SELECT path, type, content, content_bin, sha256, size, version "
                       "FROM workspace_items WHERE workspace_id = %s ORDER BY path", ws)
    return {r[0]: {"type": r[1], "content": r[2],
                   "bin": bytes(r[3]) if r[3] is not None else None,
                   "sha256": r[4], "size": r[5], "version": r[6]} for r in rows}


def download(stack, user, path, **kw):
    return stack.get("/api/workspace/%s/download/%s"
                     % (user["ws"], urllib.parse.quote(path, safe="/")),
                     headers=user["headers"], **kw)


def nothing_written(stack, user):
    assert items(stack, user["ws"]) == {}
    assert stack.audit("file.upload") == []
    assert stack.query("SELECT count(*) FROM jobs")[0][0] == 0


UPLOAD = [
    ("main.py", b"print('hello')\n"),
    ("data.bin", BINARY),
    ("caf\u00e9/na\u00efve \u00fcber.txt", "gr\u00fc\u00dfe \u2603\n".encode()),
    ("docs/deep/readme.md", b"# Title\n"),
    ("img/pixel.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + BINARY[:40]),
    ("nul.txt", b"text with a \x00 byte"),
    ("empty.json", b""),
]


def test_upload_then_download_each_file_byte_for_byte(stack):
    stack.start("gateway")
    a = make_user(stack)
    files = [("files", (name, data)) for name, data in UPLOAD]
    r = stack.post("/api/workspace/%s/upload" % a["ws"], files=files, data={"path": "proj/src"},
                   headers=a["headers"])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True
    assert body["message"] == "%d files uploaded" % len(UPLOAD)
    assert [f["path"] for f in body["files"]] == ["proj/src/" + n for n, _ in UPLOAD]
    for f, (_, data) in zip(body["files"], UPLOAD):
        assert f == {"path": f["path"], "size": len(data), "sha256": sha(data), "version": 1,
                     "created": True}

    rows = items(stack, a["ws"])
    # text in content, the rest (invalid UTF-8, NUL bytes) in content_bin
    assert rows["proj/src/main.py"]["content"] == "print('hello')\n"
    assert rows["proj/src/main.py"]["bin"] is None
    assert rows["proj/src/data.bin"]["bin"] == BINARY and rows["proj/src/data.bin"]["content"] is None
    assert rows["proj/src/nul.txt"]["bin"] == b"text with a \x00 byte"
    assert rows["proj/src/caf\u00e9"]["type"] == "folder"
    assert rows["proj/src/docs/deep"]["type"] == "folder"
    for name, data in UPLOAD:
        assert rows["proj/src/" + name]["sha256"] == sha(data)
        assert rows["proj/src/" + name]["size"] == len(data)

    expect_type = {"main.py": "text/x-python; charset=utf-8",
                   "data.bin": "application/octet-stream",
                   "docs/deep/readme.md": "text/plain; charset=utf-8",
                   "img/pixel.png": "image/png",
                   "nul.txt": "text/plain; charset=utf-8",
                   "empty.json": "application/json; charset=utf-8"}
    for name, data in UPLOAD:
        d = download(stack, a, "proj/src/" + name)
        assert d.status_code == 200, (name, d.text)
        assert d.content == data, name
        assert d.headers["ETag"] == '"%s"' % sha(data)
        if name in expect_type:
            assert d.headers["Content-Type"] == expect_type[name]
        assert d.headers["X-Content-Type-Options"] == "nosniff"
    d = download(stack, a, "proj/src/main.py")
    assert d.headers["Content-Disposition"] == 'attachment; filename="main.py"'
    d = download(stack, a, "proj/src/caf\u00e9/na\u00efve \u00fcber.txt")
    assert d.headers["Content-Disposition"] == (
        "attachment; filename=\"na_ve _ber.txt\"; "
        "filename*=UTF-8''na%C3%AFve%20%C3%BCber.txt")

    # one audit row for the upload, no job (no live session)
    audit = stack.audit("file.upload")
    assert len(audit) == 1
    assert audit[0]["target"] == a["ws"]
    assert audit[0]["user_id"] == a["id"]
    assert audit[0]["actor"].startswith("key:")
    assert audit[0]["ip"].endswith("127.0.0.1")  # "::ffff:127.0.0.1" on a dual-stack socket
    assert audit[0]["detail"]["count"] == len(UPLOAD)
    assert [(f["path"], f["size"]) for f in audit[0]["detail"]["files"]] == [
        ("proj/src/" + n, len(d)) for n, d in UPLOAD]
    assert stack.query("SELECT count(*) FROM jobs")[0][0] == 0

    # uploading again replaces: version 2, created false
    r = stack.post("/api/workspace/%s/upload" % a["ws"], headers=a["headers"],
                   files=[("file", ("proj/src/main.py", b"print(2)\n"))])
    assert r.status_code == 201, r.text
    assert r.json()["message"] == "1 file uploaded"
    assert r.json()["files"][0]["version"] == 2 and r.json()["files"][0]["created"] is False
    assert download(stack, a, "proj/src/main.py").content == b"print(2)\n"


def test_download_errors(stack):
    stack.start("gateway")
    a = make_user(stack)
    r = stack.post("/api/workspace/%s/upload" % a["ws"], headers=a["headers"],
                   files=[("files", ("dir/a.txt", b"a"))])
    assert r.status_code == 201, r.text
    r = stack.request("HEAD", "/api/workspace/%s/download/dir/a.txt" % a["ws"],
                      headers=a["headers"])
    assert r.status_code == 200 and r.headers["Content-Length"] == "1" and r.content == b""
    r = stack.request("HEAD", "/api/workspace/%s/download" % a["ws"], headers=a["headers"])
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/zip"
    r = download(stack, a, "dir")
    assert r.status_code == 409 and "zip" in r.json()["detail"]
    r = download(stack, a, "dir/missing.txt")
    assert r.status_code == 404 and r.json()["detail"] == "File not found: dir/missing.txt"
    r = download(stack, a, "dir/%2e%2e/%2e%2e/etc/passwd")
    # lws leaves %2e undecoded (a literal name) or resolves it: never a way out
    assert r.status_code in (404, 422), r.text
    r = stack.get("/api/workspace/not-a-uuid/download/x", headers=a["headers"])
    assert r.status_code == 422
    r = stack.get("/api/workspace/%s/download/x" % uuid.uuid4(), headers=a["headers"])
    assert r.status_code == 404 and r.json()["detail"] == "Workspace not found"


def test_live_session_gets_one_push_job(stack):
    stack.start("gateway")
    a = make_user(stack)
    ready = add_session(stack, a, "ready")
    add_session(stack, a, "sleeping")  # not live: no job for it
    # {id} may be the session uuid
    r = stack.post("/api/workspace/%s/upload" % ready, headers=a["headers"],
                   files=[("files", ("x.py", b"x = 1\n")), ("files", ("lib/y.py", b"y = 2\n"))])
    assert r.status_code == 201, r.text
    jobs = stack.query("SELECT id::text, kind, role, session, state, args::text FROM jobs")
    assert len(jobs) == 1
    jid, kind, role, session, state, args = jobs[0]
    assert (kind, role, session) == ("push", "sync", ready)
    assert state in ("queued", "running", "done")
    assert json.loads(args) == {"workspace_id": a["ws"], "op": "write",
                                "paths": ["x.py", "lib/y.py"]}
    entries = stack.r.xrange("q:sync")
    assert len(entries) == 1
    assert jid.encode() in entries[0][1][b"j"]
    assert stack.audit("file.upload")[0]["target"] == a["ws"]


def test_file_over_max_file_size_rejects_the_whole_upload(stack):
    stack.start("gateway", env={"MAX_FILE_SIZE": "1024", "ATELIER_UPLOAD_MAX_BYTES": "8192"})
    a = make_user(stack)
    add_session(stack, a, "ready")
    files = [("files", ("ok1.txt", b"a" * 1024)), ("files", ("big.bin", b"b" * 1025)),
             ("files", ("ok2.txt", b"c"))]
    r = stack.post("/api/workspace/%s/upload" % a["ws"], files=files, headers=a["headers"])
    assert r.status_code == 413, r.text
    assert "big.bin" in r.json()["detail"] and "MAX_FILE_SIZE" in r.json()["detail"]
    nothing_written(stack, a)
    # the whole body over ATELIER_UPLOAD_MAX_BYTES: refused before it is read
    many = [("files", ("f%d.txt" % i, b"z" * 1000)) for i in range(9)]
    r = stack.post("/api/workspace/%s/upload" % a["ws"], files=many, headers=a["headers"])
    assert r.status_code == 413, r.text
    nothing_written(stack, a)
    # exactly MAX_FILE_SIZE is fine
    r = stack.post("/api/workspace/%s/upload" % a["ws"], files=files[:1], headers=a["headers"])
    assert r.status_code == 201, r.text


def test_a_thousand_files_in_one_upload_and_not_one_more(stack):
    stack.start("gateway")
    a = make_user(stack)
    sid = add_session(stack, a, "loading_files")
    files = [("files", ("many/f%04d.txt" % i, b"%d" % i)) for i in range(1000)]
    r = stack.post("/api/workspace/%s/upload" % a["ws"], files=files, headers=a["headers"],
                   timeout=60)
    assert r.status_code == 201, r.text
    assert r.json()["message"] == "1000 files uploaded"
    assert stack.query("SELECT count(*) FROM workspace_items WHERE workspace_id = %s "
                       "AND type = 'file'", a["ws"])[0][0] == 1000
    assert download(stack, a, "many/f0999.txt").content == b"999"
    args = json.loads(stack.query("SELECT args::text FROM jobs WHERE session = %s", sid)[0][0])
    assert len(args["paths"]) == 1000
    files.append(("files", ("many/one-more.txt", b"x")))
    r = stack.post("/api/workspace/%s/upload" % a["ws"], files=files, headers=a["headers"],
                   timeout=60)
    assert r.status_code == 413, r.text
    assert len(stack.audit("file.upload")) == 1


def test_hostile_file_names_are_refused_and_nothing_is_written(stack):
    stack.start("gateway")
    a = make_user(stack)
    good = file_part(b"good.txt", b"fine")
    for name in (b"../x", b"/etc/passwd", b"a\\b", b"a\x00b", b"a/../../b", b"..",
                 b"x" * 256, b"bad\xff\xfe.txt", b"a%0Ab", b""):
        body, ctype = multipart([good, file_part(name, b"evil")])
        r = upload_raw(stack, a, body, ctype)
        assert r.status_code == 422, (name, r.status_code, r.text)
        assert "detail" in r.json()
    # a hostile folder prefix
    for prefix in (b"../up", b"/abs", b"a\\b"):
        body, ctype = multipart([(b'Content-Disposition: form-data; name="path"', prefix), good])
        r = upload_raw(stack, a, body, ctype)
        assert r.status_code == 422, (prefix, r.text)
    # requests' own encoding of the same names
    for name in ("../x", "/etc/passwd", "a\\b"):
        r = stack.post("/api/workspace/%s/upload" % a["ws"], headers=a["headers"],
                       files=[("files", ("good.txt", b"fine")), ("files", (name, b"evil"))])
        assert r.status_code == 422, (name, r.text)
    # the same path twice in one upload
    body, ctype = multipart([good, file_part(b"./good.txt", b"again")])
    assert upload_raw(stack, a, body, ctype).status_code == 422
    nothing_written(stack, a)


def test_malformed_multipart_is_400_and_wrong_type_415(stack):
    stack.start("gateway")
    a = make_user(stack)
    good, ctype = multipart([file_part(b"a.txt", b"data")])
    cases = {
        "no boundary": (good, "multipart/form-data"),
        "empty boundary": (good, "multipart/form-data; boundary="),
        "other boundary": (good, "multipart/form-data; boundary=nothere"),
        "truncated": (good[:-30], ctype),
        "no closing delimiter": (good[:-len(b"--XbOuNdArY42--\r\n")], ctype),
        "missing filename": (multipart([(b'Content-Disposition: form-data; name="files"',
                                         b"data")])[0], ctype),
        "header without colon": (multipart([(b"Content-Disposition form-data", b"x")])[0],
                                 ctype),
        "no content-disposition": (multipart([(b"Content-Type: text/plain", b"x")])[0], ctype),
        "not form-data": (multipart([(b'Content-Disposition: attachment; name="files"; '
                                      b'filename="a"', b"x")])[0], ctype),
        "unterminated quote": (multipart([(b'Content-Disposition: form-data; name="files; '
                                           b'filename="a', b"x")])[0], ctype),
        "base64 transfer encoding": (multipart([(b'Content-Disposition: form-data; '
                                                 b'name="files"; filename="a"\r\n'
                                                 b'Content-Transfer-Encoding: base64',
                                                 b"eA==")])[0], ctype),
        "folded header": (multipart([(b'Content-Disposition: form-data;\r\n name="files"',
                                      b"x")])[0], ctype),
        "empty body": (b"", ctype),
    }
    for what, (body, ct) in cases.items():
        r = upload_raw(stack, a, body, ct)
        assert r.status_code == 400, (what, r.status_code, r.text)
        assert r.json()["detail"].startswith("Malformed multipart body"), (what, r.text)
    for ct in ("application/json", "text/plain", "application/x-www-form-urlencoded"):
        r = upload_raw(stack, a, good, ct)
        assert r.status_code == 415, (ct, r.text)
    r = stack.post("/api/workspace/%s/upload" % a["ws"], data=good, headers=a["headers"])
    assert r.status_code == 415
    # well-formed but no file parts
    body, ct = multipart([(b'Content-Disposition: form-data; name="path"', b"src")])
    assert upload_raw(stack, a, body, ct).status_code == 422
    nothing_written(stack, a)


def test_multipart_variants_that_are_valid(stack):
    """A preamble, quoted boundary, filename* (RFC 5987), %22 in a browser's
    filename, a transport-padded delimiter and an epilogue all parse."""
    stack.start("gateway")
    a = make_user(stack)
    b = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    body = (b"preamble to ignore\r\n--" + b.encode() + b"  \r\n"
            b'Content-Disposition: form-data; name="files"; filename="q%22uote.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nA\r\n--" + b.encode() + b"\r\n"
            b"content-disposition: form-data; name=file; filename=\"fallback.txt\"; "
            b"filename*=UTF-8''%E2%82%AC%20sign.txt\r\n\r\n\xe2\x82\xac\r\n--" + b.encode() +
            b"\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nignored\r\n--" +
            b.encode() + b"--\r\nepilogue")
    r = upload_raw(stack, a, body, 'multipart/form-data; charset=utf-8; boundary="%s"' % b)
    assert r.status_code == 201, r.text
    assert [f["path"] for f in r.json()["files"]] == ['q"uote.txt', "\u20ac sign.txt"]
    assert download(stack, a, "\u20ac sign.txt").content == "\u20ac".encode()


def zip_of(stack, user, query="", **kw):
    r = stack.get("/api/workspace/%s/download%s" % (user["ws"], query), headers=user["headers"],
                  timeout=60, **kw)
    return r


def test_zip_download_holds_exactly_the_workspace(stack):
    stack.start("gateway")
    a = make_user(stack)
    files = [("files", (name, data)) for name, data in UPLOAD]
    r = stack.post("/api/workspace/%s/upload" % a["ws"], files=files, headers=a["headers"])
    assert r.status_code == 201, r.text
    r = zip_of(stack, a)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "application/zip"
    assert r.headers["Content-Disposition"] == 'attachment; filename="%s.zip"' % a["ws_name"]
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert z.testzip() is None
    folders = {"caf\u00e9/", "docs/", "docs/deep/", "img/"}
    assert set(z.namelist()) == {n for n, _ in UPLOAD} | folders
    for name, data in UPLOAD:
        assert z.read(name) == data, name
        assert z.getinfo(name).flag_bits & 0x800 or name.isascii()  # UTF-8 names flagged
    for name in folders:
        assert z.getinfo(name).is_dir()
    assert (z.getinfo("main.py").external_attr >> 16) & 0o777 == 0o644

    # one folder: entries keep the folder's own name
    r = zip_of(stack, a, "?path=docs")
    assert r.status_code == 200
    assert r.headers["Content-Disposition"] == 'attachment; filename="docs.zip"'
    z = zipfile.ZipFile(io.BytesIO(r.content))
    assert sorted(z.namelist()) == ["docs/", "docs/deep/", "docs/deep/readme.md"]
    r = zip_of(stack, a, "?path=docs/deep")
    assert sorted(zipfile.ZipFile(io.BytesIO(r.content)).namelist()) == ["deep/",
                                                                         "deep/readme.md"]
    assert zip_of(stack, a, "?path=main.py").status_code == 409
    assert zip_of(stack, a, "?path=nope").status_code == 404
    assert zip_of(stack, a, "?path=../etc").status_code == 422
    # an empty workspace is an empty zip
    b = make_user(stack)
    r = zip_of(stack, b)
    assert r.status_code == 200 and zipfile.ZipFile(io.BytesIO(r.content)).namelist() == []
    assert stack.query("SELECT count(*) FROM audit_log")[0][0] == 1  # downloads are reads


def fill(stack, ws, n):
    """n files in three folders plus two large ones, written by SQL."""
    stack.query("SELECT ws_put_file(%s::uuid, 'd' || (i %% 3) || '/f' || i || '.txt', "
                "repeat('line ' || i || E'\\n', i), NULL, "
                "encode(sha256(convert_to(repeat('line ' || i || E'\\n', i), 'UTF8')), 'hex'), "
                "octet_length(repeat('line ' || i || E'\\n', i)), NULL, NULL, 100000) "
                "FROM generate_series(1, %s) i", ws, n)
    big = bytes((i * 7919) % 251 for i in range(3 * 1024 * 1024 + 17))
    stack.query("SELECT ws_put_file(%s::uuid, 'big/blob.bin', NULL, %s, %s, %s, NULL, NULL, "
                "100000)", ws, big, sha(big), len(big))
    text = ("x" * 99 + "\n") * 50000  # 5 MB: larger than one page's byte budget
    stack.query("SELECT ws_put_file(%s::uuid, 'big/text.txt', %s, NULL, %s, %s, NULL, NULL, "
                "100000)", ws, text, sha(text.encode()), len(text))
    return big, text.encode()


def test_large_workspace_streams_completely(stack):
    stack.start("gateway")
    a = make_user(stack)
    big, text = fill(stack, a["ws"], 300)
    r = zip_of(stack, a)
    assert r.status_code == 200
    assert "Content-Length" not in r.headers
    z = zipfile.ZipFile(io.BytesIO(r.content))
    names = z.namelist()
    assert len(names) == len(set(names)) == 300 + 2 + 4  # files, big ones, 4 folders
    for i in range(1, 301):
        assert z.read("d%d/f%d.txt" % (i % 3, i)) == ("line %d\n" % i).encode() * i
    assert z.read("big/blob.bin") == big
    assert z.read("big/text.txt") == text
    assert z.getinfo("big/text.txt").compress_size < len(text) // 10  # text is deflated


def test_client_leaving_mid_zip_frees_everything(stack):
    gw = stack.start("gateway")
    a = make_user(stack)
    fill(stack, a["ws"], 50)
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", stack.port))
        s.sendall(("GET /api/workspace/%s/download HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\n\r\n"
                   % (a["ws"], a["headers"]["X-API-Key"])).encode())
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        s.close()
    # and while the first page is still being fetched
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", stack.port))
        s.sendall(("GET /api/workspace/%s/download HTTP/1.1\r\nHost: x\r\nX-API-Key: %s\r\n\r\n"
                   % (a["ws"], a["headers"]["X-API-Key"])).encode())
        s.close()
    r = zip_of(stack, a, "?path=d1")
    assert r.status_code == 200 and len(zipfile.ZipFile(io.BytesIO(r.content)).namelist()) == 18
    assert gw.alive()  # leaks are checked in the log when the stack closes


def test_other_users_workspace_is_404_everywhere(stack):
    stack.start("gateway")
    a, b = make_user(stack), make_user(stack)
    r = stack.post("/api/workspace/%s/upload" % a["ws"], headers=a["headers"],
                   files=[("files", ("secret.txt", b"s"))])
    assert r.status_code == 201
    sess = add_session(stack, a, "ready")
    for ws in (a["ws"], sess):
        r = stack.post("/api/workspace/%s/upload" % ws, headers=b["headers"],
                       files=[("files", ("x.txt", b"x"))])
        assert r.status_code == 404 and r.json()["detail"] == "Workspace not found", r.text
        r = stack.get("/api/workspace/%s/download/secret.txt" % ws, headers=b["headers"])
        assert r.status_code == 404 and r.json()["detail"] == "Workspace not found"
        r = stack.get("/api/workspace/%s/download" % ws, headers=b["headers"])
        assert r.status_code == 404 and r.json()["detail"] == "Workspace not found"
    # a service key naming another user sees nothing of a's either
    admin = stack.admin_headers()
    r = stack.get("/api/workspace/%s/download/secret.txt?user_id=%d" % (a["ws"], b["id"]),
                  headers=admin)
    assert r.status_code == 404
    r = stack.get("/api/workspace/%s/download/secret.txt" % a["ws"], headers=admin)
    assert r.status_code == 200 and r.content == b"s"
    # a user key naming someone else: 403
    r = stack.get("/api/workspace/%s/download?user_id=%d" % (a["ws"], b["id"]),
                  headers=a["headers"])
    assert r.status_code == 403
    # no credentials
    assert stack.get("/api/workspace/%s/download" % a["ws"]).status_code == 401
    r = requests.post(stack.url + "/api/workspace/%s/upload" % a["ws"],
                      files=[("files", ("x.txt", b"x"))], timeout=10)
    assert r.status_code == 401
    assert list(items(stack, a["ws"])) == ["secret.txt"]
    assert items(stack, b["ws"]) == {}
    assert len(stack.audit("file.upload")) == 1
