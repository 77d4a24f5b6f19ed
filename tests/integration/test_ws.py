"""WS /ws: terminals and session events over WebSocket (issue 6).

Three groups:
- the door and the protocol, on a gateway alone: each way to authenticate,
  what is refused (before the upgrade when it can be), tickets, limits,
  ping/pong, malformed and oversized messages, foreign sessions;
- the output relay against a manager played by the test through Redis
  exactly as the contract says (XADD term:{id}:out 0-<seq> + PUBLISH
  term:{id} "<seq>\\n<bytes>"): replay then live with no gap and no
  duplicate under concurrent writes, UTF-8 split across entries, binary
  frames, exit, input and the command policy on term:{id}:in, a slow
  reader dropped and replayed, a second gateway;
- real terminals in real sandboxes (gateway + session-manager +
  sync-worker): echo, Python, Ctrl-C, resize, two terminals, reconnect
  with lastSeq after 1,000 lines, a second gateway, kill -9 of the gateway
  and of the manager, a flood next to a fast echo, the seed's client.
"""
import json
import os
import re
import resource
import select
import signal
import socket
import statistics
import threading
import time
import types
import uuid as uuidlib

import pytest
import websocket

from harness import cleanup_sandboxes, free_port, wait_for
from sandboxes import (create_ready, delete_session, needs_sandboxes, remove_base,
                       shared_runtime, workspace_base)

# the seed's list minus cd and mkdir (the product default), set explicitly so
# the tests do not depend on the default
POLICY = ("sudo,chmod,chown,reboot,shutdown,ssh,nc,telnet,wget,curl,nohup,crontab,screen,tmux,"
          "rm -rf /,dd,mount,mkfs")
BIN_HEADER = 36 + 8

# 1013 "Try Again Later" is registered with IANA (browsers take it);
# websocket-client 1.2 does not know it yet
websocket._abnf.VALID_CLOSE_STATUS = websocket._abnf.VALID_CLOSE_STATUS + (1013,)


# ---- a WebSocket client ---------------------------------------------------------------


class Refused(Exception):
    """The upgrade was answered with an HTTP error."""

    def __init__(self, status):
        super().__init__("HTTP %d" % status)
        self.status = status


class Client:
    """One WebSocket connection: sends JSON messages, reads frames, keeps the
    output of each terminal (and checks its seq only ever grows)."""

    def __init__(self, ws):
        self.ws = ws
        self.out = {}      # terminalId -> text (or bytes for binary terminals)
        self.seqs = {}     # terminalId -> [seq, ...]
        self.messages = []
        self.close_code = None

    @classmethod
    def connect(cls, port, headers=None, query="", subprotocols=None, timeout=10):
        url = "ws://127.0.0.1:%d/ws%s" % (port, query)
        try:
            ws = websocket.create_connection(url, header=headers or [], timeout=timeout,
                                             subprotocols=subprotocols)
        except websocket.WebSocketBadStatusException as e:
            raise Refused(e.status_code) from None
        return cls(ws)

    def send(self, **msg):
        self.ws.send(json.dumps(msg))

    def send_raw(self, data, binary=False):
        self.ws.send(data, websocket.ABNF.OPCODE_BINARY if binary else websocket.ABNF.OPCODE_TEXT)

    def _note(self, msg):
        if msg.get("type") == "terminal_output" and "seq" in msg:
            tid = msg["terminalId"]
            seqs = self.seqs.setdefault(tid, [])
            assert not seqs or msg["seq"] > seqs[-1], "seq went back: %s" % seqs[-3:] + [msg]
            seqs.append(msg["seq"])
        if msg.get("type") == "terminal_output":
            self.out[msg["terminalId"]] = self.out.get(msg["terminalId"], "") + msg["output"]

    def _note_binary(self, data):
        tid = data[:36].decode()
        seq = int.from_bytes(data[36:BIN_HEADER], "big")
        seqs = self.seqs.setdefault(tid, [])
        assert not seqs or seq > seqs[-1], "binary seq went back"
        seqs.append(seq)
        self.out[tid] = self.out.get(tid, b"") + data[BIN_HEADER:]

    def recv(self, timeout=10):
        """The next message (dict), ("binary", bytes), or ("close", code);
        None on timeout."""
        self.ws.settimeout(timeout)
        try:
            op, frame = self.ws.recv_data_frame(True)
        except websocket.WebSocketTimeoutException:
            return None
        except (websocket.WebSocketConnectionClosedException, ConnectionError, OSError):
            self.close_code = self.close_code or -1
            return ("close", self.close_code)
        if op == websocket.ABNF.OPCODE_CLOSE:
            self.close_code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else 0
            return ("close", self.close_code)
        if op == websocket.ABNF.OPCODE_BINARY:
            self._note_binary(frame.data)
            return ("binary", frame.data)
        if op != websocket.ABNF.OPCODE_TEXT:
            return self.recv(timeout)
        msg = json.loads(frame.data)
        self.messages.append(msg)
        self._note(msg)
        return msg

    def expect(self, pred, timeout=15, what="message"):
        """Read until a message matches pred; fails on close or timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "timed out waiting for %s; last: %s" % (what, self.messages[-5:])
            m = self.recv(left)
            assert not (isinstance(m, tuple) and m[0] == "close"), \
                "closed (%s) waiting for %s; last: %s" % (m, what, self.messages[-5:])
            if isinstance(m, dict) and pred(m):
                return m

    def expect_type(self, type_, timeout=15, **fields):
        return self.expect(lambda m: m.get("type") == type_ and all(
            m.get(k) == v for k, v in fields.items()), timeout, "%s %s" % (type_, fields))

    def wait_output(self, terminal, needle, timeout=15):
        """Read until the terminal's output contains needle (str or regex)."""
        deadline = time.monotonic() + timeout
        while not self._has(terminal, needle):
            left = deadline - time.monotonic()
            assert left > 0, "no %r in terminal output: %r" % (
                needle, self.out.get(terminal, "")[-500:])
            m = self.recv(left)
            assert not (isinstance(m, tuple) and m[0] == "close"), "closed: %s" % (m,)
        return self.out[terminal]

    def _has(self, terminal, needle):
        text = self.out.get(terminal, "")
        if isinstance(needle, re.Pattern):
            return needle.search(text)
        return needle in text

    def wait_closed(self, timeout=15):
        """Read (and keep) everything until the close; returns its code."""
        deadline = time.monotonic() + timeout
        while self.close_code is None:
            left = deadline - time.monotonic()
            assert left > 0, "not closed; last: %s" % self.messages[-3:]
            self.recv(left)
        return self.close_code

    def errors(self, code=None):
        return [m for m in self.messages if m.get("type") == "error" and
                (code is None or m.get("code") == code)]

    def close(self):
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - already closed
            pass


