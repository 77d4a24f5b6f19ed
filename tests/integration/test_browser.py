"""The web IDE in a real browser (issue 8): Debian's Chromium, driven by
playwright-core (tests/browser/scenarios.mjs), against a real stack with real
sandboxes. Each scenario is one test; each saves a screenshot of its last
state under build/test-output/browser/ (ATELIER_TEST_OUTPUT moves it).

The scenario talks to this side on its stdout/stdin: a line `@@restart-gateway`
asks for the gateway to be restarted (same port), answered with `ok`."""
import os
import pathlib
import queue
import subprocess
import threading
import time

import pytest

from harness import cleanup_sandboxes
from sandboxes import needs_sandboxes, remove_base, workspace_base

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "browser" / "scenarios.mjs"
OUT = pathlib.Path(os.environ.get("ATELIER_TEST_OUTPUT", ROOT / "build" / "test-output")) / "browser"
CHROMIUM = os.environ.get("ATELIER_CHROMIUM", "/usr/bin/chromium")

pytestmark = needs_sandboxes


@pytest.fixture
def ide(stack):
    """gateway (serving gateway/web/dist), sync-worker and session-manager on
    a fresh volume base; the sessions the browser made are removed after."""
    for need, hint in ((CHROMIUM, "apt-get install chromium (deploy/local/install-deps --browser)"),
                       (ROOT / "gateway/web/node_modules/playwright-core", "npm ci in gateway/web (make deps)"),
                       (ROOT / "gateway/web/dist/index.html", "node build.mjs in gateway/web (make deps)")):
        assert os.path.exists(need), "%s is missing: %s" % (need, hint)
    base = workspace_base()
    env = {"WORKSPACE_BASE_PATH": str(base)}
    stack.start("gateway", env=env)
    stack.start("sync-worker", env=env)
    stack.start("session-manager", env=env)
    stack.ide_env = env
    yield stack
    uuids = [u for (u,) in stack.query("SELECT uuid FROM code_sessions")]
    for p in stack.procs:
        if p.role == "session-manager" and p.alive():
            stack.stop(p)
    cleanup_sandboxes(uuids, [str(base)], os.path.join(stack.services.dir, "run", "sandboxes"))
    remove_base(base)


def restart_gateway(stack):
    gw = next(p for p in stack.procs if p.role == "gateway" and p.alive())
    stack.stop(gw)
    stack.start("gateway", env=stack.ide_env)


def run_scenario(stack, name, timeout=180):
    OUT.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen(["node", str(SCENARIOS), name, stack.url, str(OUT)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, bufsize=1, cwd=str(ROOT))
    lines = queue.Queue()  # the scenario's output, line by line (None: it ended)
    threading.Thread(target=lambda: ([lines.put(l) for l in p.stdout], lines.put(None)),
                     daemon=True).start()
    seen = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError("scenario %s took over %d s:\n%s" % (name, timeout, "".join(seen)))
            if line is None:
                break
            seen.append(line)
            if line.startswith("@@restart-gateway"):
                restart_gateway(stack)
                p.stdin.write("ok\n")
                p.stdin.flush()
        rc = p.wait(30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = "".join(seen)
    print(out)
    assert rc == 0, "scenario %s failed (screenshot: %s/%s.png):\n%s" % (name, OUT, name, out)
    assert (OUT / ("%s.png" % name)).exists()
    return out


def test_new_user_scenario(ide):
    """register → log in → create → Ready → edit → Ctrl+S → run in the
    terminal → a file made there shows in the tree → reload → delete."""
    run_scenario(ide, "newUser")


def test_autosave_and_no_text_lost_on_reload(ide):
    run_scenario(ide, "autosave")


def test_conflict_dialog(ide):
    run_scenario(ide, "conflict")
    assert (OUT / "conflict-dialog.png").exists()


def test_terminal_reconnects_after_gateway_restart(ide):
    run_scenario(ide, "reconnect")


def test_dashboard_actions_errors_theme_logout(ide):
    run_scenario(ide, "dashboard")


def test_file_tree_operations(ide):
    run_scenario(ide, "files")


def test_phone_sized_screen(ide):
    run_scenario(ide, "phone")
