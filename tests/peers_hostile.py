"""Upstream servers and probes for the hostile-input suite (tests/test_hostile_*.py), built on
tests/peers.py's Peer base (threaded, 127.0.0.1 only, stopped with .stop()).

  RecordingOrigin   records every byte each connection carried and every request it parsed
                    from them (method, target, headers, body) with a strict HTTP/1.1 reading:
                    what a smuggled request would look like to a real origin.
  RawResponder      reads one request, answers with scripted raw bytes, then records whether
                    kfwd closed the upstream connection (a message kfwd refused must never
                    leave it pooled).
(cpu_seconds, idle_cpu, exchange and status_of, which the suite uses too, are in peers.py.)
"""

import socket
import threading
import time

from peers import Headers, Peer, ProtocolError

SPLIT_PAUSE = 0.2  # seconds between the parts of a RawResponder response given as a tuple


class ParsedRequest:
    def __init__(self, method, target, version, headers, body):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body = body

    def __repr__(self):
        return f"ParsedRequest({self.method} {self.target} {self.headers!r} body={self.body[:60]!r})"


def _parse_chunked(buf, pos):
    """A strict chunked body at buf[pos:] -> (body, end) or None when incomplete."""
    body = bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = bytes(buf[pos:eol]).split(b";", 1)[0].rstrip(b" \t")
        if not size_text or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise ProtocolError(f"bad chunk size line {bytes(buf[pos:eol])!r}")
        size = int(size_text, 16)
        pos = eol + 2
        if size == 0:
            break
        if len(buf) < pos + size + 2:
            return None
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise ProtocolError("chunk data not followed by CRLF")
        body += buf[pos : pos + size]
        pos += size + 2
    while True:  # trailers
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        if eol == pos:
            return bytes(body), pos + 2
        if b":" not in buf[pos:eol]:
            raise ProtocolError(f"trailer line without colon {bytes(buf[pos:eol])!r}")
        pos = eol + 2


def parse_requests(buf):
    """Every complete request in @buf, read the strict way an origin would (RFC 9112):
    -> (requests, bytes consumed). ProtocolError on bytes no origin should accept."""
    out = []
    pos = 0
    while pos < len(buf):
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        lines = bytes(buf[pos:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise ProtocolError(f"bad request line {lines[0]!r}")
        items = []
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip() or line[0] in " \t":
                raise ProtocolError(f"bad header line {line!r}")
            items.append((name, value.strip(" \t")))
        headers = Headers(items)
        body_start = end + 4
        te = headers.tokens("transfer-encoding")
        cls = headers.get_all("content-length")
        if te and cls:
            raise ProtocolError("both Transfer-Encoding and Content-Length")
        if te:
            if te != ["chunked"]:
                raise ProtocolError(f"Transfer-Encoding {te}")
            r = _parse_chunked(buf, body_start)
            if r is None:
                break
            body, pos = r
        else:
            if len(set(cls)) > 1:
                raise ProtocolError(f"Content-Length {cls}")
            n = int(cls[0]) if cls else 0
            if len(buf) < body_start + n:
                break
            body = bytes(buf[body_start : body_start + n])
            pos = body_start + n
        out.append(ParsedRequest(parts[0], parts[1], parts[2], headers, body))
    return out, pos


class RecordingOrigin(Peer):
    """Keep-alive origin that records .raw (bytes per connection, in order of connections)
    and .parsed (every request it read, across connections), answering each with
    `200 OK` and a short body. Bytes it cannot read as HTTP are recorded in .bad and the
    connection is closed, as a strict origin would."""

    name = "recording-origin"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.raw = []
        self.parsed = []
        self.bad = []

    def targets(self):
        with self.lock:
            return [r.target for r in self.parsed]

    def all_bytes(self):
        with self.lock:
            return b"".join(bytes(b) for b in self.raw)

    def handle(self, conn):
        buf = bytearray()
        with self.lock:
            self.raw.append(buf)
        done = 0
        while True:
            try:
                d = conn.sock.recv(65536)
            except (socket.timeout, OSError):
                return
            if not d:
                return
            with self.lock:
                buf += d
            try:
                reqs, used = parse_requests(buf[done:])
            except ProtocolError as e:
                with self.lock:
                    self.bad.append(str(e))
                return
            done += used
            for r in reqs:
                with self.lock:
                    self.parsed.append(r)
                body = b"origin saw " + r.target.encode("latin-1")
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))


class RawResponder(Peer):
    """Reads a request head (and its Content-Length body), then sends @response: bytes, a
    tuple of parts sent SPLIT_PAUSE apart, or a list of either used one per request in
    arrival order. Unless close=True it then keeps the connection open to see what kfwd does
    with it: .closed_by_kfwd counts connections kfwd closed after a response, .requests_seen
    counts request heads read (a pooled connection brings a second one)."""

    name = "raw-responder"

    def __init__(self, response, *, close=False, **kw):
        super().__init__(**kw)
        self.response = response
        self.close = close
        self.closed_by_kfwd = 0
        self.requests_seen = 0
        self.closed = threading.Event()
        self.served = 0

    def handle(self, conn):
        while True:
            req = conn.read_request()
            if req is None:
                break
            with self.lock:
                self.requests_seen += 1
                n = self.served
                self.served += 1
            response = self.response[n % len(self.response)] if isinstance(self.response, list) else self.response
            n = int(req.headers.get("content-length", "0"))
            if n:
                conn.stream.read_exact(n)
            if isinstance(response, tuple):  # parts sent apart: kfwd forwards the first alone
                for i, part in enumerate(response):
                    if i:
                        time.sleep(SPLIT_PAUSE)
                    conn.send(part)
            else:
                conn.send(response)
            if self.close:
                return
        with self.lock:
            self.closed_by_kfwd += 1
        self.closed.set()
