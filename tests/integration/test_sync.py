"""File sync both ways (issue 7) on the real stack: gateway, session-manager,
sync-worker, real sandboxes. Saves through the API reach the volume;
what the sandbox writes reaches the rows and file_changed events."""
import json
import os
import time

import pytest
import websocket

from harness import wait_for
from sandboxes import shared_runtime


@pytest.fixture(scope="module")
def rt(services, tmp_path_factory):
    if os.geteuid() != 0 or not os.access("/usr/bin/bwrap", os.X_OK):
        pytest.skip("sandboxes need root and bubblewrap")
    yield from shared_runtime(services, tmp_path_factory, {"ATELIER_MAX_FILES": "20000"})


@pytest.fixture(scope="module")
def box(rt):
    return rt.new_box("sync")


def files(box):
    r = box.stack.get("/api/workspace/%s/files" % box.uuid, headers=box.h)
    assert r.status_code == 200, r.text
    return {f["path"]: f for f in r.json()}


def content(box, path):
    r = box.stack.get("/api/workspace/%s/files/%s" % (box.uuid, path), headers=box.h)
    return r.json().get("content") if r.status_code == 200 else None


def put(box, path, text, **kw):
    r = box.stack.request("PUT", "/api/workspace/%s/files/%s" % (box.uuid, path),
                          headers=box.h, json={"content": text}, **kw)
    assert r.status_code in (200, 201), r.text
    return r


def version(box, path):
    rows = box.stack.query("SELECT version FROM workspace_items WHERE workspace_id = %s "
                           "AND path = %s", box.workspace_id, path)
    return rows[0][0] if rows else None


def on_disk(box, path):
    try:
        with open(os.path.join(box.volume, path)) as f:
            return f.read()
    except OSError:
        return None


def events(box):
    """A WebSocket watching the box's session (file_changed events)."""
    t = box.stack.post("/api/ws-ticket", headers=box.h).json()["ticket"]
    ws = websocket.create_connection("ws://127.0.0.1:%d/ws?ticket=%s&sessionId=%s"
                                     % (box.stack.port, t, box.uuid), timeout=10)
    return ws


