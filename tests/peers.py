"""Test peers for kfwd's pytest suite: raw-socket HTTP/1.1 upstream servers that do what
nginx can't (echo an upload's sha256, die mid-body, never answer, answer garbage, count how
far a fast sender got), and a raw-socket HTTP client that checks framing itself.

Standard library only. Every server listens on 127.0.0.1 (or ::1) on a free port, runs its
accept loop and each connection in daemon threads, and is stopped with .stop(); a Peer
subclass reads requests with each_request()/next_request() (recorded in .requests).

Also shared by the other peers_*.py and the tests: NginxProcess (an nginx in the foreground
under a prefix, for the origin, MiniNginx and NginxTls), wait_accepting(), SocketClient,
cpu_seconds()/idle_cpu(), exchange() (raw bytes in, everything until close out), status_of().
"""

import errno
import fcntl
import hashlib
import json
import os
import random
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
import weakref
from pathlib import Path

LOCAL = "127.0.0.1"
MiB = 1 << 20
KiB = 1 << 10


# --------------------------------------------------------------------------- helpers


def free_port(host=LOCAL):
    """A TCP port that was free a moment ago on host (bind to port 0, close)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def raise_nofile(n):
    """Let this process (and the kfwd it starts) hold n descriptors, within the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


def wait_accepting(proc, ports, timeout, what, details=lambda: "", error=RuntimeError):
    """Wait until every one of ports on 127.0.0.1 accepts a connection while proc (a Popen)
    runs; raises error naming what (and details()) when proc exits or timeout passes first."""
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        if proc.poll() is not None:
            raise error(f"{what} exited with {proc.returncode} during start-up:\n{details()}")
        if time.monotonic() > deadline:
            raise error(f"{what} not accepting on {pending} after {timeout} s:\n{details()}")
        try:
            socket.create_connection((LOCAL, pending[0]), timeout=0.5).close()
            pending.pop(0)
        except OSError:
            time.sleep(0.02)


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU time of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of stat); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def idle_cpu(pid, seconds=1.0):
    """CPU seconds a process used over the next @seconds (a spin shows as ~@seconds)."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - before


def exchange(port, raw, *, timeout=5.0, shut_wr=False, close_early=False):
    """Send @raw on a fresh connection and read until kfwd closes it (or @timeout).
    Returns (bytes received, closed): closed is True when kfwd ended the connection (FIN or
    reset) within the timeout. close_early: close right after sending (the client gives up)."""
    s = socket.create_connection((LOCAL, port), timeout=timeout)
    got = bytearray()
    closed = False
    try:
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if close_early:
            return b"", True
        if shut_wr:
            s.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                closed = True
                break
            if not d:
                closed = True
                break
            got += d
    finally:
        s.close()
    return bytes(got), closed


def status_of(data):
    """Status code of the first response in @data, or None."""
    if not data.startswith(b"HTTP/1."):
        return None
    return int(data.split(b" ", 2)[1])


def hostport(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def outq(sock):
    """Bytes in sock's send queue not yet acknowledged by the peer (TIOCOUTQ)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def graceful_close(sock, linger=5.0):
    """Send FIN after everything queued, then read until the peer closes (or linger expires)
    so that close() never turns into a RST that could destroy bytes still in flight."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    deadline = time.monotonic() + linger
    try:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                if not sock.recv(65536):
                    break
            except socket.timeout:
                continue
    except OSError:
        pass
    finally:
        sock.close()


class Payload:
    """A deterministic body of `size` bytes: a seeded 1 MiB random block repeated."""

    def __init__(self, size, seed=1, block_size=MiB):
        self.size = size
        self.seed = seed
        self.block = random.Random(seed).randbytes(block_size)
        self._sha = None

    def pieces(self, piece=MiB):
        """memoryviews covering the payload in order, each at most `piece` bytes."""
        mv = memoryview(self.block)
        bl = len(self.block)
        pos = 0
        while pos < self.size:
            off = pos % bl
            n = min(piece, bl - off, self.size - pos)
            yield mv[off : off + n]
            pos += n

    @property
    def sha256(self):
        if self._sha is None:
            h = hashlib.sha256()
            for p in self.pieces():
                h.update(p)
            self._sha = h.hexdigest()
        return self._sha

    def bytes(self):
        return b"".join(bytes(p) for p in self.pieces())


class Headers:
    """Ordered (name, value) list with case-insensitive look-ups."""

    def __init__(self, items=()):
        self.items = list(items)

    def get_all(self, name):
        n = name.lower()
        return [v for k, v in self.items if k.lower() == n]

    def get(self, name, default=None):
        vals = self.get_all(name)
        return ", ".join(vals) if vals else default

    def __contains__(self, name):
        return bool(self.get_all(name))

    def names(self):
        return [k.lower() for k, _ in self.items]

    def tokens(self, name):
        """Comma-separated tokens of every `name` header, lower-cased."""
        out = []
        for v in self.get_all(name):
            out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out

    def __repr__(self):
        return f"Headers({self.items!r})"


def parse_head(raw):
    """raw head bytes (without the final CRLFCRLF) -> (first line, Headers)."""
    lines = raw.decode("latin-1").split("\r\n")
    items = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" and items:  # obsolete line folding: keep it readable
            k, v = items[-1]
            items[-1] = (k, v + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError(f"header line without colon: {line!r}")
        items.append((name, value.strip()))
    return lines[0], Headers(items)


class ProtocolError(Exception):
    pass


class Closed(Exception):
    """The other side closed (or reset) the connection where a message was expected."""


# --------------------------------------------------------------------------- buffered stream


class Stream:
    """Buffered reader over a socket; used by peers and clients alike."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = False
        self.reset = False

    def _recv(self, n):
        try:
            data = self.sock.recv(n)
        except ConnectionResetError:
            self.reset = True
            data = b""
        if not data:
            self.eof = True
        return data

    def fill(self, n=256 * KiB):
        data = self._recv(n)
        self.buf += data
        return len(data)

    def read_until(self, delim, limit):
        """Bytes up to and excluding delim. None on EOF with nothing buffered; Closed on EOF
        after a partial message; ProtocolError past limit."""
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise ProtocolError(f"no {delim!r} within {limit} bytes")
            start = max(0, len(self.buf) - len(delim) + 1)
            if not self.fill():
                if not self.buf:
                    return None
                raise Closed(f"EOF after {len(self.buf)} bytes of a partial message: {bytes(self.buf[:200])!r}")

    def read_some(self, n):
        """Up to n bytes (b'' only at EOF)."""
        if self.buf:
            out = bytes(self.buf[:n])
            del self.buf[:n]
            return out
        return self._recv(n)

    def readinto(self, mv):
        """Fill part of memoryview mv; returns count (0 only at EOF)."""
        if self.buf:
            n = min(len(mv), len(self.buf))
            mv[:n] = self.buf[:n]
            del self.buf[:n]
            return n
        try:
            n = self.sock.recv_into(mv)
        except ConnectionResetError:
            self.reset = True
            n = 0
        if n == 0:
            self.eof = True
        return n

    def read_exact(self, n):
        out = bytearray()
        while len(out) < n:
            d = self.read_some(n - len(out))
            if not d:
                raise Closed(f"EOF after {len(out)} of {n} bytes")
            out += d
        return bytes(out)


