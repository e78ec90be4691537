"""Python upstream servers and helpers for the HTTP gateway tests (tests/test_http_*.py: routes,
Location rewriting, header rewriting, connection reuse, retries, health, connection slots). The
servers are built on tests/peers.py's Peer base: threaded, 127.0.0.1 only, every connection in a
daemon thread, stopped with .stop(). Each records what it saw (.requests, arrival times,
concurrency) for the test to assert on.

Helpers: one request on a fresh connection (request), the echo upstream's view of it (echo_json,
seen_headers), kfwd's own answers (is_kfwd_answer), the counters the suite reads, and MiniNginx,
a private nginx process that a test may SIGKILL (the mini_nginx fixture of conftest.py).
"""

import json
import socket
import struct
import time

import peers
from peers import Peer


def _json_body(req, **extra):
    d = req.to_json()
    d.update(extra)
    return json.dumps(d).encode()


def _send_response(conn, status, reason, body=b"", headers=(), close=False, head_only=False):
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    if close:
        head += "Connection: close\r\n"
    conn.send(head.encode("latin-1") + b"\r\n" + (b"" if head_only else body))


def _hold_open(peer, conn):
    """Keep the connection open, reading nothing, until the peer stops or the other side
    closes it (detected by MSG_PEEK without consuming anything)."""
    conn.sock.settimeout(0.1)
    while not peer.stopping.is_set():
        try:
            d = conn.sock.recv(1, socket.MSG_PEEK)
            if not d:
                return
            time.sleep(0.1)  # data waiting that we refuse to read: just wait
        except socket.timeout:
            continue
        except OSError:
            return


class Scripted(Peer):
    """Keep-alive server whose answer the request chooses through its own headers:
      X-Status: N            status code (default 200)
      X-Location: VALUE      adds `Location: VALUE` to the response
    The body is the request as JSON (method, target, headers...). Records .requests."""

    name = "scripted"

    def handle(self, conn):
        for req in self.each_request(conn, body=True):
            status = int(req.headers.get("x-status", "200"))
            hdrs = [("Content-Type", "application/json")]
            loc = req.headers.get_all("x-location")
            if loc:
                hdrs.append(("Location", loc[0]))
            body = _json_body(req)
            _send_response(conn, status, "Scripted", body, hdrs, head_only=req.method == "HEAD")


class EarlyResponder(Peer):
    """POST/PUT with a body: answers 413 (keep-alive, no Connection: close) from the request head
    alone, never reads the body, and keeps the connection open. Anything else: 200 JSON echo,
    keep-alive. .early_conns counts connections that got a 413."""

    name = "early-responder"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.early_conns = 0

    def handle(self, conn):
        for req in self.each_request(conn):
            if req.method in ("POST", "PUT") and int(req.headers.get("content-length", "0")) > 0:
                with self.lock:
                    self.early_conns += 1
                _send_response(conn, 413, "Content Too Large", b"too large, go away\n",
                               [("Content-Type", "text/plain")])
                _hold_open(self, conn)
                return
            conn.read_body(req)
            _send_response(conn, 200, "OK", _json_body(req), [("Content-Type", "application/json")])


class StatusSequence(Peer):
    """Keep-alive server answering statuses from a script: the i-th request overall (0-based)
    gets statuses[i] (the last entry repeats). Records .requests and .arrivals
    [(monotonic time, X-Req-Id header, method)]."""

    name = "status-sequence"

    def __init__(self, statuses=(503,), **kw):
        super().__init__(**kw)
        self.statuses = list(statuses)
        self.arrivals = []

    def handle(self, conn):
        while True:
            req = conn.read_request()
            if req is None:
                return
            t = time.monotonic()
            with self.lock:
                i = len(self.requests)
                self.requests.append(req)
                self.arrivals.append((t, req.headers.get("x-req-id"), req.method))
                status = self.statuses[min(i, len(self.statuses) - 1)]
            conn.read_body(req)
            body = f"attempt {i} status {status}\n".encode()
            _send_response(conn, status, "Scripted", body, [("Content-Type", "text/plain")],
                           head_only=req.method == "HEAD")


class StaleKeepAlive(Peer):
    """Answers with keep-alive (Content-Length, no Connection: close) and then misbehaves:

      mode="fin-on-second":  the second request on a connection is read, then the connection is
                             closed (FIN) without a byte of response: to kfwd it looks exactly
                             like a pooled connection that the server's idle timer closed while
                             the request was in flight.
      mode="rst-on-second":  same, but closed with RST (SO_LINGER 0).
      mode="close-after":    every response is followed, `delay` s later, by a silent close.

    .served counts 200 responses; .dropped counts requests closed without an answer."""

    name = "stale-keep-alive"

    def __init__(self, mode="fin-on-second", delay=0.001, **kw):
        super().__init__(**kw)
        self.mode = mode
        self.delay = delay
        self.served = 0
        self.dropped = 0

    def handle(self, conn):
        n = 0
        while True:
            req = conn.read_request()
            if req is None:
                return
            n += 1
            with self.lock:
                self.requests.append(req)
            if n >= 2 and self.mode in ("fin-on-second", "rst-on-second"):
                with self.lock:
                    self.dropped += 1
                if self.mode == "rst-on-second":
                    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.sock.close()
                return
            conn.read_body(req)
            with self.lock:  # counted before the answer, so a client that has it sees it
                self.served += 1
            _send_response(conn, 200, "OK", f"served {req.target}\n".encode(),
                           [("Content-Type", "text/plain")])
            if self.mode == "close-after":
                time.sleep(self.delay)
                conn.sock.close()
                return


