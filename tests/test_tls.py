"""TLS end to end: a TLS listener (curl --cacert, openssl s_client), TLS origins (nginx ssl),
the clear-text 400, verification, the copy path over TLS and the kTLS fallback."""

import hashlib
import json
import socket
import ssl
import subprocess

import pytest

import peers
from peers_tls import NginxTls, curl, read_to_eof, tls_certs, tls_client, tls_listen  # noqa: F401 (fixture)


def test_tls_download_byte_exact_keepalive_copy_path(kfwd, nginx, tls_certs):
    port = peers.free_port()
    k = kfwd(f"{tls_listen(tls_certs, port)}\nupstream o {nginx.addr}\nroute / o\n")
    f = nginx.files["30m"]
    before = k.metrics()
    r = curl(["--cacert", str(tls_certs.ca), "-o", "/dev/stdout", f"https://127.0.0.1:{port}{f.url}",
              "-o", "/dev/null", f"https://127.0.0.1:{port}/ok"])
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(r.stdout).hexdigest() == f.sha256
    m = k.metrics()
    # keep-alive: both requests on one TLS connection
    assert m["kfwd_connections_accepted_total"] == before["kfwd_connections_accepted_total"] + 1
    # no kTLS here: the body went through the copy path, nothing spliced towards the client
    resp = 'direction="response"'
    assert m[f"kfwd_bytes_copied_total{{{resp}}}"] - before[f"kfwd_bytes_copied_total{{{resp}}}"] >= f.size
    assert m[f"kfwd_bytes_spliced_total{{{resp}}}"] == before[f"kfwd_bytes_spliced_total{{{resp}}}"]
    assert "kTLS unavailable (" in k.stderr and "TLS uses the copy path" in k.stderr


def test_plain_http_to_tls_port_gets_400(kfwd, nginx, tls_certs):
    port = peers.free_port()
    k = kfwd(f"{tls_listen(tls_certs, port)}\nupstream o {nginx.addr}\nroute / o\n")
    key = 'kfwd_tls_handshake_errors_total{reason="plain_http"}'
    before = k.metrics()[key]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_to_eof(s)
    assert data.startswith(b"HTTP/1.1 400 "), data
    assert b"Connection: close" in data
    assert k.metrics()[key] == before + 1  # counted by reason, logged at debug level only
    assert "clear-text" not in k.stderr


def test_sni_picks_the_certificate(kfwd, nginx, tls_certs):
    port = peers.free_port()
    e, ek = tls_certs.pair("exact")
    w, wk = tls_certs.pair("wild")
    kfwd(f"{tls_listen(tls_certs, port, 'default')}\ntls-cert {e} {ek}\ntls-cert {w} {wk}\n"
         f"upstream o {nginx.addr}\nroute / o\n")
    for name, cn in (("exact.test", "exact"), ("x.wild.test", "wild"), ("other.test", "default")):
        r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", name,
                            "-CAfile", str(tls_certs.ca)], input=b"", capture_output=True, timeout=20)
        assert f"subject=CN = {cn}".encode() in r.stdout, (name, r.stdout[-500:])


def test_x_forwarded_proto_https(kfwd, peer, tls_certs):
    """A request that came over TLS says so upstream: X-Forwarded-Proto https (a client's own
    value replaced) and Forwarded proto=https."""
    e = peer(peers.EchoUpload())
    port = peers.free_port()
    kfwd(f"{tls_listen(tls_certs, port)}\nupstream e {e.addr}\nroute / e forwarded\n")
    ctx = ssl.create_default_context(cafile=str(tls_certs.ca))
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="localhost") as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: localhost\r\nX-Forwarded-Proto: ftp\r\nConnection: close\r\n\r\n")
        data = read_to_eof(s)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    seen = peers.Headers(json.loads(body)["headers"])
    assert seen.get_all("X-Forwarded-Proto") == ["https"], seen
    assert seen.get_all("Forwarded")[0].endswith(";proto=https"), seen