def read_chunked(stream, sink, *, read_size=256 * KiB, pace=None):
    """Decode a chunked body from stream, passing data to sink(bytes).
    Returns (complete, chunk_count, trailers Headers)."""
    count = 0
    reads = 0
    while True:
        try:
            line = stream.read_until(b"\r\n", 4096)
        except Closed:
            return False, count, Headers()
        if line is None:
            return False, count, Headers()
        size_txt = line.split(b";", 1)[0].strip()
        try:
            size = int(size_txt, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size line {line!r}")
        if size == 0:
            break
        count += 1
        left = size
        while left:
            if pace:
                pace(reads)
            reads += 1
            d = stream.read_some(min(left, read_size))
            if not d:
                return False, count, Headers()
            sink(d)
            left -= len(d)
        try:
            crlf = stream.read_exact(2)
        except Closed:
            return False, count, Headers()
        if crlf != b"\r\n":
            raise ProtocolError(f"chunk {count} not followed by CRLF: {crlf!r}")
    # trailer section
    items = []
    while True:
        try:
            line = stream.read_until(b"\r\n", 64 * KiB)
        except Closed:
            return False, count, Headers(items)
        if line is None:
            return False, count, Headers(items)
        if line == b"":
            return True, count, Headers(items)
        name, _, value = line.decode("latin-1").partition(":")
        items.append((name, value.strip()))


# --------------------------------------------------------------------------- client


_clients = weakref.WeakSet()


def close_all_clients():
    """Close every HttpConn still open (fixtures call this before stopping kfwd)."""
    for c in list(_clients):
        c.close()


class Response:
    def __init__(self):
        self.version = None
        self.status = None
        self.reason = None
        self.headers = Headers()
        self.interim = []  # [(status, Headers)] of 1xx responses seen before this one
        self.framing = None  # "none" | "length" | "chunked" | "close"
        self.content_length = None
        self.body_len = 0
        self.sha256 = None
        self.body = None  # bytes when keep_body
        self.complete = False
        self.eof = False  # connection reached EOF while/after reading this response
        self.trailers = Headers()
        self.chunks = 0

    def __repr__(self):
        return (
            f"<Response {self.status} {self.framing} len={self.body_len} cl={self.content_length} "
            f"complete={self.complete} eof={self.eof}>"
        )


class SocketClient:
    """close() and the context manager of a client owning self.sock."""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


class HttpConn(SocketClient):
    """One client TCP connection speaking HTTP/1.x by hand."""

    def __init__(self, port, host=LOCAL, *, rcvbuf=None, sndbuf=None, timeout=30.0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if sndbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stream = Stream(self.sock)
        self.host = host
        self.port = port
        _clients.add(self)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        self.sock.sendall(data)

    @staticmethod
    def build(method, target, headers=None, body=None, version="HTTP/1.1", host="kfwd.test"):
        hdrs = list(headers.items() if isinstance(headers, dict) else (headers or []))
        names = {k.lower() for k, _ in hdrs}
        if host is not None and "host" not in names:
            hdrs.insert(0, ("Host", host))
        if body is not None and "content-length" not in names and "transfer-encoding" not in names:
            hdrs.append(("Content-Length", str(len(body))))
        head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
        return head.encode("latin-1") + (body or b"")

    def request(self, method, target, headers=None, body=None, **kw):
        self.send(self.build(method, target, headers, body, **kw))

    def read_head(self):
        """-> (version, status, reason, Headers). Raises Closed at EOF."""
        raw = self.stream.read_until(b"\r\n\r\n", 1 << 20)
        if raw is None:
            raise Closed("connection closed before a response head" + (" (reset)" if self.stream.reset else ""))
        first, headers = parse_head(raw)
        parts = first.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ProtocolError(f"bad status line {first!r}")
        return parts[0], int(parts[1]), (parts[2] if len(parts) > 2 else ""), headers

    def read_response(self, method="GET", *, keep_body=False, read_size=256 * KiB, pace=None, sink=None, skip_1xx=True):
        """Read one response and its body, framing it per RFC 9112 6.3. Never raises for a
        truncated body: check .complete / .eof. pace(i) runs before the i-th body read."""
        r = Response()
        while True:
            r.version, r.status, r.reason, r.headers = self.read_head()
            if 100 <= r.status < 200 and skip_1xx and r.status != 101:
                r.interim.append((r.status, r.headers))
                continue
            break
        h = hashlib.sha256()
        parts = [] if keep_body else None

        def take(d):
            h.update(d)
            r.body_len += len(d)
            if parts is not None:
                parts.append(d)
            if sink:
                sink(d)

        te = r.headers.tokens("transfer-encoding")
        cl = r.headers.get_all("content-length")
        if method == "HEAD" or 100 <= r.status < 200 or r.status in (204, 304):
            r.framing = "none"
            if cl:
                r.content_length = int(cl[0])
            r.complete = True
        elif te:
            if te[-1] != "chunked":
                raise ProtocolError(f"response with Transfer-Encoding {te}")
            r.framing = "chunked"
            r.complete, r.chunks, r.trailers = read_chunked(self.stream, take, read_size=read_size, pace=pace)
        elif cl:
            if len(set(cl)) != 1:
                raise ProtocolError(f"conflicting Content-Length {cl}")
            r.framing = "length"
            r.content_length = left = int(cl[0])
            i = 0
            while left:
                if pace:
                    pace(i)
                i += 1
                d = self.stream.read_some(min(left, read_size))
                if not d:
                    break
                take(d)
                left -= len(d)
            r.complete = left == 0
        else:
            r.framing = "close"
            i = 0
            while True:
                if pace:
                    pace(i)
                i += 1
                d = self.stream.read_some(read_size)
                if not d:
                    break
                take(d)
            r.complete = not self.stream.reset
        r.eof = self.stream.eof
        r.sha256 = h.hexdigest()
        if parts is not None:
            r.body = b"".join(parts)
        return r

    def read_length_body_into(self, buf):
        """Fast path for big Content-Length bodies: fill bytearray buf exactly; returns bytes read."""
        mv = memoryview(buf)
        got = 0
        while got < len(buf):
            n = self.stream.readinto(mv[got:])
            if n == 0:
                break
            got += n
        return got

    def wait_eof(self, timeout=5.0):
        """True if the server closes the connection within timeout (no more bytes expected;
        any bytes that do arrive make this raise)."""
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            d = self.stream.read_some(65536)
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(old)
        if d:
            raise ProtocolError(f"unexpected bytes after the response: {d[:200]!r}")
        return True


def get(port, target, *, host=LOCAL, headers=None, method="GET", **kw):
    """One request on a fresh connection; returns the Response (connection closed after)."""
    with HttpConn(port, host) as c:
        c.request(method, target, headers)
        return c.read_response(method, **kw)


def run_curl(args, timeout=120):
    return subprocess.run(
        ["curl", "-sS", "--noproxy", "*", *args], capture_output=True, timeout=timeout
    )


# --------------------------------------------------------------------------- servers


class Request:
    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.body_len = 0
        self.sha256 = None
        self.chunked = False
        self.sent_100 = False
        self.trailers = Headers()

    def to_json(self):
        return {
            "method": self.method,
            "target": self.target,
            "version": self.version,
            "headers": self.headers.items,
            "bytes": self.body_len,
            "sha256": self.sha256,
            "chunked": self.chunked,
            "sent_100": self.sent_100,
            "trailers": self.trailers.items,
        }


class ServerConn:
    def __init__(self, peer, sock, addr):
        self.peer = peer
        self.sock = sock
        self.addr = addr
        self.stream = Stream(sock)

    def send(self, data):
        self.sock.sendall(data)

    def read_request(self):
        """Next request head on this connection, or None at a clean EOF."""
        raw = self.stream.read_until(b"\r\n\r\n", 1 << 20)
        if raw is None:
            return None
        first, headers = parse_head(raw)
        parts = first.split(" ")
        if len(parts) != 3:
            raise ProtocolError(f"bad request line {first!r}")
        return Request(parts[0], parts[1], parts[2], headers)

    def read_body(self, req, sink=None):
        """Read the request body (Content-Length or chunked), hashing it."""
        h = hashlib.sha256()

        def take(d):
            h.update(d)
            req.body_len += len(d)
            if sink:
                sink(d)

        te = req.headers.tokens("transfer-encoding")
        if te:
            if te[-1] != "chunked":
                raise ProtocolError(f"request Transfer-Encoding {te}")
            req.chunked = True
            complete, _, req.trailers = read_chunked(self.stream, take, read_size=MiB)
            if not complete:
                raise Closed("chunked request body truncated")
        else:
            left = int(req.headers.get("content-length", "0"))
            buf = bytearray(MiB)
            mv = memoryview(buf)
            while left:
                n = self.stream.readinto(mv[: min(left, len(buf))])
                if n == 0:
                    raise Closed(f"request body truncated, {left} bytes missing")
                take(mv[:n])
                left -= n
        req.sha256 = h.hexdigest()
        return req


class Peer:
    """Threaded TCP server base. Subclasses implement handle(conn)."""

    name = "peer"

    def __init__(self, host=LOCAL, port=0, *, backlog=512, sndbuf=None, rcvbuf=None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.lsock = socket.socket(family, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sndbuf:
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        if rcvbuf:
            self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.lsock.bind((host, port))
        self.lsock.listen(backlog)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.conns = set()
        self.threads = []
        self.accepted = 0
        self.errors = []  # exceptions raised by handlers (other than the other side closing)
        self.requests = []  # Request objects, in arrival order
        self._thread = None

    @property
    def addr(self):
        return hostport(self.host, self.port)

    def start(self):
        self._thread = threading.Thread(target=self._accept_loop, name=f"{self.name}-accept", daemon=True)
        self._thread.start()
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                r, _, _ = select.select([self.lsock], [], [], 0.1)
            except (OSError, ValueError):
                return
            if not r:
                continue
            try:
                sock, addr = self.lsock.accept()
            except OSError:
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(60)
            with self.lock:
                self.accepted += 1
                self.conns.add(sock)
            t = threading.Thread(target=self._run, args=(sock, addr), name=f"{self.name}-conn", daemon=True)
            with self.lock:
                self.threads.append(t)
            t.start()

    def _run(self, sock, addr):
        try:
            self.handle(ServerConn(self, sock, addr))
        except (Closed, BrokenPipeError, ConnectionResetError):
            pass
        except OSError as e:
            if not self.stopping.is_set() and e.errno not in (errno.EBADF, errno.EPIPE, errno.ECONNRESET):
                self.errors.append(e)
        except Exception as e:  # noqa: BLE001 - recorded for the test to assert on
            if not self.stopping.is_set():
                self.errors.append(e)
        finally:
            with self.lock:
                self.conns.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def handle(self, conn):
        raise NotImplementedError

    def next_request(self, conn):
        """The next request head on conn, recorded in .requests; None at a clean EOF."""
        req = conn.read_request()
        if req is not None:
            with self.lock:
                self.requests.append(req)
        return req

    def drain_until_closed(self, conn):
        """Read and drop whatever comes on conn, answering nothing, until the other side
        closes it or the peer stops."""
        conn.sock.settimeout(0.2)
        while not self.stopping.is_set():
            try:
                if not conn.sock.recv(65536):
                    return
            except socket.timeout:
                continue

    def each_request(self, conn, *, body=False):
        """Each request of a keep-alive connection until a clean EOF, recorded in .requests
        (after its body is read, when body)."""
        while True:
            req = conn.read_request()
            if req is None:
                return
            if body:
                conn.read_body(req)
            with self.lock:
                self.requests.append(req)
            yield req

    def stop(self):
        self.stopping.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            conns = list(self.conns)
            threads = list(self.threads)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in threads:
            t.join(timeout=5)
        if self._thread:
            self._thread.join(timeout=5)


class EchoUpload(Peer):
    """Keep-alive server: reads each request body (Content-Length or chunked), answers 200 with
    JSON {"sha256", "bytes", "method", "target", "headers", ...}. Sends "100 Continue" first when
    the request has Expect: 100-continue. Every request is recorded in .requests.
    close_after=True answers with Connection: close and closes after every response.
    extra_response_headers are added to each response (to test hop-by-hop removal)."""

    name = "echo"

    def __init__(self, *a, extra_response_headers=(), close_after=False, **kw):
        super().__init__(*a, **kw)
        self.extra_response_headers = list(extra_response_headers)
        self.close_after = close_after  # answer every request with Connection: close

    def handle(self, conn):
        for req in self.each_request(conn):
            if req.headers.get("expect", "").lower() == "100-continue":
                conn.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                req.sent_100 = True
            conn.read_body(req)
            body = json.dumps(req.to_json()).encode()
            close = self.close_after or "close" in req.headers.tokens("connection") or req.version == "HTTP/1.0"
            head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            head += f"Content-Length: {len(body)}\r\n"
            head += "".join(f"{k}: {v}\r\n" for k, v in self.extra_response_headers)
            if close:
                head += "Connection: close\r\n"
            conn.send(head.encode() + b"\r\n" + (body if req.method != "HEAD" else b""))
            if close:
                graceful_close(conn.sock)
                return


class CloseMidBody(Peer):
    """Announces a body of `size` bytes (Content-Length, or chunked with mode="chunked"),
    sends half of it, then closes. .sent_bytes counts body bytes written."""

    name = "close-mid-body"

    def __init__(self, size=4 * MiB, mode="length", **kw):
        super().__init__(**kw)
        self.payload = Payload(size, seed=7)
        self.mode = mode
        self.sent_bytes = 0
        self.closed = threading.Event()

    def handle(self, conn):
        req = self.next_request(conn)
        if req is None:
            return
        half = self.payload.size // 2
        if self.mode == "length":
            conn.send(f"HTTP/1.1 200 OK\r\nContent-Length: {self.payload.size}\r\n\r\n".encode())
        else:
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent = 0
        for p in self.payload.pieces(64 * KiB):
            n = min(len(p), half - sent)
            if n <= 0:
                break
            if self.mode == "length":
                conn.send(p[:n])
            else:
                conn.send(b"%x\r\n" % n + bytes(p[:n]) + b"\r\n")
            sent += n
        if self.mode != "length":
            conn.send(b"10000\r\n" + b"x" * 100)  # a chunk that never completes
        self.sent_bytes = sent
        self.closed.set()
        graceful_close(conn.sock)


class CloseDelimited(Peer):
    """HTTP/1.1 200 without Content-Length or chunking (Connection: close): streams `size`
    payload bytes, waits until kfwd has acknowledged every byte (TIOCOUTQ == 0), records
    .closed (event) and closes. The body ends at EOF. With `interval` (s) it sleeps after each
    `piece`: a producer that sets the pace (a live stream)."""

    name = "close-delimited"

    def __init__(self, size=MiB, seed=3, piece=256 * KiB, interval=0.0, **kw):
        super().__init__(**kw)
        self.payload = Payload(size, seed=seed)
        self.piece = piece
        self.interval = interval
        self.closed = threading.Event()
        self.closed_at = None

    def handle(self, conn):
        req = self.next_request(conn)
        if req is None:
            return
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
        for p in self.payload.pieces(self.piece):
            conn.send(p)
            if self.interval:
                time.sleep(self.interval)
        deadline = time.monotonic() + 120
        while outq(conn.sock) and time.monotonic() < deadline and not self.stopping.is_set():
            time.sleep(0.005)
        self.closed_at = time.monotonic()
        self.closed.set()
        graceful_close(conn.sock, linger=30)


class ChunkedTrailers(Peer):
    """Chunked response: thousands of tiny chunks (each sent with its own write) and several
    1 MiB chunks, then trailer fields X-Payload-Sha256 and X-Trailer-Test: present.
    .payload_sha256 / .payload_len / .chunk_count describe the decoded payload."""

    name = "chunked"

    TRAILER_VALUE = "present"

    def __init__(self, seed=11, **kw):
        super().__init__(**kw)
        rng = random.Random(seed)
        chunks = []
        for group in (3000, 1500, 0, 1000, 1500):
            chunks += [rng.randbytes(rng.randint(1, 17)) for _ in range(group)]
            chunks.append(rng.randbytes(MiB))
        self.chunks = chunks
        h = hashlib.sha256()
        for c in chunks:
            h.update(c)
        self.payload_sha256 = h.hexdigest()
        self.payload_len = sum(map(len, chunks))
        self.chunk_count = len(chunks)

    def handle(self, conn):
        for req in self.each_request(conn):
            conn.send(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Transfer-Encoding: chunked\r\nTrailer: X-Payload-Sha256, X-Trailer-Test\r\n\r\n"
            )
            for i, c in enumerate(self.chunks):
                size = b"%X" % len(c) if i % 2 else b"%x" % len(c)
                conn.send(size + b"\r\n" + c + b"\r\n")
            conn.send(
                f"0\r\nX-Payload-Sha256: {self.payload_sha256}\r\nX-Trailer-Test: {self.TRAILER_VALUE}\r\n\r\n".encode()
            )


class NeverResponds(Peer):
    """Reads the request, then holds the connection open without answering."""

    name = "never-responds"

    def handle(self, conn):
        req = self.next_request(conn)
        if req is None:
            return
        self.drain_until_closed(conn)


class Garbage(Peer):
    """Answers every request with bytes that are not HTTP, then closes."""

    name = "garbage"
    RESPONSE = b"SSH-2.0-OpenSSH_9.2\r\nthis is not an HTTP response\r\n\r\n"

    def handle(self, conn):
        req = self.next_request(conn)
        if req is None:
            return
        conn.send(self.RESPONSE)
        graceful_close(conn.sock)


class CloseBeforeHead(Peer):
    """Reads the request and closes without a complete response head
    (mode "immediate": nothing at all; mode "partial": half a status line and header)."""

    name = "close-before-head"

    def __init__(self, mode="immediate", **kw):
        super().__init__(**kw)
        self.mode = mode

    def handle(self, conn):
        req = self.next_request(conn)
        if req is None:
            return
        if self.mode == "partial":
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Len")
        graceful_close(conn.sock)


class CountingSender(Peer):
    """Answers with Content-Length `size` (or /bytes/<n> in the target) and writes the body as
    fast as the socket allows, adding every byte send() accepted to .total (and to
    .per_conn[i]), so a test can see when the upstream is blocked rather than buffered."""

    name = "counting-sender"

    def __init__(self, size=64 * MiB, seed=5, **kw):
        super().__init__(**kw)
        self.payload = Payload(size, seed=seed)
        self.total = 0
        self.per_conn = []
        self.done = 0  # bodies written completely

    def payload_for(self, target):
        if target.startswith("/bytes/"):
            return Payload(int(target.split("/")[2]), seed=self.payload.seed)
        return self.payload

    def handle(self, conn):
        for req in self.each_request(conn):
            conn.read_body(req)
            payload = self.payload_for(req.target)
            with self.lock:
                idx = len(self.per_conn)
                self.per_conn.append(0)
            conn.send(f"HTTP/1.1 200 OK\r\nContent-Length: {payload.size}\r\n\r\n".encode())
            for p in payload.pieces(256 * KiB):
                while p:
                    n = conn.sock.send(p)
                    p = p[n:]
                    with self.lock:
                        self.total += n
                        self.per_conn[idx] += n
            with self.lock:
                self.done += 1


class FullBacklog:
    """A listener whose accept queue is full and is never accepted from: a connect() to it
    hangs in SYN_SENT (Linux drops the SYN), which makes a local connect timeout.
    .verified says whether a probe connect really hung."""

    def __init__(self, host=LOCAL):
        self.lsock = socket.socket()
        self.lsock.bind((host, 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.addr = hostport(host, self.port)
        self.fillers = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((host, self.port))
            self.fillers.append(s)
        time.sleep(0.1)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            probe.connect((host, self.port))
            self.verified = False
        except socket.timeout:
            self.verified = True
        except OSError:
            self.verified = False
        finally:
            probe.close()

    def stop(self):
        for s in self.fillers:
            s.close()
        self.lsock.close()


# --------------------------------------------------------------------------- metrics helpers


def mget(m, key):
    """Value of metric sample `key` (e.g. 'kfwd_bytes_spliced_total{direction="response"}');
    fails with the list of exported samples when kfwd does not export it."""
    if key not in m:
        names = sorted(k for k in m if k.startswith(key.split("{")[0]))
        raise AssertionError(f"metric {key} not exported; samples with that name: {names or 'none'}")
    return m[key]


def mdelta(after, before, key):
    return mget(after, key) - before.get(key, 0)


SPLICED_RESP = 'kfwd_bytes_spliced_total{direction="response"}'
SPLICED_REQ = 'kfwd_bytes_spliced_total{direction="request"}'
COPIED_RESP = 'kfwd_bytes_copied_total{direction="response"}'
COPIED_REQ = 'kfwd_bytes_copied_total{direction="request"}'


def wait_for(pred, timeout, interval=0.05):
    """Poll pred() until truthy or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(interval)


def sockstat_tcp_pages():
    """TCP `mem` from /proc/net/sockstat, in pages (memory of every TCP socket on the host)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("mem") + 1])
    raise RuntimeError("no TCP line in /proc/net/sockstat")


def socket_skmem(pid, *filters):
    """The `ss -tm` skmem fields (r, rb, t, tb, f, w, ...) of each TCP socket of process pid,
    as dicts; filters: an ss filter expression (e.g. "dst", "127.0.0.1:PORT")."""
    out = subprocess.run(["ss", "-tanmpH", *filters], capture_output=True, text=True, check=True).stdout
    lines, found = out.splitlines(), []
    for i, line in enumerate(lines):
        if f"pid={pid}," not in line:
            continue
        mem = line if "skmem:" in line else (lines[i + 1] if i + 1 < len(lines) else "")
        m = re.search(r"skmem:\(([^)]*)\)", mem)
        if m:
            found.append({k: int(v) for k, v in re.findall(r"([a-z]+)(\d+)", m.group(1))})
    return found


def socket_buffers(pid, peer_port):
    """(rb, tb) — the receive and send buffer sizes of process pid's TCP socket connected to
    127.0.0.1:peer_port, or None when it has none."""
    for mem in socket_skmem(pid, "dst", f"127.0.0.1:{peer_port}"):
        return mem["rb"], mem["tb"]
    return None


def kfwd_socket_mem(pid):
    """Sum over kfwd's TCP sockets of rmem_alloc + wmem_queued (ss -tmp skmem r and w), bytes,
    and how many sockets."""
    mems = socket_skmem(pid)
    return sum(m["r"] + m["w"] for m in mems), len(mems)


def pipe_bytes(pid):
    """Bytes buffered (FIONREAD) in the pipes process pid holds, and how many pipes."""
    seen = set()
    total = 0
    buf = bytearray(4)
    fddir = f"/proc/{pid}/fd"
    for fd in os.listdir(fddir):
        try:
            target = os.readlink(f"{fddir}/{fd}")
        except OSError:
            continue
        if not target.startswith("pipe:") or target in seen:
            continue
        seen.add(target)
        try:
            f = os.open(f"{fddir}/{fd}", os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.ioctl(f, termios.FIONREAD, buf)
            total += int.from_bytes(buf, sys.byteorder)
        finally:
            os.close(f)
    return total, len(seen)


# --------------------------------------------------------------------------- nginx

NGINX_BIN = "/usr/sbin/nginx"
NGINX_START_TIMEOUT = 10.0
NGINX_STOP_TIMEOUT = 10.0


class NginxProcess:
    """One nginx process in the foreground (master_process off: the PID is the server) with its
    configuration, pid, logs and temp files under prefix. http: the http block's own directives
    and servers; ports: those its servers listen on, waited for. stop() sends stop_signal
    (SIGQUIT: graceful) and kills by PID when nginx outlives NGINX_STOP_TIMEOUT."""

    stop_signal = signal.SIGQUIT

    def __init__(self, prefix, http, ports, *, worker_connections=1024, main="",
                 default_type="application/octet-stream"):
        self.prefix = Path(prefix)
        for sub in ("logs", "tmp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        p = self.prefix
        self.conf_path = p / "nginx.conf"
        self.conf_path.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
{main}
events {{ worker_connections {worker_connections}; }}
http {{
    client_body_temp_path {p}/tmp/body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    types {{ }}
    default_type {default_type};
{http}
}}
""")
        self.stderr_path = p / "logs" / "stderr.log"
        self.log = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([NGINX_BIN, "-p", str(p), "-c", str(self.conf_path)],
                                     stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        try:
            wait_accepting(self.proc, ports, NGINX_START_TIMEOUT, "nginx", self.stderr_path.read_text)
        except RuntimeError:
            self.stop()
            raise

    def kill(self):
        """SIGKILL by PID: sockets die with the process, as in a crash."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.proc.wait(NGINX_STOP_TIMEOUT)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(NGINX_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
