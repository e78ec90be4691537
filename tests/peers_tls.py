"""Throwaway TLS material made with the `openssl` command at test time.

    certs = TlsCerts(directory)          # a CA (ca.pem/ca.key) in @directory
    certs.leaf("web", ["web.test", "*.web.test"])  -> (cert_path, key_path), signed by the CA
    certs.self_signed("rogue", ["web.test"])       -> a pair no CA vouches for

The pytest fixture `tls_certs` (session scope) has a CA and the leaves most tests need:
"default" (default.test), "exact" (exact.test), "wild" (*.wild.test), "localhost"
(localhost, IP 127.0.0.1), "rogue" (self-signed localhost). Keys are written mode 0600.
"""

import os
import subprocess
from pathlib import Path

import pytest

OPENSSL = "openssl"
DAYS = "2"
CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


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
    certs.self_signed("rogue", ["localhost"])
    return certs