def bearer(headers):
    return ["Authorization: " + headers["Authorization"]]


def connect(stack, headers, port=None, **kw):
    return Client.connect(port or stack.port, headers=bearer(headers), **kw)


def refusal(connect_fn):
    """How a connection attempt was refused: ("http", status) before the
    upgrade, or ("close", code, error code) right after it."""
    try:
        c = connect_fn()
    except Refused as e:
        return ("http", e.status)
    try:
        code = c.wait_closed(10)
        errs = c.errors()
        return ("close", code, errs[0]["code"] if errs else None)
    finally:
        c.close()


def pong(c):
    c.send(type="ping", id="p")
    return c.expect_type("pong", 5)["id"] == "p"


def gateway(stack, **env):
    """A gateway with the test's env and the command policy set."""
    env.setdefault("ATELIER_COMMAND_POLICY", POLICY)
    return stack.start("gateway", env=env)


def ready_session(stack, headers, status="ready"):
    """A session row (no runtime runs): its status forced."""
    r = stack.post("/api/sessions", json={"name": "ws"}, headers=headers)
    assert r.status_code == 201, r.text
    uuid = r.json()["uuid"]
    stack.query("UPDATE code_sessions SET status = %s WHERE uuid = %s", status, uuid)
    return uuid


# ---- the door -------------------------------------------------------------------------


def test_unauthenticated_and_malformed_upgrades_are_refused_before_the_upgrade(stack):
    gateway(stack)
    user, h = stack.new_user()
    port = stack.port
    assert refusal(lambda: Client.connect(port)) == ("http", 401)
    assert refusal(lambda: Client.connect(port, headers=["Authorization: Bearer nope"])) == \
        ("http", 401)
    assert refusal(lambda: Client.connect(port, headers=["Authorization: Basic dTpw"])) == \
        ("http", 401)
    assert refusal(lambda: Client.connect(port, query="?user_id=%d" % user["id"])) == \
        ("http", 401)  # strict: user_id alone is nobody
    assert refusal(lambda: Client.connect(port, query="?ticket=short")) == ("http", 401)
    assert refusal(lambda: Client.connect(port, subprotocols=["chat"])) == ("http", 400)
    # libwebsockets 4.1 reads 127 bytes of Sec-WebSocket-Protocol: a JWT does not fit
    token = h["Authorization"].split()[1]
    assert refusal(lambda: Client.connect(port, subprotocols=["bearer." + token])) == \
        ("http", 400)
    # only /ws upgrades
    with pytest.raises(websocket.WebSocketBadStatusException) as e:
        websocket.create_connection("ws://127.0.0.1:%d/api/health" % port,
                                    header=bearer(h), timeout=5)
    assert e.value.status_code == 404
    # the HTTP API is unaffected
    assert stack.get("/api/users/me", headers=h).status_code == 200


