"""Peers and clients for the tunnel suite (tests/test_tunnel_*.py): raw TCP servers reached
through CONNECT, a CONNECT client, and a WebSocket server/client (python3-websockets) that
runs as its own process so that the server and the client do not share one GIL.

Raw peers follow tests/peers.py: they listen on 127.0.0.1, handle each connection in a daemon
thread and are stopped with .stop() (the `peer` fixture does it).

    python3 tests/peers_tunnel.py ws-server --size N --seed S
        prints "PORT <port>" once listening, then one "RESULT <json>" line per finished
        WebSocket connection: {"received": bytes, "sha256": hex, "sent": bytes, "error": str|null}.
        Every connection: send N payload bytes (binary messages) while reading everything the
        client sends until it closes.  Exits when stdin closes.
"""

import asyncio
import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from peers import KiB, MiB, Closed, HttpConn, Payload, Peer, Stream, outq  # noqa: E402

HERE = Path(__file__).resolve().parent
PYTHON = "/usr/bin/python3"


# --------------------------------------------------------------------------- CONNECT client


class ConnectRefused(Exception):
    def __init__(self, status, head):
        super().__init__(f"CONNECT answered {status}: {head!r}")
        self.status = status
        self.head = head


def open_tunnel(kport, dport, *, host=peers.LOCAL, rcvbuf=None, sndbuf=None, timeout=30.0):
    """CONNECT 127.0.0.1:dport through kfwd on kport. Returns (socket, bytes read past the
    200 head). Raises ConnectRefused for any other answer."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if sndbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    s.settimeout(timeout)
    try:
        s.connect((host, kport))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        target = f"{host}:{dport}"
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                raise ConnectRefused(None, bytes(buf))
            buf += d
            if len(buf) > 65536:
                raise ConnectRefused(None, bytes(buf[:200]))
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        if status != 200:
            raise ConnectRefused(status, head)
        return s, rest
    except BaseException:
        s.close()
        raise


class TunnelHttpConn(HttpConn):
    """peers.HttpConn speaking HTTP/1.1 inside a CONNECT tunnel (keep-alive, framing checks)."""

    def __init__(self, kport, dport, *, rcvbuf=None, timeout=30.0):  # noqa: super().__init__ not called on purpose
        self.sock, rest = open_tunnel(kport, dport, rcvbuf=rcvbuf, timeout=timeout)
        self.stream = Stream(self.sock)
        self.stream.buf += rest
        self.host = peers.LOCAL
        self.port = dport
        peers._clients.add(self)


def read_to_eof(sock, *, hasher=None, bufsize=MiB, pace=None):
    """Read sock until EOF; returns (bytes read, sha256 hex, end) where end is "eof", "reset"
    or "timeout" (the socket's timeout expired first). pace(i) runs before each read."""
    h = hasher or hashlib.sha256()
    buf = bytearray(bufsize)
    mv = memoryview(buf)
    total = 0
    i = 0
    while True:
        if pace:
            pace(i)
        i += 1
        try:
            n = sock.recv_into(mv)
        except ConnectionResetError:
            return total, h.hexdigest(), "reset"
        except socket.timeout:
            return total, h.hexdigest(), "timeout"
        if n == 0:
            return total, h.hexdigest(), "eof"
        h.update(mv[:n])
        total += n


# --------------------------------------------------------------------------- raw TCP peers


class ShaAfterEof(Peer):
    """Reads until the client's EOF (half-close), then answers "<bytes> <sha256>\\n" and closes.
    .results: [(bytes, sha256)] in order of completion."""

    name = "sha-after-eof"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.results = []
        self.done = threading.Event()

    def handle(self, conn):
        s = conn.sock
        s.settimeout(120)
        total, sha, end = read_to_eof(s)
        if end != "eof":
            raise Closed(f"client connection: {end}")
        with self.lock:
            self.results.append((total, sha))
        s.sendall(f"{total} {sha}\n".encode())
        self.done.set()
        peers.graceful_close(s)


class SendThenRead(Peer):
    """Sends `size` payload bytes and half-closes (shutdown SHUT_WR) right away, while a second
    thread reads everything the client sends until the client's EOF. With wait_acked, .sent_all
    is set only once every byte and the FIN were acknowledged (.acked) or wait_acked passed.
    .received: [(bytes, sha256, "eof"|"reset"|"timeout"|"unfinished")]; .sent_all: set when the FIN has been sent."""

    name = "send-then-read"

    def __init__(self, size, seed=21, wait_acked=0.0, **kw):
        super().__init__(**kw)
        self.payload = Payload(size, seed=seed)
        self.wait_acked = wait_acked  # after the FIN, wait up to this long for TIOCOUTQ == 0
        self.acked = None
        self.fin_at = None
        self.received = []
        self.sent_all = threading.Event()
        self.done = threading.Event()

    def handle(self, conn):
        s = conn.sock
        s.settimeout(120)
        got = {}

        def reader():
            got["r"] = read_to_eof(s)

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        for p in self.payload.pieces(256 * KiB):
            s.sendall(p)
        s.shutdown(socket.SHUT_WR)
        self.fin_at = time.monotonic()
        deadline = time.monotonic() + self.wait_acked
        while outq(s) and time.monotonic() < deadline and not self.stopping.is_set():
            time.sleep(0.005)
        self.acked = outq(s) == 0
        self.sent_all.set()
        t.join(120)
        total, sha, end = got.get("r", (0, None, "unfinished"))
        with self.lock:
            self.received.append((total, sha, end))
        self.done.set()
        s.close()


class SendAndClose(Peer):
    """Sends `size` payload bytes (after one byte from the client when trigger=True), waits
    until the other side acknowledged all of them (TIOCOUTQ == 0, at most `wait_acked` s),
    then closes. .closed is set after close();
    .acked tells whether every byte was acknowledged before the close."""

    name = "send-and-close"

    def __init__(self, size, seed=23, wait_acked=20.0, trigger=False, **kw):
        super().__init__(**kw)
        self.trigger = trigger  # wait for one byte from the client before sending
        self.payload = Payload(size, seed=seed)
        self.wait_acked = wait_acked
        self.closed = threading.Event()
        self.acked = None
        self.unacked = None
        self.sent = 0

    def handle(self, conn):
        s = conn.sock
        s.settimeout(120)
        if self.trigger and not s.recv(1):
            return
        for p in self.payload.pieces(256 * KiB):
            s.sendall(p)
            self.sent += len(p)
        deadline = time.monotonic() + self.wait_acked
        while outq(s) and time.monotonic() < deadline and not self.stopping.is_set():
            time.sleep(0.005)
        self.unacked = outq(s)
        self.acked = self.unacked == 0
        s.shutdown(socket.SHUT_WR)
        s.close()
        self.closed.set()


# --------------------------------------------------------------------------- WebSocket


class WsServerProcess:
    """tests/peers_tunnel.py ws-server in its own process; .port, .results() / .stop()."""

    def __init__(self, size, seed=31):
        self.proc = subprocess.Popen(
            [PYTHON, str(HERE / "peers_tunnel.py"), "ws-server", "--size", str(size), "--seed", str(seed)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.pid = self.proc.pid
        self._buf = b""
        line = self.readline(15)
        if not line or not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"ws-server did not start: {line!r} {self.proc.stderr.read()!r}")
        self.port = int(line.split()[1])

    def readline(self, timeout):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return None
            d = os.read(fd, 65536)
            if not d:
                return None
            self._buf += d
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode()

    def result(self, timeout):
        line = self.readline(timeout)
        if line is None or not line.startswith("RESULT "):
            return None
        return json.loads(line[len("RESULT "):])

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # by PID (Popen)
                self.proc.wait(5)
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass


WS_OPTS = dict(compression=None, max_size=None, max_queue=4, write_limit=4 * MiB, ping_interval=None)


async def ws_exchange(ws, payload, piece=MiB):
    """Send payload (binary messages) while a receiver task reads until the peer closes.
    Returns (bytes sent, receiver task, its sha256 object, [bytes received so far])."""
    h = hashlib.sha256()
    got = [0]

    async def sender():
        sent = 0
        for p in payload.pieces(piece):
            await ws.send(bytes(p))
            sent += len(p)
        return sent

    async def receiver():
        import websockets

        try:
            async for msg in ws:
                if isinstance(msg, str):
                    msg = msg.encode()
                h.update(msg)
                got[0] += len(msg)
        except websockets.ConnectionClosed:
            pass

    st = asyncio.ensure_future(sender())
    rt = asyncio.ensure_future(receiver())
    sent = await st
    return sent, rt, h, got


def ws_server_main(size, seed):
    import websockets

    payload = Payload(size, seed=seed)

    async def handler(ws, path=None):
        err = None
        sent = 0
        h = hashlib.sha256()
        received = 0
        try:
            sent, rt, h, got = await ws_exchange(ws, payload)
            await rt  # until the client closes
            received = got[0]
        except Exception as e:  # noqa: BLE001 - reported to the test
            err = repr(e)
        print("RESULT " + json.dumps({"received": received, "sha256": h.hexdigest(), "sent": sent, "error": err}), flush=True)

    async def main():
        server = await websockets.serve(handler, "127.0.0.1", 0, **WS_OPTS)
        port = server.sockets[0].getsockname()[1]
        print(f"PORT {port}", flush=True)
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_reader(sys.stdin.fileno(), lambda: stop.done() or (os.read(sys.stdin.fileno(), 1) or stop.set_result(None)))
        await stop
        server.close()

    asyncio.run(main())


def ws_client(uri, payload, expect, timeout, ssl_context=None):
    """Connect to uri (wss:// with @ssl_context), send payload while reading `expect` bytes,
    then close cleanly. Returns dict(sent, received, sha256, close_code)."""
    import websockets

    tls = {"ssl": ssl_context} if ssl_context else {}

    async def run():
        async with websockets.connect(uri, open_timeout=10, close_timeout=10, **tls, **WS_OPTS) as ws:
            sent, rt, h, got = await ws_exchange(ws, payload)
            deadline = time.monotonic() + timeout
            while got[0] < expect and not rt.done() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await ws.close()
            await rt
            return {"sent": sent, "received": got[0], "sha256": h.hexdigest(), "close_code": ws.close_code}

    return asyncio.run(asyncio.wait_for(run(), timeout))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["ws-server"])
    ap.add_argument("--size", type=int, required=True)
    ap.add_argument("--seed", type=int, default=31)
    a = ap.parse_args()
    ws_server_main(a.size, a.seed)