def wait_event(ws, pred, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ws.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            m = json.loads(ws.recv())
        except websocket.WebSocketTimeoutException:
            break
        if m.get("type") == "file_changed" and pred(m):
            return m
    raise AssertionError("no such file_changed event")


def test_save_reaches_the_sandbox(box):
    put(box, "saved.py", "print('v1')\n")
    wait_for(lambda: on_disk(box, "saved.py") == "print('v1')\n", timeout=10, what="v1 on disk")
    assert box.sh("cat saved.py")["stdout"] == "print('v1')\n"
    put(box, "deep/er/saved.txt", "x\n")
    wait_for(lambda: on_disk(box, "deep/er/saved.txt") == "x\n", timeout=10, what="nested save")
    # mode and owner: the sandbox's user can edit what was saved
    assert box.sh("echo more >> deep/er/saved.txt && cat deep/er/saved.txt")["stdout"] == "x\nmore\n"


def test_sandbox_write_reaches_the_api_and_an_event(box):
    ws = events(box)
    try:
        # typed into a terminal of the session, as a user would
        ws.send(json.dumps({"type": "terminal_open", "sessionId": box.uuid, "id": "t"}))
        deadline = time.monotonic() + 20
        while True:
            m = json.loads(ws.recv())
            if m.get("id") == "t":
                break
            assert time.monotonic() < deadline, "no terminal_opened"
        assert m["type"] == "terminal_opened", m
        ws.send(json.dumps({"type": "terminal_input", "terminalId": m["terminalId"],
                            "input": "echo made-here > new.py\r"}))
        m = wait_event(ws, lambda m: m["path"] == "new.py")
        assert m["change"] in ("created", "updated") and m["sessionId"] == box.uuid
        wait_for(lambda: content(box, "new.py") == "made-here\n", timeout=10, what="row")
    finally:
        ws.close()


def test_mv_rm_and_mkdir(box):
    box.sh("mkdir -p a/b/c && touch a/b/c/d && echo m > moved_src.txt")
    wait_for(lambda: {"a/b/c/d", "moved_src.txt"} <= set(files(box)), timeout=10, what="made")
    box.sh("mv moved_src.txt moved_dst.txt")
    wait_for(lambda: "moved_dst.txt" in files(box) and "moved_src.txt" not in files(box),
             timeout=10, what="mv")
    box.sh("rm -r a")
    wait_for(lambda: not any(p == "a" or p.startswith("a/") for p in files(box)), timeout=10,
             what="rm -r")


def test_a_save_makes_exactly_one_version(box):
    put(box, "once.py", "a = 1\n")
    wait_for(lambda: on_disk(box, "once.py") == "a = 1\n", timeout=10, what="on disk")
    time.sleep(0.5)  # anything the write caused has come back by now
    assert version(box, "once.py") == 1


def test_ignored_symlinks_and_oversize(box):
    big = 1024 * 1024 + 10
    box.sh("mkdir -p node_modules/x __pycache__ && echo j > node_modules/x/y.js && "
           "echo c > __pycache__/m.pyc && echo p > top.pyc && "
           "ln -s /etc/passwd leak && head -c %d /dev/zero > big.bin && echo ok > marker.txt"
           % big)
    wait_for(lambda: "marker.txt" in files(box), timeout=10, what="marker")
    time.sleep(0.3)
    paths = set(files(box))
    assert not {"node_modules/x/y.js", "__pycache__/m.pyc", "top.pyc", "leak", "big.bin"} & paths
    # .atelierignore adds rules
    box.sh("printf 'secret*\\n' > .atelierignore && echo s > secret.txt && echo k > kept.txt")
    wait_for(lambda: "kept.txt" in files(box), timeout=10, what="kept")
    time.sleep(0.3)
    assert "secret.txt" not in files(box)


def test_concurrent_edit_keeps_both(box):
    put(box, "both.txt", "base\n")
    wait_for(lambda: on_disk(box, "both.txt") == "base\n", timeout=10, what="base on disk")
    # the sandbox and the editor change it at once: the sandbox arrives last
    rows = box.stack.query("UPDATE workspace_items SET content = 'editor\n', "
                           "sha256 = encode(sha256('editor\n'::bytea), 'hex'), "
                           "version = version + 1 WHERE workspace_id = %s AND path = 'both.txt' "
                           "RETURNING version", box.workspace_id)
    assert rows
    box.sh("echo sandbox > both.txt")
    wait_for(lambda: content(box, "both.txt") == "sandbox\n", timeout=10, what="sandbox wins")
    wait_for(lambda: any(p.startswith("both.txt.conflict-") for p in files(box)), timeout=10,
             what="conflict copy")
    cp = [p for p in files(box) if p.startswith("both.txt.conflict-")][0]
    assert content(box, cp) == "editor\n"
    wait_for(lambda: on_disk(box, cp) == "editor\n", timeout=10, what="conflict copy on disk")


def test_ten_thousand_files_all_arrive(box):
    t0 = time.monotonic()
    box.py("import os\nos.makedirs('many', exist_ok=True)\nfor i in range(10000):\n"
           "    open('many/f%d.txt' % i, 'w').write(str(i))", timeout_s=60)
    count = lambda: box.stack.query(  # noqa: E731
        "SELECT count(*) FROM workspace_items WHERE workspace_id = %s AND path LIKE 'many/%%'",
        box.workspace_id)[0][0]
    deadline = time.monotonic() + 120
    while (n := count()) != 10000 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert n == 10000, "%d of 10000 rows" % n
    print("10,000 files: all rows in %.2f s after the script started" % (time.monotonic() - t0))


def test_symlinks_out_of_the_volume_are_never_followed(box, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.chmod(tmp_path, 0o755)
    box.sh("ln -s %s linkdir && ln -s /etc/hostname pw" % outside)
    time.sleep(0.3)
    assert "linkdir" not in files(box) and "pw" not in files(box)  # never uploaded
    # saving through a symlinked folder fails; nothing lands outside
    put(box, "linkdir/escape.txt", "no\n")
    put(box, "pw", "replaced\n")  # the link itself is replaced, its target untouched
    wait_for(lambda: on_disk(box, "pw") == "replaced\n" and
             not os.path.islink(os.path.join(box.volume, "pw")), timeout=10, what="pw replaced")
    time.sleep(0.3)
    assert not (outside / "escape.txt").exists()
    assert os.path.islink(os.path.join(box.volume, "linkdir"))
    with open("/etc/hostname") as f:
        assert "replaced" not in f.read()


def test_git_clone_tracks_sources_not_dot_git(box):
    box.sh("git init -q origin_repo && cd origin_repo && echo 'print(1)' > app.py && "
           "git add . && git -c user.email=a@b.c -c user.name=n commit -qm first && cd .. && "
           "git clone -q origin_repo cloned")
    wait_for(lambda: {"cloned/app.py", "origin_repo/app.py"} <= set(files(box)), timeout=10,
             what="sources")
    time.sleep(0.3)
    assert not [p for p in files(box) if "/.git" in p or p.startswith(".git")]


def tree_on_disk(box):
    """What the volume holds that sync tracks: {path: sha256} of regular files."""
    import hashlib
    out = {}
    for d, dirs, names in os.walk(box.volume):
        rel = os.path.relpath(d, box.volume)
        dirs[:] = [x for x in dirs if x not in (".git", "__pycache__", "node_modules",
                                                "lost+found") and
                   not os.path.islink(os.path.join(d, x))]
        for n in names:
            p = os.path.join(d, n)
            r = n if rel == "." else rel + "/" + n
            if os.path.islink(p) or n.endswith(".pyc") or n.startswith(".atelier-tmp-") or \
                    os.path.getsize(p) > 1024 * 1024 or r == ".bash_history":
                continue
            with open(p, "rb") as f:
                out[r] = hashlib.sha256(f.read()).hexdigest()
    return out


def tree_in_rows(box):
    return dict(box.stack.query("SELECT path, sha256 FROM workspace_items WHERE "
                                "workspace_id = %s AND type = 'file'", box.workspace_id))


def differences(box):
    """What the volume and the rows disagree on: [(path, on disk, in rows)]."""
    disk, rows = tree_on_disk(box), tree_in_rows(box)
    skip = [".bash_history", "secret", "pw", "linkdir/"]
    keep = lambda p: not any(p.startswith(s) for s in skip)  # noqa: E731
    paths = {p for p in set(disk) | set(rows) if keep(p)}
    return sorted((p, disk.get(p), rows.get(p)) for p in paths if disk.get(p) != rows.get(p))


def test_kill_9_during_a_burst_and_pushes_converges(rt, box):
    import signal
    import threading
    sw = rt.procs["sync-worker"]
    box.sh("mkdir -p burst")
    stop = threading.Event()

    def saver():
        i = 0
        while not stop.is_set():
            try:
                put(box, "pushed/p%d.txt" % (i % 50), "v%d\n" % i)
            except Exception:  # noqa: BLE001 - a save during the restart may fail: fine
                pass
            i += 1

    th = threading.Thread(target=saver)
    th.start()
    burst = threading.Thread(target=lambda: box.sh(
        "cd burst && for i in $(seq 1 5000); do echo $i > b$i.txt; done", timeout_s=60))
    burst.start()
    try:
        time.sleep(0.5)
        sw.signal(signal.SIGKILL)
        sw.wait(5)
        time.sleep(1)
        rt.procs["sync-worker"] = rt.stack.start("sync-worker", env=rt.env)
    finally:
        burst.join(60)
        time.sleep(1)
        stop.set()
        th.join(30)
    deadline = time.monotonic() + 60
    while (diff := differences(box)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not diff, "volume and rows disagree on %d paths: %s" % (len(diff), diff[:5])
    assert sum(1 for p in tree_in_rows(box) if p.startswith("burst/")) == 5000


def test_the_item_cap_is_kept(box):
    # a batch with room for one more item: the second new file is refused,
    # the others are taken (ATELIER_MAX_FILES is 20000 in this module)
    n = box.stack.query("SELECT count(*) FROM workspace_items WHERE workspace_id = %s",
                        box.workspace_id)[0][0]
    items = json.dumps([{"path": "cap/%d.txt" % i, "content": "x", "sha": "h%d" % i, "size": 1,
                         "mode": 420, "mtime": 0} for i in range(2)])
    rows = box.stack.query("SELECT path, result, error FROM ws_sync_files(%s, %s, %s)",
                           box.workspace_id, items, n + 1)
    assert [r[1] for r in rows] == ["created", "error"] and "full" in rows[1][2], rows


def restart_sync_worker(rt, env=None):
    import signal
    sw = rt.procs["sync-worker"]
    sw.signal(signal.SIGKILL)
    sw.wait(5)
    rt.procs["sync-worker"] = rt.stack.start("sync-worker", env=dict(rt.env, **(env or {})))


def test_a_folder_moved_in_the_sandbox_moves_its_files(box):
    box.sh("mkdir -p fold/sub && echo 1 > fold/sub/one.txt && echo 2 > fold/two.txt")
    wait_for(lambda: {"fold/sub/one.txt", "fold/two.txt"} <= set(files(box)), timeout=10,
             what="made")
    box.sh("mv fold folded && echo 3 > folded/sub/three.txt")
    want = {"folded/sub/one.txt", "folded/two.txt", "folded/sub/three.txt"}
    wait_for(lambda: want <= set(files(box)) and
             not any(p.startswith("fold/") for p in files(box)), timeout=10, what="moved")
    assert content(box, "folded/sub/three.txt") == "3\n"


def test_an_inotify_queue_overflow_is_rescanned(rt, box):
    knob = "/proc/sys/fs/inotify/max_queued_events"
    with open(knob) as f:
        old = f.read().strip()
    try:
        with open(knob, "w") as f:
            f.write("16")  # a new inotify instance gets this queue: it will overflow
        restart_sync_worker(rt)
    finally:
        with open(knob, "w") as f:
            f.write(old)
    me = rt.procs["sync-worker"].env["ATELIER_INSTANCE"].encode()
    wait_for(lambda: rt.stack.r.get("syncwatch:" + box.workspace_id) == me, timeout=15,
             what="the watch taken over by the new instance")
    box.sh("mkdir -p flood")
    wait_for(lambda: "flood" in files(box), timeout=10, what="flood/ watched")
    time.sleep(0.2)
    import signal
    sw = rt.procs["sync-worker"]
    sw.signal(signal.SIGSTOP)  # reads nothing meanwhile: the 16-event queue overflows
    try:
        box.py("import os\nos.makedirs('flood', exist_ok=True)\nfor i in range(2000):\n"
               "    open('flood/f%d.txt' % i, 'w').write(str(i))", timeout_s=60)
    finally:
        sw.signal(signal.SIGCONT)
    count = lambda: box.stack.query(  # noqa: E731
        "SELECT count(*) FROM workspace_items WHERE workspace_id = %s AND path LIKE 'flood/%%'",
        box.workspace_id)[0][0]
    wait_for(lambda: count() == 2000, timeout=60, what="2000 rows despite the overflow")
    log = rt.procs["sync-worker"].log()
    assert "event=inotify_overflow" in log
    restart_sync_worker(rt)  # back to the machine's queue size


def test_two_workers_one_watcher_and_a_takeover(rt, box):
    import signal
    other = rt.stack.start("sync-worker", env=rt.env, name="sync-worker-b")
    try:
        time.sleep(2.5)  # both have swept: one holds the lease
        holder = rt.stack.r.get("syncwatch:" + box.workspace_id).decode()
        box.sh("echo from-two > two_workers.txt")
        put(box, "two_saved.txt", "saved\n")
        wait_for(lambda: content(box, "two_workers.txt") == "from-two\n" and
                 on_disk(box, "two_saved.txt") == "saved\n", timeout=10, what="both ways")
        assert version(box, "two_workers.txt") == 1  # taken in once, not by both
        # the holder dies: the other takes the lease over and rescans
        victim = other if holder == "sync-worker-b" else rt.procs["sync-worker"]
        victim.signal(signal.SIGKILL)
        victim.wait(5)
        box.sh("echo after-takeover > takeover.txt")
        wait_for(lambda: content(box, "takeover.txt") == "after-takeover\n", timeout=15,
                 what="changes taken in by the survivor")
        if victim is rt.procs["sync-worker"]:
            rt.procs["sync-worker"] = other
            other = None
        else:
            other = None
            rt.procs["sync-worker"] = rt.stack.start("sync-worker", env=rt.env)
    finally:
        if other is not None:
            rt.stack.stop(other)


def test_a_file_becomes_a_folder_and_back(box):
    box.sh("mkdir -p tf && echo x > tf/x && echo g > ft")
    wait_for(lambda: {"tf/x", "ft"} <= set(files(box)), timeout=10, what="made")
    box.sh("rm -r tf && echo f > tf && rm ft && mkdir ft && echo y > ft/in")
    wait_for(lambda: content(box, "tf") == "f\n" and content(box, "ft/in") == "y\n", timeout=10,
             what="the kinds swapped")
    kinds = dict(box.stack.query("SELECT path, type FROM workspace_items WHERE workspace_id = %s "
                                 "AND path IN ('tf', 'ft', 'tf/x')", box.workspace_id))
    assert kinds == {"tf": "file", "ft": "folder"}, kinds


def test_the_mode_travels_both_ways(box):
    box.sh("printf 'echo run\\n' > run.sh && chmod 755 run.sh")
    wait_for(lambda: box.stack.query("SELECT mode FROM workspace_items WHERE workspace_id = %s "
                                     "AND path = 'run.sh'", box.workspace_id) == [(0o755,)],
             timeout=10, what="mode 755 in the row")
    put(box, "run.sh", "echo edited\n")  # a save keeps the row's mode
    wait_for(lambda: on_disk(box, "run.sh") == "echo edited\n", timeout=10, what="saved")
    assert os.stat(os.path.join(box.volume, "run.sh")).st_mode & 0o777 == 0o755
    assert box.sh("./run.sh")["stdout"] == "edited\n"