def test_every_way_to_authenticate_opens_a_connection(stack):
    gateway(stack)
    user, h = stack.new_user()
    key = stack.post("/api/keys", json={"name": "ws"}, headers=h).json()["key"]
    port = stack.port

    def ticket():
        r = stack.post("/api/ws-ticket", headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["expires_in"] == 30
        return r.json()["ticket"]

    ways = {
        "bearer header": lambda: Client.connect(port, headers=bearer(h)),
        "api key header": lambda: Client.connect(port, headers=["X-API-Key: " + key]),
        "apikey subprotocol": lambda: Client.connect(port, subprotocols=["apikey." + key]),
        "ticket subprotocol": lambda: Client.connect(port, subprotocols=["ticket." + ticket()]),
        "named + ticket": lambda: Client.connect(
            port, subprotocols=["atelier.v1", "ticket." + ticket()]),
        "ticket query": lambda: Client.connect(port, query="?ticket=" + ticket()),
        "bootstrap key for a user": lambda: Client.connect(
            port, headers=["X-API-Key: " + stack.api_key], query="?user_id=%d" % user["id"]),
    }
    for name, open_ in ways.items():
        c = open_()
        try:
            assert pong(c), name
            proto = c.ws.getheaders().get("sec-websocket-protocol")
            if name == "apikey subprotocol":  # the offered name comes back (RFC 6455)
                assert proto == "apikey." + key, proto
            if name == "named + ticket":
                assert proto == "atelier.v1", proto
        finally:
            c.close()
    # a token revoked by logout is refused (checked against the database)
    stack.post("/api/users/logout", headers=h)
    r = refusal(lambda: Client.connect(port, headers=bearer(h)))
    assert r in (("http", 401), ("close", 1008, "unauthorized")), r
    # a key acting as its user cannot name another
    other, _ = stack.new_user()
    r = refusal(lambda: Client.connect(port, headers=["X-API-Key: " + key],
                                       query="?user_id=%d" % other["id"]))
    assert r in (("http", 403), ("close", 1008, "forbidden")), r


def test_tickets_are_single_use_expire_and_name_a_user(stack):
    gateway(stack)
    user, h = stack.new_user()
    t = stack.post("/api/ws-ticket", headers=h).json()["ticket"]
    assert 0 < stack.r.ttl("wsticket:" + t) <= 30
    # the user, and the credential it was made with (its revocation closes the connection)
    assert stack.r.get("wsticket:" + t).split(b" ")[0] == str(user["id"]).encode()
    c = Client.connect(stack.port, query="?ticket=" + t)
    assert pong(c)
    c.close()
    assert not stack.r.exists("wsticket:" + t)
    assert refusal(lambda: Client.connect(stack.port, query="?ticket=" + t)) == \
        ("close", 1008, "unauthorized")
    # expired: Redis let it go
    t2 = stack.post("/api/ws-ticket", headers=h).json()["ticket"]
    stack.r.pexpire("wsticket:" + t2, 1)
    time.sleep(0.05)
    assert refusal(lambda: Client.connect(stack.port, query="?ticket=" + t2)) == \
        ("close", 1008, "unauthorized")
    # a ticket needs a user: a service key must name one; no credentials, none
    admin = stack.admin_headers()
    assert stack.post("/api/ws-ticket", headers=admin).status_code == 422
    r = stack.post("/api/ws-ticket?user_id=%d" % user["id"], headers=admin)
    assert r.status_code == 200, r.text
    assert stack.post("/api/ws-ticket").status_code == 401


def test_logout_and_key_deletion_close_the_connections_they_opened(stack):
    gateway(stack)
    user, h = stack.new_user()
    direct = connect(stack, h)
    t = stack.post("/api/ws-ticket", headers=h).json()["ticket"]
    ticketed = Client.connect(stack.port, query="?ticket=" + t)
    key = stack.post("/api/keys", headers=h, json={"name": "ws"}).json()
    keyed = Client.connect(stack.port, headers=["X-API-Key: " + key["key"]])
    for c in (direct, ticketed, keyed):
        assert pong(c)
    assert stack.post("/api/users/logout", headers=h).status_code in (200, 204)
    for c in (direct, ticketed):
        assert c.wait_closed(10) == 1008
        assert c.errors()[0]["code"] == "unauthorized"
    assert pong(keyed)  # another credential of the same user stays
    admin = stack.admin_headers()
    assert stack.request("DELETE", "/api/keys/%s" % key["id"], headers=admin).status_code \
        in (200, 204)
    assert keyed.wait_closed(10) == 1008


def test_compat_mode_accepts_user_id_alone(stack):
    gateway(stack, ATELIER_AUTH="compat")
    user, _ = stack.new_user()
    c = Client.connect(stack.port, query="?user_id=%d" % user["id"])
    assert pong(c)
    c.close()
    assert refusal(lambda: Client.connect(stack.port, query="?user_id=x")) == ("http", 422)


def test_ping_bad_messages_and_the_message_size_limit(stack):
    gateway(stack, ATELIER_WS_MAX_MESSAGE="4096")
    user, h = stack.new_user()
    c = connect(stack, h)
    c.send(type="ping")
    assert c.expect_type("pong") == {"type": "pong"}
    c.send_raw("not json")
    assert c.expect_type("error")["code"] == "bad_message"
    c.send(type="teleport")
    assert c.expect_type("error")["code"] == "unknown_type"
    c.send(type="terminal_input", input="ls\n")
    assert c.expect_type("error")["code"] == "bad_message"
    c.send(type="terminal_resize", terminalId=str(uuidlib.uuid4()), cols=0, rows=5)
    assert c.expect_type("error")["code"] == "bad_message"
    assert pong(c)  # still open after all that
    c.send(type="terminal_input", sessionId=str(uuidlib.uuid4()), input="x" * 5000)
    assert c.wait_closed() in (1009, -1)  # -1: the reset of unread data came first
    errs = c.errors("message_too_large")
    assert errs or c.close_code == 1009, c.messages
    c.close()


def test_connections_per_user_are_limited(stack):
    gateway(stack, ATELIER_WS_MAX_PER_USER="3")
    user, h = stack.new_user()
    other, ho = stack.new_user()
    held = [connect(stack, h) for _ in range(3)]
    for c in held:
        assert pong(c)
    r = refusal(lambda: connect(stack, h))
    assert r in (("http", 429), ("close", 1013, "too_many_connections")), r
    extra = connect(stack, ho)  # another user is not affected
    assert pong(extra)
    held.pop().close()
    wait_for(lambda: pong(connect(stack, h)), timeout=5, what="a slot after a close")
    for c in held + [extra]:
        c.close()


def test_sessions_and_terminals_of_other_users_are_out_of_reach(stack):
    gateway(stack)
    a, ha = stack.new_user()
    b, hb = stack.new_user()
    sess = ready_session(stack, ha)
    term = str(uuidlib.uuid4())
    stack.query("INSERT INTO terminals (id, session_uuid, user_id, status) "
                "VALUES (%s, %s, %s, 'open')", term, sess, a["id"])
    # naming user a with b's token: refused at the door
    r = refusal(lambda: connect(stack, hb, query="?user_id=%d" % a["id"]))
    assert r in (("http", 403), ("close", 1008, "forbidden")), r
    c = connect(stack, hb)
    c.send(type="subscribe", sessionId=sess, id="s")
    assert c.expect_type("error", id="s")["code"] == "session_not_found"
    c.send(type="terminal_open", sessionId=sess, id="o")
    assert c.expect_type("error", id="o")["code"] == "session_not_found"
    c.send(type="terminal_attach", terminalId=term, lastSeq=0, id="a")
    assert c.expect_type("error", id="a")["code"] == "terminal_not_found"
    c.send(type="terminal_input", terminalId=term, input="id\n", id="i")
    assert c.expect_type("error", id="i")["code"] == "not_attached"
    c.send(type="terminal_close", terminalId=term, id="c")
    assert c.expect_type("error", id="c")["code"] == "terminal_not_found"
    assert not stack.r.exists("term:%s:in" % term)
    assert not stack.query("SELECT 1 FROM jobs WHERE kind LIKE 'terminal%%'")
    c.close()
    # the owner reaches both
    own = connect(stack, ha)
    own.send(type="terminal_attach", terminalId=term, lastSeq=0, id="a")
    assert own.expect_type("terminal_attached", id="a")["sessionId"] == sess
    own.close()


def test_exec_applies_the_command_policy(stack):
    gateway(stack)
    user, h = stack.new_user()
    sess = ready_session(stack, h, "loading_files")  # no runtime: policy answers first
    url = "/api/sessions/%s/exec" % sess
    for command, word in (("sudo ls", "sudo"), ("ls; curl http://x", "curl"),
                          ("FOO=1 /usr/bin/nohup sleep 1", "nohup"), ("rm -rf /", "rm -rf /")):
        r = stack.post(url, json={"command": command}, headers=h)
        assert r.status_code == 403, (command, r.text)
        assert r.json()["detail"] == "Command blocked by policy: %s" % word
    for command in ("cd /tmp && pwd", "mkdir -p a/b", "rm -rf /tmp/x", "echo sudo", "ncdu"):
        r = stack.post(url, json={"command": command}, headers=h)
        assert r.status_code == 409, (command, r.text)  # past the policy: not ready
    assert not stack.query("SELECT 1 FROM jobs WHERE kind = 'exec'")


def test_pod_ready_on_subscribe_at_connect_and_from_events(stack):
    gateway(stack)
    user, h = stack.new_user()
    ready = ready_session(stack, h)
    loading = ready_session(stack, h, "loading_files")
    # at connect: pod_ready for the user's ready sessions
    c = connect(stack, h)
    assert c.expect_type("pod_ready", sessionId=ready)["timestamp"]
    # subscribe: at once when ready
    c.send(type="subscribe", sessionId=ready.upper())
    c.expect_type("pod_ready", sessionId=ready)
    # not ready: nothing, until the manager's event (passed on as published)
    c.send(type="subscribe", sessionId=loading)
    assert c.recv(0.5) is None
    ev = {"type": "pod_ready", "sessionId": loading, "timestamp": "2026-01-01T00:00:00.000Z"}
    wait_for(lambda: stack.r.pubsub_numsub("ev:" + loading)[0][1] > 0, what="subscribed")
    stack.r.publish("ev:" + loading, json.dumps(ev))
    assert c.expect_type("pod_ready", sessionId=loading) == ev
    stack.r.publish("ev:" + loading, json.dumps({"type": "status", "sessionId": loading,
                                                  "status": "sleeping"}))
    assert c.expect_type("status", sessionId=loading)["status"] == "sleeping"
    c.close()
    # ?sessionId= watches that one session only
    c = connect(stack, h, query="?sessionId=" + ready)
    c.expect_type("pod_ready", sessionId=ready)
    c.close()
    # and nobody is left subscribed
    wait_for(lambda: stack.r.pubsub_numsub("ev:" + loading)[0][1] == 0, what="unsubscribed")


def test_thousand_idle_connections_are_held(stack):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 4096:
        pytest.skip("RLIMIT_NOFILE hard limit %d < 4096" % hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))
    gw = gateway(stack, ATELIER_WS_MAX_PER_USER="2000")
    user, h = stack.new_user()
    held = []
    try:
        for _ in range(1000):
            held.append(connect(stack, h))
        time.sleep(1)
        for c in held[::97]:
            assert pong(c)
        assert stack.get("/health").status_code == 200
        wait_for(lambda: json.loads(stack.r.get("hb:gateway:%s" % gw.instance))
                 ["ws_connections"] == 1000, timeout=10, what="1000 in the heartbeat")
    finally:
        for c in held:
            c.close()
    wait_for(lambda: json.loads(stack.r.get("hb:gateway:%s" % gw.instance))
             ["ws_connections"] == 0, timeout=10, what="0 in the heartbeat")


