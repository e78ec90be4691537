"""Request bodies: 100 MiB uploads byte-exact with and without Expect: 100-continue, chunked
uploads, and proof that request bodies are spliced."""

import hashlib
import json
import random

import pytest

import peers
from peers import COPIED_REQ, SPLICED_REQ, MiB, mdelta, mget


def echo_config(echo):
    return f"upstream echo {echo.addr}\nroute / echo"


def curl_upload(port, path, extra):
    res = peers.run_curl(
        ["-o", "-", "-w", "\n%{http_code} %{time_total}", "--data-binary", f"@{path}",
         "-H", "Content-Type: application/octet-stream", *extra, f"http://127.0.0.1:{port}/upload"],
        timeout=120,
    )
    assert res.returncode == 0, f"curl exit {res.returncode}: {res.stderr.decode()}"
    body, _, tail = res.stdout.rpartition(b"\n")
    code, elapsed = tail.decode().split()
    return int(code), json.loads(body), float(elapsed)


def test_upload_100m_without_expect(kfwd, peer, upload_file):
    echo = peer(peers.EchoUpload())
    k = kfwd(echo_config(echo))
    m0 = k.metrics()
    code, got, _ = curl_upload(k.port, upload_file.path, ["-H", "Expect:"])
    assert code == 200
    assert got["bytes"] == upload_file.size
    assert got["sha256"] == upload_file.sha256
    assert echo.requests[-1].headers.get("Expect") is None
    m1 = k.metrics()
    spliced = mdelta(m1, m0, SPLICED_REQ)
    assert spliced >= 0.95 * upload_file.size, (
        f"only {spliced} of {upload_file.size} request bytes spliced (copied {mdelta(m1, m0, COPIED_REQ)})"
    )


def test_upload_100m_expect_100_continue_python(kfwd, peer, upload_file):
    """Send the head, wait for the relayed 100 Continue (no body sent before it), then 100 MiB."""
    echo = peer(peers.EchoUpload())
    k = kfwd(echo_config(echo))
    with peers.HttpConn(k.port, timeout=60) as c:
        c.request("POST", "/upload", [("Content-Length", str(upload_file.size)), ("Expect", "100-continue")])
        c.settimeout(10)
        _, status, _, _ = c.read_head()
        assert status == 100, f"expected 100 Continue before sending the body, got {status}"
        c.settimeout(60)
        with open(upload_file.path, "rb") as f:
            c.sock.sendfile(f)
        r = c.read_response(keep_body=True)
    assert r.status == 200
    got = json.loads(r.body)
    assert got["bytes"] == upload_file.size
    assert got["sha256"] == upload_file.sha256


def test_upload_100m_expect_100_continue_curl(kfwd, peer, upload_file):
    """curl waits up to --expect100-timeout for the 100: a quick finish proves it was relayed."""
    echo = peer(peers.EchoUpload())
    k = kfwd(echo_config(echo))
    code, got, elapsed = curl_upload(
        k.port, upload_file.path, ["-H", "Expect: 100-continue", "--expect100-timeout", "30"]
    )
    assert code == 200
    assert got["bytes"] == upload_file.size and got["sha256"] == upload_file.sha256
    assert elapsed < 20, f"upload took {elapsed} s: 100 Continue was not relayed"


def test_upload_chunked(kfwd, peer, upload_file):
    echo = peer(peers.EchoUpload())
    k = kfwd(echo_config(echo))
    code, got, _ = curl_upload(k.port, upload_file.path, ["-H", "Expect:", "-H", "Transfer-Encoding: chunked"])
    assert code == 200
    assert got["bytes"] == upload_file.size
    assert got["sha256"] == upload_file.sha256


def test_upload_chunked_tiny_chunks_with_trailer(kfwd, peer):
    """Hand-made chunked request: chunks of 1..17 bytes and a trailer, sent in separate writes."""
    echo = peer(peers.EchoUpload())
    k = kfwd(echo_config(echo))
    rng = random.Random(9)
    parts = [rng.randbytes(rng.randint(1, 17)) for _ in range(2000)] + [rng.randbytes(MiB)]
    sha = hashlib.sha256(b"".join(parts)).hexdigest()
    with peers.HttpConn(k.port) as c:
        c.send(b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        for p in parts:
            c.send(b"%x\r\n" % len(p) + p + b"\r\n")
        c.send(b"0\r\nX-Req-Trailer: 1\r\n\r\n")
        r = c.read_response(keep_body=True)
        assert r.status == 200
        got = json.loads(r.body)
        assert got["bytes"] == sum(map(len, parts)) and got["sha256"] == sha
        # the connection is still in sync afterwards
        c.request("GET", "/after")
        r = c.read_response(keep_body=True)
        assert r.status == 200 and json.loads(r.body)["target"] == "/after"


@pytest.mark.parametrize("data_path", ["splice", "copy"])
def test_three_uploads_one_keepalive_connection(kfwd, peer, upload_file, data_path):
    """Three 8 MiB uploads on one keep-alive connection, on both data paths: all byte-exact."""
    echo = peer(peers.EchoUpload())
    k = kfwd(echo_config(echo) + f"\ndata-path {data_path}")
    body = upload_file.path.read_bytes()[: 8 * MiB]
    sha = hashlib.sha256(body).hexdigest()
    m0 = k.metrics()
    with peers.HttpConn(k.port) as c:
        for i in range(3):
            c.request("PUT", f"/u{i}", body=body)
            r = c.read_response(keep_body=True)
            got = json.loads(r.body)
            assert r.status == 200 and got["sha256"] == sha and got["target"] == f"/u{i}"
    assert len(echo.requests) == 3
    m1 = k.metrics()
    if data_path == "copy":
        assert mget(m1, SPLICED_REQ) == 0
        assert mdelta(m1, m0, COPIED_REQ) >= 3 * len(body)
    else:
        assert mdelta(m1, m0, SPLICED_REQ) >= 0.9 * 3 * len(body)
