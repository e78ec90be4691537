"""Throwaway TLS material made with the `openssl` command at test time.

    certs = TlsCerts(directory)          # a CA (ca.pem/ca.key) in @directory
    certs.leaf("web", ["web.test", "*.web.test"])  -> (cert_path, key_path), signed by the CA
    certs.self_signed("rogue", ["web.test"])       -> a pair no CA vouches for

The pytest fixture `tls_certs` (session scope) has a CA and the leaves most tests need:
"default" (default.test), "exact" (exact.test), "wild" (*.wild.test), "localhost"
(localhost, IP 127.0.0.1), "rogue" (self-signed localhost). Keys are written mode 0600.

Peers and clients over TLS: NginxTls (an HTTPS origin), tls_peer(peer, cert, key) (any
tests/peers.py server behind TLS), tls_client / TlsHttpConn (a verifying client), curl,
tls_listen (a listener's config line).
"""

import os
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

import peers

OPENSSL = "openssl"
DAYS = "2"
CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def curl(args, timeout=120):
    return subprocess.run(["curl", "-sS", "--http1.1", *args], capture_output=True, timeout=timeout)


def read_to_eof(sock):
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def tls_listen(certs, port, name="localhost"):
    """The `listen` line of a TLS listener on 127.0.0.1:@port with the certificate @name."""
    c, k = certs.pair(name)
    return f"listen 127.0.0.1:{port} tls cert={c} key={k}"


def tls_client(certs, port, name="localhost", *, rcvbuf=None, timeout=10):
    """A TLS client socket to 127.0.0.1:@port verifying the server as @name against the CA."""
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return ctx.wrap_socket(sock, server_hostname=name)


class TlsHttpConn(peers.HttpConn):
    """peers.HttpConn over TLS to 127.0.0.1:@port, the server verified as @name."""

    def __init__(self, certs, port, name="localhost", **kw):
        super().__init__(port, **kw)
        ctx = ssl.create_default_context(cafile=str(certs.ca))
        self.sock = ctx.wrap_socket(self.sock, server_hostname=name)
        self.stream = peers.Stream(self.sock)


def tls_peer(peer, cert, key):
    """Make a tests/peers.py server (before .start()) speak TLS with @cert/@key: each accepted
    connection is wrapped (handshake first) before the peer's handler sees it. A handler that
    closes or shuts the socket down sends no close_notify: a cut, as a crashing origin's."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    plain_run = peer._run

    def run(sock, addr):
        try:
            tsock = ctx.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            with peer.lock:
                peer.conns.discard(sock)
            sock.close()
            return
        with peer.lock:
            peer.conns.discard(sock)
            peer.conns.add(tsock)
        plain_run(tsock, addr)

    peer._run = run
    return peer


def _run(args, cwd):
    subprocess.run([OPENSSL, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _san(names):
    out = []
    for n in names:
        kind = "IP" if n.replace(".", "").isdigit() or ":" in n else "DNS"
        out.append(f"{kind}:{n}")
    return "subjectAltName=" + ",".join(out) + "\n"


class TlsCerts:
    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca = self.dir / "ca.pem"
        _run(["req", "-x509", *CURVE, "-keyout", "ca.key", "-out", "ca.pem", "-days", DAYS,
              "-subj", "/CN=kfwd-test-ca"], self.dir)
        os.chmod(self.dir / "ca.key", 0o600)

    def leaf(self, name, names):
        ext = self.dir / f"{name}.ext"
        ext.write_text(_san(names))
        _run(["req", *CURVE, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"],
             self.dir)
        _run(["x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
              "-CAcreateserial", "-days", DAYS, "-extfile", ext.name, "-out", f"{name}.pem"], self.dir)
        os.chmod(self.dir / f"{name}.key", 0o600)
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"

    def self_signed(self, name, names):
        ext = self.dir / f"{name}.ext"
        ext.write_text(_san(names))
        _run(["req", "-x509", *CURVE, "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", DAYS,
              "-subj", f"/CN={name}", "-addext", _san(names).strip()], self.dir)
        os.chmod(self.dir / f"{name}.key", 0o600)
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"

    def pair(self, name):
        return self.dir / f"{name}.pem", self.dir / f"{name}.key"


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory):
    certs = TlsCerts(tmp_path_factory.mktemp("tls"))
    certs.leaf("default", ["default.test"])
    certs.leaf("exact", ["exact.test"])
    certs.leaf("wild", ["*.wild.test"])
    certs.leaf("localhost", ["localhost", "127.0.0.1"])
    certs.self_signed("rogue", ["localhost", "127.0.0.1"])
    return certs


class NginxTls(peers.NginxProcess):
    """An HTTPS origin: nginx with `ssl` serving @root under /files/, with @cert/@key.
    keepalive_timeout: how long nginx keeps an idle connection. .requests() reads the access
    log: one (connection serial, request number on it, SNI or "-", URI) per request."""

    stop_signal = signal.SIGTERM  # fast: connections mid-transfer do not hold the stop

    def __init__(self, prefix, root, cert, key, keepalive_timeout="300s"):
        self.port = peers.free_port()
        self.addr = f"127.0.0.1:{self.port}"
        http = f"""
    log_format conns '$connection $connection_requests $ssl_server_name $request_uri';
    access_log {prefix}/logs/access.log conns;
    keepalive_timeout {keepalive_timeout};
    server {{
        listen 127.0.0.1:{self.port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location /files/ {{ alias {root}/; }}
        location = /ok {{ return 200 "ok\\n"; }}
    }}"""
        super().__init__(prefix, http, (self.port,))

    def requests(self):
        """[(connection, request number, server name, uri)] from the access log (nginx writes
        each line when the request ends)."""
        path = self.prefix / "logs" / "access.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            conn, n, name, uri = line.split(" ", 3)
            out.append((int(conn), int(n), name, uri))
        return out