# ---- the relay, with the manager played through Redis ---------------------------------


class FakeTerminal:
    """A terminal row and the manager's side of its streams, as the
    contract has them."""

    def __init__(self, stack, user, session):
        self.stack, self.r = stack, stack.r
        self.id = str(uuidlib.uuid4())
        self.session = session
        self.seq = 0
        stack.query("INSERT INTO terminals (id, session_uuid, user_id, status) "
                    "VALUES (%s, %s, %s, 'open')", self.id, session, user["id"])

    def emit(self, data, publish=True):
        if isinstance(data, str):
            data = data.encode()
        self.seq += 1
        p = self.r.pipeline(transaction=False)
        p.xadd("term:%s:out" % self.id, {"t": "out", "d": data}, id="0-%d" % self.seq)
        if publish:
            p.publish("term:%s" % self.id, b"%d\n" % self.seq + data)
        p.execute()
        return self.seq

    def exit(self, code):
        self.seq += 1
        p = self.r.pipeline(transaction=False)
        p.xadd("term:%s:out" % self.id, {"t": "exit", "code": str(code)}, id="0-%d" % self.seq)
        p.publish("term:%s" % self.id, b"%d exit %d" % (self.seq, code))
        p.execute()

    def subscribed(self):
        return self.r.pubsub_numsub("term:" + self.id)[0][1] > 0

    def input(self):
        return [(f[b"t"], f.get(b"d"), f.get(b"cols"), f.get(b"rows"))
                for _, f in self.r.xrange("term:%s:in" % self.id)]


