"""TLS connections coming and going: 1000 handshakes cut at random steps leave kfwd's fds and
memory where they were; reload (kfwdctl reload, SIGHUP) swaps the certificate for new
connections while an old connection finishes its transfer with the old one; a stalled
handshake is closed at client-timeout."""

import hashlib
import random
import shutil
import signal
import socket
import ssl
import struct
import time

import pytest

import peers
from conftest import SAN
from peers import MiB
from peers_tls import TlsHttpConn, tls_certs  # noqa: F401 (fixture)

ABORTS = 1000
WARMUP = 100


def client_hello(ca, name="localhost"):
    """The bytes of a real TLS ClientHello (python's ssl through memory BIOs)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def abort_one(rng, port, hello, ctx):
    """One connection that ends at a random step of the handshake, by FIN or by RST."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        if rng.random() < 0.5:  # RST instead of FIN
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        step = rng.randrange(5)
        if step == 1:  # a few bytes of the record header
            s.sendall(hello[: rng.randrange(1, 5)])
        elif step == 2:  # part of the ClientHello
            s.sendall(hello[: rng.randrange(5, len(hello))])
        elif step == 3:  # the whole ClientHello, then leave while the server answers
            s.sendall(hello)
            if rng.random() < 0.5:
                s.recv(rng.randrange(1, 2048))
        elif step == 4:  # a whole handshake, then leave without close_notify
            s = ctx.wrap_socket(s, server_hostname="localhost")  # owns the fd from now on
    finally:
        s.close()


def settled_rss(k):
    """kfwd's RSS once its fd count has settled (every aborted connection closed)."""
    k.settled_fd_count()
    return k.rss_kb()


@pytest.mark.timeout(120)
def test_1000_random_handshake_aborts_no_fd_or_memory_growth(kfwd, nginx, tls_certs):
    port = peers.free_port()
    c, key = tls_certs.pair("localhost")
    k = kfwd(f"listen 127.0.0.1:{port} tls cert={c} key={key}\nupstream o {nginx.addr}\nroute / o\n")
    hello = client_hello(tls_certs.ca)
    ctx = ssl.create_default_context(cafile=str(tls_certs.ca))
    rng = random.Random(15)
    for _ in range(WARMUP):  # allocator, OpenSSL's tables, the ticket key
        abort_one(rng, port, hello, ctx)
    fds0 = k.settled_fd_count()
    rss0 = settled_rss(k)
    m0 = k.metrics()
    for _ in range(ABORTS):
        abort_one(rng, port, hello, ctx)
    fds1 = k.settled_fd_count()
    rss1 = settled_rss(k)
    m1 = k.metrics()
    print(f"fds {fds0} -> {fds1}, rss {rss0} -> {rss1} kB")
    assert fds1 == fds0, f"kfwd's fd count went {fds0} -> {fds1} after {ABORTS} aborted handshakes"
    assert rss1 - rss0 < 1024 * SAN, f"kfwd's RSS grew {rss1 - rss0} kB over {ABORTS} aborted handshakes"
    assert peers.wait_for(lambda: k.metric("kfwd_connections_active") == 0, 10)
    errors = sum(v - m0.get(name, 0) for name, v in m1.items() if name.startswith("kfwd_tls_handshake_errors_total"))
    assert errors >= ABORTS // 2, f"only {errors} handshake errors counted for {ABORTS} aborts"
    # kfwd still serves TLS
    with TlsHttpConn(tls_certs, port) as t:
        t.request("GET", "/ok")
        assert t.read_response().status == 200


def cert_cn(cert):
    return dict(x[0] for x in cert["subject"])["commonName"]


def peer_cn(port, ca):
    """The CN of the certificate a new TLS connection to @port gets (verified against @ca)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost") as s:
        return cert_cn(s.getpeercert())


@pytest.mark.parametrize("how", ["kfwdctl", "sighup"])
@pytest.mark.timeout(90)
def test_reload_swaps_certificate_old_connection_finishes(kfwd, nginx, tmp_path, tls_certs, how):
    """The listener's cert= and key= files are replaced and kfwd reloaded: a new connection gets
    the new certificate, a transfer that began before finishes byte-exact on the old one."""
    old_cert, old_key = tls_certs.pair("localhost")
    new_cert, new_key = tls_certs.leaf("localhost-b", ["localhost", "127.0.0.1"])
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    shutil.copy(old_cert, cert)
    shutil.copy(old_key, key)
    port = peers.free_port()
    k = kfwd(f"listen 127.0.0.1:{port} tls cert={cert} key={key}\nupstream o {nginx.addr}\nroute / o\n")
    assert peer_cn(port, tls_certs.ca) == "localhost"
    f = nginx.files["30m"]
    with TlsHttpConn(tls_certs, port, rcvbuf=64 * 1024, timeout=30) as old:
        old.request("GET", f.url)
        assert old.stream.read_until(b"\r\n\r\n", 65536).startswith(b"HTTP/1.1 200 ")
        first = old.stream.read_some(MiB)  # the transfer is under way, then stalls a while
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        if how == "kfwdctl":
            k.ctl("reload")
        else:
            k.proc.send_signal(signal.SIGHUP)
        assert peers.wait_for(lambda: peer_cn(port, tls_certs.ca) == "localhost-b", 10), "new cert not served"
        rest = bytearray(f.size - len(first))
        got = old.read_length_body_into(rest)
        assert got == len(rest), f"the old connection got {len(first) + got} of {f.size} bytes"
        assert hashlib.sha256(first + bytes(rest)).hexdigest() == f.sha256
        assert cert_cn(old.sock.getpeercert()) == "localhost"
        # and it stays usable: keep-alive on the old connection after the reload
        old.request("GET", "/ok")
        assert old.read_response().status == 200


@pytest.mark.timeout(30)
def test_stalled_handshake_closed_at_client_timeout(kfwd, nginx, tls_certs):
    """A client that sends half a ClientHello and waits: kfwd closes it after client-timeout,
    with nothing in clear text (no 408 outside TLS), counted as a handshake timeout."""
    port = peers.free_port()
    c, key = tls_certs.pair("localhost")
    k = kfwd(f"listen 127.0.0.1:{port} tls cert={c} key={key}\nupstream o {nginx.addr}\nroute / o\n"
             "client-timeout 1s\n")
    name = 'kfwd_tls_handshake_errors_total{reason="timeout"}'
    before = k.metric(name, 0)
    hello = client_hello(tls_certs.ca)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(hello[: len(hello) // 2])
        t0 = time.monotonic()
        data = s.recv(4096)
        waited = time.monotonic() - t0
    assert data == b"", data
    assert 0.8 <= waited < 5, f"closed after {waited:.1f} s with client-timeout 1s"
    assert k.metric(name, 0) == before + 1
