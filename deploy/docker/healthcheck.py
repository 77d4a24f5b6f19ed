#!/usr/bin/env python3
"""Container healthcheck for the Atelier processes (installed in the image as
/usr/local/bin/atelier-healthcheck; standard library only).

  atelier-healthcheck http [URL]   the gateway: GET URL (default
                                   http://127.0.0.1:$ATELIER_HTTP_PORT/health)
                                   answers 200
  atelier-healthcheck heartbeat    a worker: the process in this container has
                                   a live heartbeat in Redis (REDIS_URL), i.e.
                                   a member of hb:index whose instance is
                                   $ATELIER_INSTANCE or starts with
                                   "<hostname>-" (the default instance name)

Exit 0 when healthy, 1 otherwise (the reason on stderr).
"""
import os
import socket
import sys
import time
import urllib.parse
import urllib.request

TIMEOUT = 3.0


def check_http(url):
    if not url:
        url = "http://127.0.0.1:%s/health" % os.environ.get("ATELIER_HTTP_PORT", "8080")
    with urllib.request.urlopen(url, timeout=TIMEOUT) as r:
        if r.status != 200:
            raise RuntimeError("%s answered %d" % (url, r.status))


def _redis_connect(url):
    u = urllib.parse.urlsplit(url)
    if u.scheme == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(TIMEOUT)
        s.connect(u.path)
        return s, u.password
    if u.scheme != "redis":
        raise RuntimeError("REDIS_URL %r: expected redis:// or unix://" % url)
    s = socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=TIMEOUT)
    return s, u.password


def _redis_cmd(sock, buf, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    sock.sendall(out)
    return _read_reply(sock, buf)


def _read_line(sock, buf):
    while b"\r\n" not in buf[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("redis closed the connection")
        buf[0] += chunk
    line, buf[0] = buf[0].split(b"\r\n", 1)
    return line


def _read_reply(sock, buf):
    line = _read_line(sock, buf)
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError("redis: " + rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        while len(buf[0]) < n + 2:
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError("redis closed the connection")
            buf[0] += chunk
        data, buf[0] = buf[0][:n], buf[0][n + 2:]
        return data.decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(sock, buf) for _ in range(n)]
    raise RuntimeError("redis: unexpected reply %r" % line)


def check_heartbeat():
    url = os.environ.get("REDIS_URL", "")
    if not url:
        raise RuntimeError("REDIS_URL is not set")
    instance = os.environ.get("ATELIER_INSTANCE", "")
    host = socket.gethostname()
    sock, password = _redis_connect(url)
    buf = [b""]
    try:
        if password:
            _redis_cmd(sock, buf, "AUTH", urllib.parse.unquote(password))
        now_ms = int(time.time() * 1000)
        members = _redis_cmd(sock, buf, "ZRANGEBYSCORE", "hb:index", now_ms, "+inf") or []
    finally:
        sock.close()
    for m in members:
        inst = m.split(":", 1)[1] if ":" in m else m
        if (instance and inst == instance) or (not instance and inst.startswith(host + "-")):
            return
    raise RuntimeError("no live heartbeat for %s in hb:index"
                       % (instance or "instance " + host + "-*"))


def main(argv):
    mode = argv[1] if len(argv) > 1 else "http"
    try:
        if mode == "http":
            check_http(argv[2] if len(argv) > 2 else "")
        elif mode == "heartbeat":
            check_heartbeat()
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except Exception as e:  # noqa: BLE001 - any failure means unhealthy
        print("unhealthy: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