@pytest.fixture
def relay(stack):
    """A gateway, a user with a ready session (no runtime), a fake terminal."""
    gateway(stack, ATELIER_WS_SEND_QUEUE_MAX="65536")
    user, h = stack.new_user()
    t = FakeTerminal(stack, user, ready_session(stack, h))
    return stack, h, t


def attach(stack, h, t, last=0, binary=False, port=None, live=True):
    """live: wait until the gateway follows the terminal's channel (an
    ended terminal is only replayed: the gateway lets go of it at once)."""
    c = connect(stack, h, port=port)
    c.send(type="terminal_attach", terminalId=t.id, lastSeq=last, binary=binary, id="at")
    c.expect_type("terminal_attached", id="at")
    if live:
        wait_for(t.subscribed, what="gateway subscribed to term:%s" % t.id)
    return c


def test_a_sessions_live_terminals_are_listed_for_its_user_only(relay):
    stack, h, t = relay
    stack.query("INSERT INTO terminals (id, session_uuid, user_id, status) "
                "SELECT %s, session_uuid, user_id, 'closed' FROM terminals WHERE id = %s",
                str(uuidlib.uuid4()), t.id)
    r = stack.get("/api/sessions/%s/terminals" % t.session, headers=h)
    assert r.status_code == 200, r.text
    assert [(x["id"], x["status"], x["cols"], x["rows"]) for x in r.json()] == \
        [(t.id, "open", 80, 24)]
    assert r.json()[0]["created_at"].endswith("Z")
    _, other = stack.new_user()
    assert stack.get("/api/sessions/%s/terminals" % t.session, headers=other).status_code == 404
    assert stack.get("/api/sessions/%s/terminals" % uuidlib.uuid4(), headers=h).status_code == 404
    assert stack.get("/api/sessions/nope/terminals", headers=h).status_code == 422
    assert stack.get("/api/sessions/%s/terminals" % t.session).status_code == 401


def test_replay_then_live_has_no_gap_and_no_duplicate(relay):
    stack, h, t = relay
    for i in range(1, 301):
        t.emit("a%d." % i)
    # attach from seq 100 while the manager keeps writing
    stop = threading.Event()

    def writer():
        for i in range(301, 1301):
            t.emit("a%d." % i)
            if i % 50 == 0:
                time.sleep(0.002)
        stop.set()

    th = threading.Thread(target=writer)
    th.start()
    c = connect(stack, h)
    c.send(type="terminal_attach", terminalId=t.id, lastSeq=100)
    c.wait_output(t.id, "a1300.", timeout=30)
    th.join()
    want = "".join("a%d." % i for i in range(101, 1301))
    assert c.out[t.id] == want
    assert c.seqs[t.id][-1] == 1300
    # entries published but lost on the way (a gap) are read from the stream
    for i in range(1301, 1311):
        t.emit("a%d." % i, publish=(i % 3 == 0))
    c.wait_output(t.id, "a1309.", timeout=10)
    t.emit("a1311.")
    c.wait_output(t.id, "a1311.")
    assert c.out[t.id] == want + "".join("a%d." % i for i in range(1301, 1312))
    c.close()


def test_output_is_valid_utf8_across_entries_and_on_reconnect(relay):
    stack, h, t = relay
    c = attach(stack, h, t)
    t.emit(b"caf\xc3")          # e-acute split over two entries
    t.emit(b"\xa9 ")
    t.emit(b"\xf0\x9f")         # a four-byte emoji over three
    split = t.emit(b"\x98")
    t.emit(b"\x80 bad\xff\xfe end")  # invalid bytes become U+FFFD
    c.wait_output(t.id, "end")
    assert c.out[t.id] == "caf\u00e9 \U0001F600 bad\ufffd\ufffd end"
    c.close()
    # a client that stopped at `split` (whose bytes were held back) gets the
    # emoji whole when it comes back with lastSeq = split - 1 ... and with
    # lastSeq = split, the held bytes are taken from that entry again
    for last, want in ((split - 1, "\U0001F600 bad\ufffd\ufffd end"),
                       (split, "\U0001F600 bad\ufffd\ufffd end")):
        c = attach(stack, h, t, last=last)
        c.wait_output(t.id, "end")
        assert c.out[t.id] == want, (last, c.out[t.id])
        c.close()


def test_binary_frames_carry_raw_bytes(relay):
    stack, h, t = relay
    t.emit(b"\xff\x00raw")
    c = attach(stack, h, t, binary=True)
    t.emit(b"\xc3")
    deadline = time.monotonic() + 10
    while c.out.get(t.id, b"") != b"\xff\x00raw\xc3":
        assert time.monotonic() < deadline, c.out
        c.recv(1)
    assert c.seqs[t.id][-1] == 2
    # input as a binary frame: terminal id then raw bytes
    c.send_raw(t.id.encode() + b"\x1b[A\xff", binary=True)
    wait_for(lambda: t.input(), what="binary input")
    assert t.input()[0][:2] == (b"in", b"\x1b[A\xff")
    c.close()


def test_exit_entry_ends_the_terminal_and_lookalike_output_does_not(relay):
    stack, h, t = relay
    c = attach(stack, h, t)
    t.emit("exit 3")  # output that reads like the exit message
    c.wait_output(t.id, "exit 3")
    t.exit(7)
    m = c.expect_type("terminal_exit", terminalId=t.id)
    assert m["code"] == 7 and m["seq"] == 2 and m["sessionId"] == t.session
    c.send(type="terminal_input", terminalId=t.id, input="x")
    assert c.expect_type("error")["code"] == "not_attached"
    c.close()
    # replayed to a late client as well
    c = attach(stack, h, t, live=False)
    assert c.expect_type("terminal_exit", terminalId=t.id)["code"] == 7
    assert c.out[t.id] == "exit 3"
    c.close()


