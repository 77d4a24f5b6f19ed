"""The sync-worker's `load` job: a workspace's rows in PostgreSQL become
files in its volume through one tar stream (atelier-extract), confined to
the volume whatever it already holds."""
import base64
import hashlib
import os

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="load chroots: needs root")


def open_volume(stack, tmp_path):
    base = tmp_path / "ws"
    base.mkdir()
    env = {"WORKSPACE_BASE_PATH": str(base)}
    stack.start("gateway", env=env)
    stack.start("sync-worker", env=env)
    user, h = stack.new_user()
    s = stack.post("/api/sessions", json={"name": "load"}, headers=h).json()
    root = base / str(user["id"])
    root.mkdir()
    os.chown(root, 1000, 1000)
    return s, h, root


def load(stack, s, root, **extra):
    args = {"workspace_id": s["workspace_id"], "root": str(root), "uid": 1000, "gid": 1000}
    args.update(extra)
    r = stack.post("/api/jobs", json={"role": "sync", "kind": "load", "args": args, "wait": True,
                                      "timeout_ms": 30000}, headers=stack.admin_headers(),
                   timeout=40)
    assert r.status_code in (200, 500), r.text  # 500: the job failed; its reply says why
    return r.json()


def test_load_writes_every_file_with_its_bytes_mode_and_owner(stack, tmp_path):
    s, h, root = open_volume(stack, tmp_path)
    u = "/api/workspace/%s/files/" % s["uuid"]
    blob = bytes(range(256)) * 3
    assert stack.request("PUT", u + "src/app.py", json={"content": "print(42)\n", "mode": 0o755},
                         headers=h).ok
    assert stack.request("PUT", u + "data/blob.bin", headers=h,
                         json={"content": base64.b64encode(blob).decode(),
                               "encoding": "base64"}).ok
    assert stack.request("PUT", u + "caf\u00e9/\u65e5\u672c.txt", json={"content": "\u00e9\n"},
                         headers=h).ok
    assert stack.post("/api/workspace/%s/folders" % s["uuid"], json={"path": "empty/dir"},
                      headers=h).status_code == 201
    r = load(stack, s, root)
    assert r["ok"], r
    assert r["result"]["files"] == 4 and r["result"]["folders"] >= 5
    assert (root / "script.py").read_text() == 'print("Hello from Atelier!")\n'
    assert (root / "src/app.py").read_bytes() == b"print(42)\n"
    assert (root / "src/app.py").stat().st_mode & 0o777 == 0o755
    assert (root / "data/blob.bin").read_bytes() == blob
    assert (root / "caf\u00e9/\u65e5\u672c.txt").read_text() == "\u00e9\n"
    assert (root / "empty/dir").is_dir()
    for p in root.rglob("*"):
        assert p.stat().st_uid == 1000 and p.stat().st_gid == 1000, p
    job = stack.job(r["id"])
    assert job["state"] == "done"


def test_load_never_writes_through_a_symlink_out_of_the_volume(stack, tmp_path):
    s, h, root = open_volume(stack, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), str(root / "src"))
    os.symlink("/etc", str(root / "etc"))
    u = "/api/workspace/%s/files/" % s["uuid"]
    assert stack.request("PUT", u + "src/app.py", json={"content": "x\n"}, headers=h).ok
    assert stack.request("PUT", u + "etc/passwd-atelier", json={"content": "x\n"},
                         headers=h).ok
    load(stack, s, root)
    assert list(outside.iterdir()) == []
    assert not os.path.exists("/etc/passwd-atelier")


def test_load_refuses_a_root_outside_the_base(stack, tmp_path):
    s, h, root = open_volume(stack, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = load(stack, s, elsewhere)
    assert not r["ok"]
    assert "WORKSPACE_BASE_PATH" in stack.job(r["id"])["error"]
    assert list(elsewhere.iterdir()) == []
    r = load(stack, s, root / "..")
    assert not r["ok"]


def test_load_streams_pages_of_many_and_large_files(stack, tmp_path):
    s, h, root = open_volume(stack, tmp_path)
    big = "x" * (900 * 1024) + "\n"
    digest = hashlib.sha256(big.encode()).hexdigest()
    stack.query("INSERT INTO workspace_items (workspace_id, name, path, type, content, size, sha256) "
                "SELECT %s, 'f' || i || '.txt', 'many/f' || lpad(i::text, 4, '0') || '.txt', "
                "'file', 'line ' || i || E'\\n', length('line ' || i || E'\\n'), 'x' "
                "FROM generate_series(1, 1500) i", s["workspace_id"])
    stack.query("INSERT INTO workspace_items (workspace_id, name, path, type) "
                "VALUES (%s, 'many', 'many', 'folder')", s["workspace_id"])
    for i in range(8):  # 7 MiB: more than one 4 MiB page
        stack.query("INSERT INTO workspace_items (workspace_id, name, path, type, content, size, "
                    "sha256) VALUES (%s, %s, %s, 'file', %s, %s, %s)", s["workspace_id"],
                    "big%d.txt" % i, "big%d.txt" % i, big, len(big), digest)
    r = load(stack, s, root)
    assert r["ok"], r
    assert r["result"]["files"] == 1 + 1500 + 8
    assert len(list((root / "many").iterdir())) == 1500
    assert (root / "many/f0042.txt").read_text() == "line 42\n"
    for i in range(8):
        assert hashlib.sha256((root / ("big%d.txt" % i)).read_bytes()).hexdigest() == digest