@pytest.mark.parametrize("mode", ["rogue-verify", "rogue-noverify", "good-ca"])
def test_tls_origin_verification(kfwd, tmp_path, files_dir, tls_certs, mode):
    """An HTTPS origin (nginx ssl): a certificate the CA did not sign is a 502 with verification
    on, served with verify=off; the CA's certificate for the name verifies. Bodies byte-exact."""
    cert, key = tls_certs.pair("rogue" if mode.startswith("rogue") else "localhost")
    origin = NginxTls(tmp_path / "o", files_dir["8m"].path.parent, cert, key)
    try:
        opts = {"rogue-verify": f"tls ca={tls_certs.ca}", "rogue-noverify": "tls verify=off",
                "good-ca": f"tls ca={tls_certs.ca}"}[mode]
        k = kfwd(f"upstream o {origin.addr} {opts}\nroute / o\n")
        f = files_dir["8m"]
        r = curl(["-o", "/dev/stdout", "-w", "%{http_code}", f"http://127.0.0.1:{k.port}/files/8m"])
        if mode == "rogue-verify":
            assert r.stdout.endswith(b"502"), r.stdout[-200:]
        else:
            assert r.stdout[-3:] == b"200", r.stdout[-200:]
            assert hashlib.sha256(r.stdout[:-3]).hexdigest() == f.sha256
    finally:
        origin.stop()


def test_https_url_embedded_and_location(kfwd, tmp_path, files_dir, tls_certs):
    """/https/host:port/path reaches an HTTPS origin, verified against the URL's host."""
    cert, key = tls_certs.pair("localhost")
    origin = NginxTls(tmp_path / "o", files_dir["1k"].path.parent, cert, key)
    try:
        k = kfwd(f"route /https/ url-embedded tls ca={tls_certs.ca}\nroute /http/ url-embedded\nallow *\n")
        f = files_dir["1k"]
        r = curl(["-o", "/dev/stdout", f"http://127.0.0.1:{k.port}/https/localhost:{origin.port}/files/1k"])
        assert r.returncode == 0 and hashlib.sha256(r.stdout).hexdigest() == f.sha256, r.stderr
    finally:
        origin.stop()


def test_conn_list_shows_tls_version_cipher_and_names(kfwd, tmp_path, files_dir, tls_certs):
    """`kfwdctl -j conn list` details: the client side's TLS version, cipher and the server name
    it asked for, and the same for the TLS origin connection (the name kfwd sent)."""
    cert, key = tls_certs.pair("localhost")
    origin = NginxTls(tmp_path / "o", files_dir["30m"].path.parent, cert, key)
    try:
        port = peers.free_port()
        e, ek = tls_certs.pair("exact")
        k = kfwd(f"{tls_listen(tls_certs, port)}\ntls-cert {e} {ek}\n"
                 f"upstream o {origin.addr} tls sni=localhost ca={tls_certs.ca}\nroute / o\n")
        with tls_client(tls_certs, port, "exact.test", rcvbuf=16 * peers.KiB) as s:
            s.sendall(b"GET /files/30m HTTP/1.1\r\nHost: exact.test\r\n\r\n")
            assert s.recv(1024).startswith(b"HTTP/1.1 200 ")  # then stalled: the exchange stays open

            def details():
                conns = [c for c in k.ctl_json("conn", "list") if c["client"].endswith(f":{s.getsockname()[1]}")]
                return conns and "upstream_tls_version" in conns[0]["details"] and conns[0]["details"]

            d = peers.wait_for(details, 10)
            version = s.version()
            assert d, k.ctl_json("conn", "list")
        assert d["client_tls_version"] == version == "TLSv1.3", d
        assert d["client_tls_cipher"] == "TLS_AES_256_GCM_SHA384", d
        assert d["client_tls_sni"] == "exact.test", d
        assert d["client_tls_ktls"] == "no", d
        assert d["upstream_tls_version"] == "TLSv1.3", d
        assert d["upstream_tls_cipher"].startswith("TLS_"), d
        assert d["upstream_tls_sni"] == "localhost", d
    finally:
        origin.stop()