def test_input_resize_and_the_policy_on_typed_lines(relay):
    stack, h, t = relay
    c = attach(stack, h, t)
    c.send(type="terminal_input", terminalId=t.id, input="cd /tmp && pwd\r")
    c.send(type="terminal_input", sessionId=t.session, terminalId=t.id, input="su")
    c.send(type="terminal_input", terminalId=t.id, input="do ls\r")
    notice = c.expect(lambda m: m.get("notice"), what="policy notice")
    assert notice["output"] == "\r\n[atelier] command blocked by policy: sudo\r\n"
    assert notice["type"] == "terminal_output" and notice["terminalId"] == t.id
    c.send(type="terminal_input", terminalId=t.id, input="xsudo\x7f\x7f\x7f\x7f\x7fecho ok\r")
    c.send(type="terminal_resize", terminalId=t.id, cols=120, rows=40)
    wait_for(lambda: len(t.input()) == 5, what="5 input entries")
    typed = b"".join(d for kind, d, _, _ in t.input() if kind == b"in")
    # the refused line reached the shell only as typed, and was killed
    assert typed == (b"cd /tmp && pwd\r" b"su" b"do ls\x05\x15\r"
                     b"xsudo\x7f\x7f\x7f\x7f\x7fecho ok\r")
    assert t.input()[-1] == (b"resize", None, b"120", b"40")
    assert len(c.errors()) == 0, c.errors()
    c.close()


def test_a_slow_reader_is_slowed_not_dropped(relay):
    stack, h, t = relay
    c = attach(stack, h, t)
    c.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = "y" * 16000
    for _ in range(100):  # 1.6 MB against a 64 KiB queue, read slowly
        t.emit(chunk)
    got = 0
    while got < 16000 * 100:
        time.sleep(0.01)
        m = c.recv(5)
        assert not (isinstance(m, tuple) and m[0] == "close"), m
        got = len(c.out.get(t.id, ""))
    assert c.out[t.id] == chunk * 100 and not c.errors()
    c.close()


def test_a_reader_that_reads_nothing_is_dropped_and_replays_what_it_missed(relay):
    stack, h, t = relay
    c = attach(stack, h, t)
    c.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    chunk = "z" * 16000
    deadline = time.monotonic() + 40  # the gateway gives up after 10 s without progress
    while time.monotonic() < deadline and t.subscribed():  # output going on, nobody reading
        for _ in range(10):
            t.emit(chunk)
        time.sleep(0.5)
    total = t.seq
    assert not t.subscribed(), "still attached after 40 s of not reading"
    c.ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # read the backlog fast
    # 1013 with too_slow after what it had queued, or (the backlog unread
    # past the close grace) a reset
    code = c.wait_closed(60)
    assert code == -1 or (code == 1013 and c.errors("too_slow")), (code, c.messages[-3:])
    assert any("event=ws_slow_client" in p.log() for p in stack.procs if p.role == "gateway")
    last = c.seqs.get(t.id, [0])[-1]
    c.close()
    # reconnect with lastSeq: the rest, exactly, as fast as it is read
    c = attach(stack, h, t, last=last)
    c.wait_output(t.id, re.compile("z{%d}$" % (16000 * (total - last))), timeout=30)
    assert len(c.out[t.id]) == 16000 * (total - last)
    assert pong(c)
    c.close()


def test_output_published_while_the_pubsub_link_was_down_is_not_lost(relay):
    stack, h, t = relay
    c = attach(stack, h, t)
    t.emit("a.")
    c.wait_output(t.id, "a.")
    stack.r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    for i in range(20):  # published to nobody while the gateway reconnects
        t.emit("b%d." % i)
    wait_for(t.subscribed, what="the gateway subscribed again")
    c.wait_output(t.id, "b19.")
    assert c.out[t.id] == "a." + "".join("b%d." % i for i in range(20))
    assert pong(c)
    assert "redis_disconnected conn=ws_pubsub" in stack.procs[0].log()
    c.close()


def test_a_second_gateway_serves_the_same_terminal(relay):
    stack, h, t = relay
    port2 = free_port()
    gateway(stack, ATELIER_HTTP_PORT=str(port2))
    c1 = attach(stack, h, t)
    for i in range(5):  # one frame each
        t.emit("x%d " % i)
        c1.wait_output(t.id, "x%d " % i)
    last = c1.seqs[t.id][2]
    c1.close()
    c2 = attach(stack, h, t, last=last, port=port2)
    t.emit("x5 ")
    c2.wait_output(t.id, "x5 ")
    assert c2.out[t.id] == "x3 x4 x5 "
    c2.close()


def test_terminal_open_checks_the_session_and_its_limit(stack):
    gateway(stack, ATELIER_TERMINALS_PER_SESSION="2", ATELIER_REPLY_TIMEOUT_MS="300")
    user, h = stack.new_user()
    loading = ready_session(stack, h, "loading_files")
    full = ready_session(stack, h)
    for _ in range(2):
        FakeTerminal(stack, user, full)
    free = ready_session(stack, h)
    c = connect(stack, h)
    c.send(type="terminal_open", sessionId=loading, id="1")
    e = c.expect_type("error", id="1")
    assert e["code"] == "session_not_ready" and "loading_files" in e["message"]
    c.send(type="terminal_open", sessionId=full, id="2")
    assert c.expect_type("error", id="2")["code"] == "too_many_terminals"
    c.send(type="terminal_open", sessionId=free, cols=0, id="3")
    assert c.expect_type("error", id="3")["code"] == "bad_message"
    # no manager here: the row, job and audit rows are written, the reply
    # never comes, and the terminal is closed rather than left behind
    c.send(type="terminal_open", sessionId=free, cols=100, rows=30, id="4")
    assert c.expect_type("error", id="4")["code"] == "timeout"
    rows = stack.query("SELECT id::text, status, cols, rows FROM terminals "
                       "WHERE session_uuid = %s", free)
    assert len(rows) == 1 and rows[0][2:] == (100, 30), rows
    jobs = stack.query("SELECT kind, args->>'terminal_id' FROM jobs WHERE session = %s "
                       "AND kind LIKE 'terminal%%' ORDER BY enqueued_at", free)
    assert jobs == [("terminal_open", rows[0][0]), ("terminal_close", rows[0][0])], jobs
    assert [a["target"] for a in stack.audit("terminal.open")] == [rows[0][0]]
    assert stack.audit("terminal.open")[0]["actor"] == "user:%d" % user["id"]
    c.close()