class Slow(Peer):
    """Keep-alive server that waits before answering: /.../delay/<ms>[...] waits ms (default
    `default_ms`), then answers 200 with the target. Tracks the number of requests being
    processed at once (.max_inflight), open connections at once (.max_conns), and per
    request (arrival, answer) times in .log [(target, t_arrival, t_answered)]."""

    name = "slow"

    def __init__(self, default_ms=0, **kw):
        super().__init__(**kw)
        self.default_ms = default_ms
        self.inflight = 0
        self.max_inflight = 0
        self.open_conns = 0
        self.max_conns = 0
        self.log = []

    def _delay_ms(self, target):
        parts = target.split("?")[0].split("/")
        if "delay" in parts:
            i = parts.index("delay")
            if i + 1 < len(parts) and parts[i + 1].isdigit():
                return int(parts[i + 1])
        return self.default_ms

    def handle(self, conn):
        with self.lock:
            self.open_conns += 1
            self.max_conns = max(self.max_conns, self.open_conns)
        try:
            while True:
                req = conn.read_request()
                if req is None:
                    return
                t0 = time.monotonic()
                counted = False
                with self.lock:
                    self.requests.append(req)
                    self.inflight += 1
                    self.max_inflight = max(self.max_inflight, self.inflight)
                try:
                    conn.read_body(req)
                    end = t0 + self._delay_ms(req.target) / 1000.0
                    while not self.stopping.is_set() and time.monotonic() < end:
                        time.sleep(min(0.01, max(0.0, end - time.monotonic())))
                    t1 = time.monotonic()
                    with self.lock:  # logged before the answer, so a client that has it sees it
                        self.log.append((req.target, t0, t1))
                        self.inflight -= 1
                        counted = True
                    _send_response(conn, 200, "OK", f"slow {req.target}\n".encode(),
                                   [("Content-Type", "text/plain")])
                finally:
                    if not counted:
                        with self.lock:
                            self.inflight -= 1
        finally:
            with self.lock:
                self.open_conns -= 1


# --------------------------------------------------------------------------- helpers of the HTTP tests

CONNECTS = "kfwd_upstream_connects_total"


REUSES = "kfwd_upstream_reuses_total"


CONNECT_ERRORS = "kfwd_upstream_connect_errors_total"


RETRIES = "kfwd_upstream_retries_total"


IDLE = "kfwd_upstream_idle"


SLACK = 0.050  # scheduling slack for timing assertions (2 shared cores)


def cfg(*lines):
    return "\n".join(lines)


def request(port, method, target, headers=None, body=None, host="kfwd.test", timeout=10.0):
    """One request on a fresh client connection; the Response keeps its body."""
    with peers.HttpConn(port, timeout=timeout) as c:
        c.request(method, target, headers, body, host=host)
        return c.read_response(method, keep_body=True)


def echo_json(r):
    assert r.status == 200, f"expected 200 from the echo upstream, got {r} body={r.body[:300]!r}"
    return json.loads(r.body)


def seen_headers(r):
    return peers.Headers(echo_json(r)["headers"])


def is_kfwd_answer(r, status):
    """kfwd's own answers carry a body '<status> <reason>\\n' and Connection: close."""
    return (
        r.status == status
        and r.body is not None
        and r.body.startswith(f"{status} ".encode())
        and "close" in r.headers.tokens("connection")
    )


def nreq(p):
    with p.lock:
        return len(p.requests)


class MiniNginx(peers.NginxProcess):
    """One nginx-light process (master_process off: the PID is the server) answering
    `location / { return 200 "<ident>\\n"; }` on its own port."""

    def __init__(self, prefix, ident):
        self.ident = ident
        self.port = peers.free_port()
        self.addr = f"127.0.0.1:{self.port}"
        http = f"""
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{self.port} backlog=1024;
        location / {{ return 200 "{ident}\\n"; }}
    }}"""
        super().__init__(prefix, http, (self.port,), default_type="text/plain")


class Files(Peer):
    """Keep-alive server of fixed resources: files = {path: (content_type, body)}; the query is
    ignored. Framing by the request's X-Framing header: "length" (default), "chunked" (the body
    in chunks of X-Chunk bytes, default 100) or "close" (no length, closed after the body); or a
    failure after the head and half the body: "truncate" (closed) or "stall" (held open until
    the other side closes). Unknown paths get 404. Records .requests."""

    name = "files"

    def __init__(self, files, **kw):
        super().__init__(**kw)
        self.files = dict(files)

    def handle(self, conn):
        for req in self.each_request(conn, body=True):
            path = req.target.split("?", 1)[0]
            if path not in self.files:
                _send_response(conn, 404, "Not Found", b"no such file\n")
                continue
            ctype, body = self.files[path]
            framing = req.headers.get("x-framing", "length")
            head = "HTTP/1.1 200 OK\r\n" + (f"Content-Type: {ctype}\r\n" if ctype else "")
            if framing == "chunked":
                step = int(req.headers.get("x-chunk", "100"))
                out = bytearray()
                for i in range(0, len(body), step):
                    piece = body[i:i + step]
                    out += b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n"
                conn.send((head + "Transfer-Encoding: chunked\r\n\r\n").encode() + bytes(out)
                          + b"0\r\nX-Trailer: t\r\n\r\n")
            elif framing == "close":
                conn.send((head + "Connection: close\r\n\r\n").encode() + body)
                return
            elif framing in ("truncate", "stall"):
                conn.send((head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body[: len(body) // 2])
                if framing == "stall":
                    _hold_open(self, conn)
                return
            else:
                conn.send((head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
