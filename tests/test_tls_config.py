"""TLS configuration: kfwd -t builds every TLS context, so a bad certificate, key, CA file or
cipher list is an error with FILE:LINE and OpenSSL's reason; exposed key files are warned about;
the kTLS probe runs once and says why TLS uses the copy path on this kernel."""

import shutil
import subprocess

import pytest

import peers
from conftest import KFWD_BIN
from peers_tls import tls_certs  # noqa: F401 (fixture)


def check(path, timeout=20):
    if not KFWD_BIN.exists():
        pytest.fail(f"{KFWD_BIN} does not exist (run `make`)")
    return subprocess.run([str(KFWD_BIN), "-t", "-c", str(path)], capture_output=True, text=True, timeout=timeout)


def full_config(certs):
    d, k = certs.pair("default")
    e, ek = certs.pair("exact")
    w, wk = certs.pair("wild")
    return f"""listen 127.0.0.1:{peers.free_port()}
listen 127.0.0.1:{peers.free_port()} tls cert={d} key={k}
tls-cert {e} {ek}
tls-cert {w} {wk}
tls-min-version 1.2
tls-ciphers ECDHE+AESGCM:ECDHE+CHACHA20
tls-ciphersuites TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256
tls-copy-buffer-size 32k
upstream secure 127.0.0.1:1 127.0.0.1:2 tls sni=exact.test ca={certs.ca}
upstream system 127.0.0.1:3 tls
upstream lax 127.0.0.1:4 tls verify=off
route / secure
route /s system
route /l lax
route /https/ url-embedded tls
route /http/ url-embedded
allow 127.0.0.1
"""


def test_tls_config_check_accepts_every_directive(tmp_path, tls_certs):
    cfg = tmp_path / "tls.conf"
    cfg.write_text(full_config(tls_certs))
    res = check(cfg)
    assert res.returncode == 0, res.stderr
    assert "configuration ok" in res.stderr
    assert "readable by others" not in res.stderr  # the fixture's keys are 0600, owner root


def test_ktls_probe_logged_once_with_the_reason(tmp_path, tls_certs):
    """This kernel has no CONFIG_TLS: TCP_ULP "tls" fails with ENOENT, logged once, copy path."""
    cfg = tmp_path / "tls.conf"
    cfg.write_text(full_config(tls_certs))
    res = check(cfg)
    assert res.returncode == 0, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "kTLS" in ln]
    assert len(lines) == 1, res.stderr
    assert 'kTLS unavailable (setsockopt TCP_ULP "tls": No such file or directory' in lines[0]
    assert lines[0].endswith("): TLS uses the copy path")
    # A configuration without TLS does not probe.
    plain = tmp_path / "plain.conf"
    plain.write_text(f"listen 127.0.0.1:{peers.free_port()}\nroute /http/ url-embedded\n")
    res = check(plain)
    assert res.returncode == 0 and "kTLS" not in res.stderr, res.stderr


@pytest.mark.parametrize(
    "case",
    ["missing-cert", "garbage-cert", "key-mismatch", "missing-key", "bad-ca", "ciphers", "ciphersuites",
     "sni-cert-missing", "no-dns-name", "copy-buffer-below-a-record"],
)
def test_tls_config_check_errors(tmp_path, tls_certs, case):
    d, k = tls_certs.pair("default")
    e, ek = tls_certs.pair("exact")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    ip_only = tls_certs.leaf("iponly", ["127.0.0.1"])
    head = f"listen 127.0.0.1:{peers.free_port()}\nroute /http/ url-embedded\n"
    line3, want = {
        "missing-cert": (f"listen 127.0.0.1:1 tls cert={tmp_path}/none.pem key={k}",
                         f"certificate {tmp_path}/none.pem: No such file or directory"),
        "garbage-cert": (f"listen 127.0.0.1:1 tls cert={garbage} key={k}",
                         f"certificate {garbage}: no start line"),
        "key-mismatch": (f"listen 127.0.0.1:1 tls cert={d} key={ek}", f"key {ek}: key values mismatch"),
        "missing-key": (f"listen 127.0.0.1:1 tls cert={d} key={tmp_path}/none.key",
                        f"key {tmp_path}/none.key: No such file or directory"),
        "bad-ca": (f"upstream o 127.0.0.1:1 tls ca={garbage}", f"ca= {garbage}: "),
        "ciphers": ("tls-ciphers NOPE\nlisten 127.0.0.1:1 tls cert=" + f"{d} key={k}",
                    "tls-ciphers NOPE: no cipher match"),
        "ciphersuites": ("tls-ciphersuites TLS_NOPE\nlisten 127.0.0.1:1 tls cert=" + f"{d} key={k}",
                         "tls-ciphersuites TLS_NOPE: no cipher match"),
        "sni-cert-missing": (f"tls-cert {tmp_path}/none.pem {ek}",
                             f"certificate {tmp_path}/none.pem: No such file or directory"),
        "no-dns-name": (f"tls-cert {ip_only[0]} {ip_only[1]}", f"certificate {ip_only[0]} has no DNS name"),
        "copy-buffer-below-a-record": ("tls-copy-buffer-size 8k", "tls-copy-buffer-size"),
    }[case]
    cfg = tmp_path / "bad.conf"
    cfg.write_text(head + line3 + "\n")
    res = check(cfg)
    assert res.returncode == 1, f"-t accepted {case}: {res.stderr}"
    assert f"{cfg}:3: {want}" in res.stderr, res.stderr


def test_tls_key_readable_by_others_is_warned(tmp_path, tls_certs):
    d, k = tls_certs.pair("default")
    exposed = tmp_path / "exposed.key"
    shutil.copy(k, exposed)
    exposed.chmod(0o644)
    cfg = tmp_path / "tls.conf"
    cfg.write_text(f"listen 127.0.0.1:1 tls cert={d} key={exposed}\nroute /http/ url-embedded\n")
    res = check(cfg)
    assert res.returncode == 0, res.stderr
    assert f"{cfg}:1: key {exposed} is readable by others than root" in res.stderr
    exposed.chmod(0o600)
    res = check(cfg)
    assert res.returncode == 0 and "readable by others" not in res.stderr, res.stderr