# ---- real terminals in real sandboxes -------------------------------------------------


@pytest.fixture(scope="module")
def rt(services, tmp_path_factory):
    if os.geteuid() != 0 or not os.access("/usr/bin/bwrap", os.X_OK):
        pytest.skip("sandboxes need root and bubblewrap")
    yield from shared_runtime(services, tmp_path_factory,
                              {"ATELIER_COMMAND_POLICY": POLICY})


@pytest.fixture(scope="module")
def box(rt):
    return rt.new_box("terminals")


def open_terminal(c, box, **kw):
    c.send(type="terminal_open", sessionId=box.uuid, id="open", **kw)
    m = c.expect_type("terminal_opened", id="open", timeout=20)
    return m["terminalId"]


def run(c, tid, command, marker, timeout=20):
    """Type a command ending in `echo <marker>` written so that only its
    output (not its echo) contains the marker; returns the output."""
    a, b = marker[:len(marker) // 2], marker[len(marker) // 2:]
    c.send(type="terminal_input", terminalId=tid, input="%s; echo %s''%s\r" % (command, a, b))
    return c.wait_output(tid, marker, timeout)


@needs_sandboxes[0]
@needs_sandboxes[1]
def test_terminal_survives_kill_9_of_gateway_and_session_manager(stack):
    base = workspace_base()
    env = {"ATELIER_COMMAND_POLICY": POLICY, "WORKSPACE_BASE_PATH": str(base)}
    gw = stack.start("gateway", env=env)
    sm = stack.start("session-manager", env=env)
    stack.start("sync-worker", env=env)
    user, h = stack.new_user()
    uuid = None
    try:
        uuid = create_ready(stack, h, "survivor")
        c = connect(stack, h)
        tid = open_terminal(c, types.SimpleNamespace(uuid=uuid, h=h))
        run(c, tid, "X=kept", "MARKG")
        last = c.seqs[tid][-1]
        gw.signal(signal.SIGKILL)
        gw.wait(5)
        gw = stack.start("gateway", env=env)
        c = connect(stack, h)
        c.send(type="terminal_attach", terminalId=tid, lastSeq=last)
        assert "val-kept" in run(c, tid, "echo val-$X", "MARKH")
        last = c.seqs[tid][-1]
        sm.signal(signal.SIGKILL)
        sm.wait(5)
        sm = stack.start("session-manager", env=env)
        c.send(type="terminal_input", terminalId=tid, input="echo again-$X\r")
        c.wait_output(tid, "again-kept", timeout=30)
        c.close()
        delete_session(stack, h, uuid)
    finally:
        stack.stop(sm)
        cleanup_sandboxes([uuid] if uuid else [], [str(base)],
                          os.path.join(stack.services.dir, "run", "sandboxes"))
        remove_base(base)


# the tests below share one runtime (module scope): nothing function-scoped
# may run beside it (a new Stack empties Redis under it)


def test_echo_python_and_the_seeds_client(rt, box):
    c = connect(rt.stack, box.h)
    tid = open_terminal(c, box)
    out = run(c, tid, "echo hello-$((40+2))", "MARK1")
    assert "hello-42" in out
    out = run(c, tid, "python3 -c 'print(sum(range(10)))'", "MARK2")
    assert re.search(r"[\r\n]45\r\n", out), out
    assert run(c, tid, "pwd", "MARK3").count("/workspace") >= 1
    c.close()
    # the seed's client: connects, sends only sessionId + input
    seed = connect(rt.stack, box.h)
    seed.expect_type("pod_ready", sessionId=box.uuid)
    seed.send(type="terminal_input", sessionId=box.uuid, input="echo seed-$((6*7))\n")
    m = seed.expect(lambda m: m.get("type") == "terminal_output" and "seed-42" in
                    seed.out.get(m["terminalId"], ""), timeout=20, what="seed output")
    assert set(m) >= {"type", "sessionId", "output", "timestamp"}
    assert m["sessionId"] == box.uuid
    seed.close()


def test_ctrl_c_interrupts_sleep_and_resize_reaches_stty(rt, box):
    c = connect(rt.stack, box.h)
    tid = open_terminal(c, box, cols=90, rows=20)
    assert "20 90" in run(c, tid, "stty size", "MARK4")
    c.send(type="terminal_input", terminalId=tid, input="sleep 100\r")
    time.sleep(0.5)
    t0 = time.monotonic()
    c.send(type="terminal_input", terminalId=tid, input="\x03")
    run(c, tid, "echo after", "MARK5", timeout=10)
    assert time.monotonic() - t0 < 5
    c.send(type="terminal_resize", terminalId=tid, cols=132, rows=43)
    assert "43 132" in run(c, tid, "stty size", "MARK6")
    c.send(type="terminal_close", terminalId=tid)
    c.expect_type("terminal_exit", terminalId=tid, timeout=15)
    c.close()


def test_two_terminals_in_one_session_are_two_shells(rt, box):
    c = connect(rt.stack, box.h)
    t1, t2 = open_terminal(c, box), open_terminal(c, box)
    assert t1 != t2
    run(c, t1, "X=one", "MARK7")
    run(c, t2, "X=two", "MARK8")
    assert "val-one" in run(c, t1, "echo val-$X", "MARK9")
    assert "val-two" in run(c, t2, "echo val-$X", "MARKA")
    assert "val-two" not in c.out[t1] and "val-one" not in c.out[t2]
    rows = rt.stack.query("SELECT status, pid IS NOT NULL FROM terminals WHERE id IN (%s, %s)",
                          t1, t2)
    assert rows == [("open", True)] * 2
    c.close()


def test_reconnect_with_last_seq_after_1000_lines_and_through_a_second_gateway(rt, box):
    c = connect(rt.stack, box.h)
    tid = open_terminal(c, box)
    run(c, tid, "true", "MARKB")
    # the lines are printed after the client has gone
    c.send(type="terminal_input", terminalId=tid,
           input="sleep 1; for i in $(seq 1 1000); do echo line-$i; done; echo DO''NE\r")
    c.wait_output(tid, "echo DO''NE")
    before, last = c.out[tid], c.seqs[tid][-1]
    c.close()
    time.sleep(2.5)
    c = connect(rt.stack, box.h)
    c.send(type="terminal_attach", terminalId=tid, lastSeq=last)
    after = c.wait_output(tid, "\r\nDONE\r\n", timeout=20)
    lines = re.findall(r"line-(\d+)\r\n", after)
    assert lines == [str(i) for i in range(1, 1001)]
    assert "seq 1 1000" not in after  # nothing from before lastSeq again
    c.close()
    # everything from the start, through a second gateway: exactly before + after
    port2 = free_port()
    rt.stack.start("gateway", env=dict(rt.env, ATELIER_HTTP_PORT=str(port2)))
    c2 = connect(rt.stack, box.h, port=port2)
    c2.send(type="terminal_attach", terminalId=tid, lastSeq=0)
    full = c2.wait_output(tid, "\r\nDONE\r\n", timeout=20)
    end = full.index("\r\nDONE\r\n")
    assert full[:end] == (before + after)[:end]
    assert "via-2" in run(c2, tid, "echo via-$((1+1))", "MARKC")  # and it drives it
    c2.close()


def test_policy_notice_for_sudo_and_cd_is_allowed(rt, box):
    c = connect(rt.stack, box.h)
    tid = open_terminal(c, box)
    c.send(type="terminal_input", terminalId=tid, input="sudo ls\r")
    notice = c.expect(lambda m: m.get("notice"), what="policy notice")
    assert "command blocked by policy: sudo" in notice["output"]
    out = run(c, tid, "cd /tmp && pwd", "MARKD")
    assert re.search(r"[\r\n]/tmp\r\n", out), out
    assert "sudo:" not in out and "not found" not in out  # sudo never ran
    c.close()


def test_a_flood_in_one_terminal_leaves_another_echo_fast(rt, box):
    flood = connect(rt.stack, box.h)
    ft = open_terminal(flood, box)
    run(flood, ft, "true", "MARKE")
    got = [0]
    stop = threading.Event()

    def drain():  # a reader as fast as it can, as a browser would be
        while not stop.is_set():
            m = flood.recv(1)
            if isinstance(m, tuple) and m[0] == "close":
                return
            if isinstance(m, dict) and m.get("type") == "terminal_output":
                got[0] += len(m["output"])

    flood.send(type="terminal_input", terminalId=ft, input="timeout 8 yes flood\r")
    th = threading.Thread(target=drain)
    th.start()
    c = connect(rt.stack, box.h)
    tid = open_terminal(c, box)
    run(c, tid, "true", "MARKF")
    wait_for(lambda: got[0] > 1_000_000, timeout=10, what="the flood flowing")
    rtts = []
    for i in range(40):
        ch = "abcdefghij"[i % 10]
        before = len(c.out[tid])
        t0 = time.monotonic()
        c.send(type="terminal_input", terminalId=tid, input=ch)
        deadline = t0 + 5
        while ch not in c.out[tid][before:]:
            assert time.monotonic() < deadline, "no echo within 5 s under the flood"
            c.recv(1)
        rtts.append(time.monotonic() - t0)
    c.send(type="terminal_input", terminalId=tid, input="\x15")
    stop.set()
    th.join(15)
    flood.close()
    print("echo under flood: p50 %.2f ms, max %.2f ms, flood %.1f MB read"
          % (statistics.median(rtts) * 1000, max(rtts) * 1000, got[0] / 1e6))
    assert statistics.median(rtts) < 0.1, rtts
    c.close()


def test_the_term_client_of_deploy_local_runs_a_shell(rt, box):
    """deploy/local/term, the README's terminal: a shell in the sandbox from
    a local terminal; Ctrl-] detaches."""
    import pty
    box = rt.new_box("term-client", owner=box)  # the shared one is at its terminal limit
    env = dict(os.environ, ATELIER_URL=rt.stack.url)
    auth = box.h.get("Authorization", "")
    if auth.startswith("Bearer "):
        env["TOKEN"] = auth[7:]
    else:
        env["API_KEY"] = box.h["X-API-Key"]
    script = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "local", "term")
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(script, [script, box.uuid], env)
    seen = b""

    def read_until(needle, timeout=20):
        nonlocal seen
        deadline = time.monotonic() + timeout
        while needle not in seen:
            assert time.monotonic() < deadline, "no %r in %r" % (needle, seen[-500:])
            r, _, _ = select.select([fd], [], [], 0.5)
            if r:
                try:
                    seen += os.read(fd, 65536)
                except OSError:  # EIO: the client is gone
                    raise AssertionError("the client exited: %r" % seen[-2000:]) from None

    try:
        read_until(b"$ ")  # the prompt: the client is in raw mode by then
        os.write(fd, b"echo from-$((6*7))-term\r")
        read_until(b"from-42-term")
        os.write(fd, b"\x1d")
        read_until(b"detached")
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, seen[-500:]
        pid = 0
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)
