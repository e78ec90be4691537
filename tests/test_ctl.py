"""kfwdctl and the netlink control socket (include/kfwd/ctl.h, user/ctl.c, user/kfwdctl.c).

Every command in human and JSON output; runtime changes (route add/del, set, reload,
upstream drain/enable) on a running kfwd; a stalled client seen paused with a rising pause
count; the permission model for a non-root uid; a port id squatter; 10,000 malformed
messages; dumps split over many messages.
"""

import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ctlproto as P  # noqa: E402
import peers  # noqa: E402
from conftest import KFWDCTL_BIN  # noqa: E402
from peers import KiB, MiB  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KFWD = Path(os.environ.get("KFWD_BIN") or ROOT / "build" / "kfwd")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]

EX_OK, EX_FAIL, EX_USAGE, EX_UNREACH, EX_IMPOSTOR, EX_PERM, EX_PROTO = 0, 1, 2, 3, 4, 5, 6

READ_ONLY = [["status"], ["stats"], ["conn", "list"], ["route", "list"], ["upstream", "list"]]
MUTATING = [
    ["conn", "kill", "1"],
    ["route", "add", "/evil/", "up"],
    ["route", "del", "/"],
    ["upstream", "drain", "up"],
    ["upstream", "enable", "up"],
    ["set", "log-level", "debug"],
    ["reload"],
]


# --------------------------------------------------------------------------- helpers


class Ctl:
    """kfwdctl against one kfwd, through its published file."""

    def __init__(self, k, file):
        self.k = k
        self.file = Path(file)

    @property
    def portid(self):
        text = self.file.read_text()
        return int(text.split()[0].split("=")[1])

    def run(self, *args, opts=(), nobody=False, timeout=30):
        file = [] if "-p" in opts or "-f" in opts else ["-f", str(self.file)]
        argv = (NOBODY if nobody else []) + [str(KFWDCTL_BIN), *file, *opts, *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def ok(self, *args, **kw):
        p = self.run(*args, **kw)
        assert p.returncode == 0, f"kfwdctl {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p.stdout

    def json(self, *args, **kw):
        return json.loads(self.ok(*args, opts=["-j", *kw.pop("opts", ())], **kw))

    def fails(self, code, *args, **kw):
        p = self.run(*args, **kw)
        assert p.returncode == code, f"kfwdctl {' '.join(args)}: exit {p.returncode}, wanted {code}\n{p.stdout}\n{p.stderr}"
        return p.stderr


@pytest.fixture
def ckfwd(kfwd, ctl_dir):
    """ckfwd(config_text, **kfwd_kw) -> (Kfwd, Ctl): kfwd with ctl-socket-file in ctl_dir."""
    n = [0]

    def start(config_text, **kw):
        n[0] += 1
        path = ctl_dir / f"ctl{n[0]}"
        k = kfwd(textwrap.dedent(config_text).strip("\n") + f"\nctl-socket-file {path}\n", **kw)
        assert peers.wait_for(path.exists, 5), f"{path} not published:\n{k.stderr}"
        return k, Ctl(k, path)

    return start


def get(port, target, **kw):
    return peers.get(port, target, **kw)


def upstream_config(*peers_, extra=""):
    servers = " ".join(p.addr for p in peers_)
    return f"upstream up {servers}\nroute /a/ up\n{extra}"


def wait_exit(proc, timeout):
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise


# --------------------------------------------------------------------------- help, usage


def test_help_version_usage():
    p = subprocess.run([str(KFWDCTL_BIN), "help"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0
    for word in ("status", "stats", "conn list", "conn kill", "route add", "upstream drain", "set KEY VALUE",
                 "reload", "monitor", "exit status", "pipe-high-water"):
        assert word in p.stdout, word
    assert subprocess.run([str(KFWDCTL_BIN), "-V"], capture_output=True, timeout=10).returncode == 0
    for bad in ([], ["frobnicate"], ["conn", "kill"], ["conn", "kill", "x"], ["set", "pipe-size"],
                ["set", "no-such-key", "1"], ["route", "add", "/x/"], ["monitor", "count", "0"], ["status", "extra"]):
        p = subprocess.run([str(KFWDCTL_BIN), *bad], capture_output=True, text=True, timeout=10)
        assert p.returncode == EX_USAGE, (bad, p.returncode, p.stderr)


def test_not_running(ctl_dir):
    p = subprocess.run([str(KFWDCTL_BIN), "-f", str(ctl_dir / "none"), "status"], capture_output=True, text=True, timeout=10)
    assert p.returncode == EX_UNREACH and "not running" in p.stderr, p.stderr


# --------------------------------------------------------------------------- status, stats


def test_status_human_and_json(ckfwd, peer):
    up = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(up))
    out = c.ok("status")
    assert f"pid {k.pid}" in out
    assert f"127.0.0.1:{k.port}" in out and f"127.0.0.1:{k.metrics_port}" in out
    assert str(k.config_path) in out
    assert "splice" in out and "sockmap" in out and "copy" in out, out
    knobs = next(ln for ln in out.splitlines() if ln.startswith("knobs"))
    assert "pipe-size 1m" in knobs and "data-path splice" in knobs, out

    s = c.json("status")
    assert s["pid"] == k.pid and s["ctl_port_id"] == c.portid
    assert s["listen"] == [f"127.0.0.1:{k.port}"]
    assert s["metrics"] == f"127.0.0.1:{k.metrics_port}"
    assert s["config_file"] == str(k.config_path)
    assert s["config_generation"] == 0 and s["runtime_changes"] == 0
    paths = {d["name"]: d for d in s["data_paths"]}
    assert set(paths) == {"splice", "sockmap", "copy"}
    assert paths["splice"]["available"] and paths["splice"]["default"]
    assert paths["copy"]["available"]
    if not paths["sockmap"]["available"]:
        assert paths["sockmap"]["reason"], "an unavailable data path says why"
    assert s["pipe_size"] == MiB and s["pipe_high_water"] == MiB and s["pipe_low_water"] == MiB // 4
    assert s["data_path"] == "splice" and s["log_level"] == "info"
    assert s["uptime_ms"] >= 0 and s["draining"] is False
    # the published file: root-owned, 0644, "portid=N pid=P"
    st = c.file.stat()
    assert st.st_uid == 0 and (st.st_mode & 0o777) == 0o644
    assert c.file.read_text() == f"portid={k.pid} pid={k.pid}\n"


def test_stats_human_and_json_match_metrics(ckfwd, peer):
    up = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(up))
    for _ in range(3):
        assert get(k.port, "/a/x").status == 200
    assert get(k.port, "/nowhere").status == 404
    metrics = k.metrics()
    s = c.json("stats")
    assert s["requests_total"] == 4
    assert s["responses_total"]["2xx"] == 3 and s["responses_total"]["4xx"] == 1
    assert s["client_errors_total"] == 1
    assert set(s["bytes_spliced_total"]) == {"request", "response"}
    assert set(s["bytes_sockmap_total"]) == {"request", "response"}
    assert s["bytes_copied_total"]["response"] > 0
    # The same complete set of names and values as /metrics (kfwd_ prefix dropped, labels as
    # keys): both are generated from one table.
    flat = {}
    for name, value in s.items():
        if isinstance(value, dict):
            label = {"responses_total": "class", "tls_handshake_errors_total": "reason",
                     "rtsp_gateway_handshakes_total": "outcome"}.get(name, "direction")
            for member, v in value.items():
                flat[f'kfwd_{name}{{{label}="{member}"}}'] = v
        else:
            flat[f"kfwd_{name}"] = value
    volatile = {"kfwd_ctl_requests_total"}  # the stats request itself came after /metrics
    assert set(flat) == set(metrics)
    assert {k: v for k, v in flat.items() if k not in volatile} == {
        k: v for k, v in metrics.items() if k not in volatile}
    assert len(flat) >= 40
    out = c.ok("stats")
    for word in ("connections", "requests", "responses", "splice", "sockmap", "copy", "pauses", "paused now", "errors"):
        assert word in out, word
    assert "2xx 3" in out and "4xx 1" in out


# --------------------------------------------------------------------------- connections


def test_conn_list_and_kill(ckfwd, peer):
    up = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(up))
    socks = [socket.create_connection(("127.0.0.1", k.port)) for _ in range(3)]
    try:
        ports = {s.getsockname()[1] for s in socks}
        conns = peers.wait_for(lambda: [x for x in c.json("conn", "list") if int(x["client"].rsplit(":", 1)[1]) in ports]
                               if len(c.json("conn", "list")) >= 3 else None, 5)
        assert conns and len(conns) == 3, conns
        for x in conns:
            assert x["state"] == "request-head" and x["requests"] == 0
            for d in ("request", "response"):
                assert x[d]["path"] == "splice" and x[d]["paused"] is False and x[d]["pauses"] == 0
            assert x["protocol"] == "http"
        ids = sorted(x["id"] for x in conns)
        human = c.ok("conn", "list")
        assert human.splitlines()[0].split()[:5] == ["ID", "CLIENT", "UPSTREAM", "ROUTE", "STATE"]
        assert human.splitlines()[0].split()[-2:] == ["PROTO", "DETAILS"]
        assert all(ln.split()[-2:] == ["http", "-"] for ln in human.splitlines()[1:])
        assert len(human.splitlines()) == 4
        victim = next(x for x in conns if x["id"] == ids[0])
        c.ok("conn", "kill", str(victim["id"]))
        vs = next(s for s in socks if s.getsockname()[1] == int(victim["client"].rsplit(":", 1)[1]))
        vs.settimeout(5)
        assert vs.recv(1) == b"", "killed connection must be closed"
        assert victim["id"] not in {x["id"] for x in c.json("conn", "list")}
        err = c.fails(EX_FAIL, "conn", "kill", "999999")
        assert "no connection 999999" in err
    finally:
        for s in socks:
            s.close()


def test_idle_keepalive_connection_listed_with_its_totals(ckfwd, peer):
    """Between requests a keep-alive connection holds no exchange: conn list still shows it
    (request-head, its upstream and route, its requests) with the byte counts of every exchange
    it carried, which go on growing with the next request instead of starting over."""
    up = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(up))
    body = os.urandom(100 * KiB)
    with peers.HttpConn(k.port) as h:
        port = h.sock.getsockname()[1]

        def idle_conn(requests):
            return peers.wait_for(lambda: [x for x in c.json("conn", "list") if x["client"].endswith(f":{port}")
                                           and x["requests"] == requests and x["state"] == "request-head"], 5)

        h.request("POST", "/a/up", body=body)
        r1 = h.read_response(keep_body=True)
        assert r1.status == 200 and json.loads(r1.body)["bytes"] == len(body)
        first = idle_conn(1)
        assert first, c.json("conn", "list")
        x = first[0]
        assert x["upstream"] == up.addr and x["route"] == "/a/" and x["last_status"] == 200, x
        assert x["request"]["bytes"] >= len(body) and x["response"]["bytes"] >= r1.body_len, x
        for d in ("request", "response"):
            assert x[d]["queued"] == 0 and x[d]["paused"] is False, x
        h.request("GET", "/a/again")
        r2 = h.read_response()
        assert r2.status == 200
        second = idle_conn(2)
        assert second, c.json("conn", "list")
        y = second[0]
        assert y["id"] == x["id"]
        assert y["response"]["bytes"] >= x["response"]["bytes"] + r2.body_len, (x, y)
        assert x["request"]["bytes"] < y["request"]["bytes"] < x["request"]["bytes"] + 1024, (x, y)
        assert y["request"]["spliced"] + y["request"]["copied"] >= len(body), y


# --------------------------------------------------------------------------- routes


def test_route_add_serves_new_requests_without_restart(ckfwd, peer):
    a = peer(peers.EchoUpload())
    b = peer(peers.EchoUpload())
    k, c = ckfwd(f"upstream a {a.addr}\nupstream b {b.addr}\nroute /a/ a")
    assert get(k.port, "/b/x").status == 404
    c.ok("route", "add", "/b/", "b", "strip-prefix", "methods=GET,HEAD")
    r = get(k.port, "/b/hello", keep_body=True)
    assert r.status == 200 and json.loads(r.body)["target"] == "/hello"
    assert get(k.port, "/b/hello", method="POST", headers=[("Content-Length", "0")]).status == 405
    routes = c.json("route", "list")
    assert [x["prefix"] for x in routes] == ["/a/", "/b/"]
    assert routes[0]["origin"] == f"{k.config_path}:{routes[0]['origin'].rsplit(':', 1)[1]}"
    assert routes[1]["origin"] == "kfwdctl" and routes[1]["target"] == "b"
    assert routes[1]["options"] == "strip-prefix methods=GET,HEAD" and routes[1]["methods"] == "GET, HEAD"
    human = c.ok("route", "list")
    assert "kfwdctl" in human and "strip-prefix" in human
    assert c.json("status")["runtime_changes"] == 1
    # Rejected changes leave everything as it was, with the parser's message.
    assert "unknown upstream 'nosuch'" in c.fails(EX_FAIL, "route", "add", "/c/", "nosuch")
    assert "unknown route option" in c.fails(EX_FAIL, "route", "add", "/c/", "b", "frobnicate")
    assert "no route /zzz/" in c.fails(EX_FAIL, "route", "del", "/zzz/")
    assert len(c.json("route", "list")) == 2
    # Delete the runtime route, then the file's: the last one cannot go (no route).
    c.ok("route", "del", "/b/")
    assert get(k.port, "/b/hello").status == 404
    assert "no route" in c.fails(EX_FAIL, "route", "del", "/a/")
    assert get(k.port, "/a/x").status == 200


def test_route_del_ambiguous_needs_host(ckfwd, peer):
    a = peer(peers.EchoUpload())
    k, c = ckfwd(f"upstream a {a.addr}\nroute /a/ a\nroute /a/ a host=one.example\nroute / a")
    assert "host=" in c.fails(EX_FAIL, "route", "del", "/a/")
    c.ok("route", "del", "/a/", "host=one.example")
    assert [(x["prefix"], x.get("host")) for x in c.json("route", "list")] == [("/a/", None), ("/", None)]
    c.ok("route", "del", "/a/", "host=")
    assert [x["prefix"] for x in c.json("route", "list")] == ["/"]


def test_config_injection_refused(ckfwd, peer, free_port):
    """route and set arguments become configuration lines: nothing may smuggle in another."""
    a = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(a))
    port = free_port()
    evil = [
        ("route", "add", f"/x\nlisten 127.0.0.1:{port}", "up"),
        ("route", "add", "/x/", "up", f"strip-prefix\nlisten 127.0.0.1:{port}"),
        ("route", "add", "/x/", f"up listen 127.0.0.1:{port}"),
        ("set", "log-level", f"debug\nlisten 127.0.0.1:{port}"),
        ("set", "log-level", "debug #"),
    ]
    for args in evil:
        p = c.run(*args)
        assert p.returncode in (EX_FAIL, EX_USAGE), (args, p.returncode, p.stderr)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert c.json("status")["config_generation"] == 0


# --------------------------------------------------------------------------- upstreams


def test_upstream_list_drain_enable(ckfwd, peer):
    a = peer(peers.EchoUpload())
    b = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(a, b))
    ups = c.json("upstream", "list")
    assert [u["name"] for u in ups] == ["up"]
    assert [(s["addr"], s["state"], s["drained"]) for s in ups[0]["servers"]] == [(a.addr, "up", False), (b.addr, "up", False)]
    human = c.ok("upstream", "list")
    assert human.splitlines()[0].split() == ["UPSTREAM", "SERVER", "STATE", "CONNS", "FAILURES", "DOWN-FOR"]

    c.ok("upstream", "drain", "up", a.addr)
    before = len(a.requests)
    for _ in range(6):
        assert get(k.port, "/a/x").status == 200
    assert len(a.requests) == before, "a drained server gets no new request"
    states = {s["addr"]: s["state"] for s in c.json("upstream", "list")[0]["servers"]}
    assert states == {a.addr: "drained", b.addr: "up"}
    assert "drained" in c.ok("upstream", "list")

    c.ok("upstream", "drain", "up")  # every server
    assert get(k.port, "/a/x").status == 502
    c.ok("upstream", "enable", "up")
    before = len(a.requests)
    for _ in range(6):
        assert get(k.port, "/a/x").status == 200
    assert len(a.requests) > before
    # a drain survives a runtime configuration change
    c.ok("upstream", "drain", "up", b.addr)
    c.ok("set", "log-level", "debug")
    assert {s["addr"]: s["state"] for s in c.json("upstream", "list")[0]["servers"]}[b.addr] == "drained"
    assert "no upstream nope" in c.fails(EX_FAIL, "upstream", "drain", "nope")
    assert "has no server" in c.fails(EX_FAIL, "upstream", "drain", "up", "10.9.9.9:1")


# --------------------------------------------------------------------------- set


def test_set_runtime_knobs(ckfwd, peer):
    a = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(a))
    c.ok("set", "pipe-size", "256k", "pipe-high-water", "192k", "pipe-low-water", "64k")
    s = c.json("status")
    assert (s["pipe_size"], s["pipe_high_water"], s["pipe_low_water"]) == (256 * KiB, 192 * KiB, 64 * KiB)
    assert "pipe-size 256k" in c.ok("status")
    # the same checks as the config file: low < high <= pipe-size
    assert "pipe-low-water" in c.fails(EX_FAIL, "set", "pipe-low-water", "200k")
    assert "exceeds pipe-size" in c.fails(EX_FAIL, "set", "pipe-high-water", "1m")
    assert "pipe-size" in c.fails(EX_FAIL, "set", "pipe-size", "12")
    assert c.json("status")["pipe_size"] == 256 * KiB
    # repeated sets replace each other: one runtime line per key
    c.ok("set", "log-level", "debug")
    c.ok("set", "log-level", "warn")
    s = c.json("status")
    assert s["log_level"] == "warn" and s["runtime_changes"] == 4
    c.ok("set", "max-connections", "2", "copy-buffer-size", "128k")
    assert c.json("status")["max_connections"] == 2
    # data-path: new connections move bodies by copy
    c.ok("set", "data-path", "copy")
    with socket.create_connection(("127.0.0.1", k.port)) as sk:
        port = sk.getsockname()[1]
        conn = peers.wait_for(lambda: [x for x in c.json("conn", "list") if x["client"].endswith(f":{port}")], 5)
        assert conn and conn[0]["request"]["path"] == "copy" and conn[0]["response"]["high_water"] == 128 * KiB
    assert get(k.port, "/a/x").status == 200
    assert c.fails(EX_USAGE, "set", "connect-timeout", "1s")


# --------------------------------------------------------------------------- reload


def test_reload_file(ckfwd, peer, free_port):
    a = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(a))
    c.ok("route", "add", "/rt/", "up")
    original = k.config_path.read_text()
    # a broken file: FILE:LINE, and the running configuration stays
    k.config_path.write_text(original + "route /b/ up\nbogus-directive 1\n")
    bad_line = len((original + "route /b/ up\n").splitlines()) + 1
    err = c.fails(EX_FAIL, "reload")
    assert f"{k.config_path}:{bad_line}: unknown directive 'bogus-directive'" in err, err
    assert get(k.port, "/rt/x").status == 200 and get(k.port, "/b/x").status == 404
    # a good file with one more listen address and one more route
    port2 = free_port()
    k.config_path.write_text(original + f"listen 127.0.0.1:{port2}\nroute /b/ up\n")
    out = c.ok("reload")
    assert "1 runtime change dropped" in out
    assert get(k.port, "/b/x").status == 200 and get(port2, "/b/x").status == 200
    assert get(k.port, "/rt/x").status == 404, "reload drops runtime changes"
    s = c.json("status")
    assert sorted(s["listen"]) == sorted([f"127.0.0.1:{k.port}", f"127.0.0.1:{port2}"])
    assert s["config_generation"] == 2 and s["runtime_changes"] == 0
    # a listen address that cannot be had: reported, nothing changes
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        busy = blocker.getsockname()[1]
        k.config_path.write_text(original + f"listen 127.0.0.1:{busy}\n")
        assert f"listen 127.0.0.1:{busy}" in c.fails(EX_FAIL, "reload")
        assert get(port2, "/b/x").status == 200
    # SIGHUP reloads too
    k.config_path.write_text(original + "route /hup/ up\n")
    k.proc.send_signal(signal.SIGHUP)
    assert peers.wait_for(lambda: get(k.port, "/hup/x").status == 200, 5)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port2), timeout=1).close()


def test_open_connection_keeps_its_configuration(ckfwd, peer):
    """Documented: a keep-alive connection keeps the configuration it started with."""
    a = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(a))
    with peers.HttpConn(k.port) as conn:
        conn.request("GET", "/a/1")
        assert conn.read_response().status == 200
        c.ok("route", "add", "/new/", "up")
        out = c.ok("set", "log-level", "info")
        assert "1 open connection keeps the previous configuration" in out
        conn.request("GET", "/new/1")
        assert conn.read_response().status == 404
    assert get(k.port, "/new/1").status == 200


# --------------------------------------------------------------------------- monitor, stalled client


class Monitor:
    def __init__(self, c, *args, json_out=True):
        argv = [str(KFWDCTL_BIN), "-f", str(c.file)] + (["-j"] if json_out else []) + ["monitor", *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def events(self):
        return [json.loads(x) for x in list(self.lines)]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        wait_exit(self.proc, 10)
        self.t.join(5)


def wait_monitoring(c, n=1):
    assert peers.wait_for(lambda: c.json("status")["monitors"] >= n, 5), "monitor did not subscribe"


def test_monitor_events(ckfwd, peer):
    a = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(a))
    m = Monitor(c)
    h = Monitor(c, json_out=False)
    try:
        wait_monitoring(c, 2)
        assert get(k.port, "/a/x").status == 200
        c.ok("route", "add", "/m/", "up")
        want = {"open", "close", "config"}
        assert peers.wait_for(lambda: want <= {e["event"] for e in m.events()}, 5), m.lines
        ev = m.events()
        opened = next(e for e in ev if e["event"] == "open")
        closed = next(e for e in ev if e["event"] == "close")
        assert opened["conn"] == closed["conn"] and closed["status"] == 200
        assert closed["upstream"] == a.addr and closed["bytes_down"] > 0 and closed["bytes_up"] > 0
        assert next(e for e in ev if e["event"] == "config")["what"] == "route add /m/ up"
        assert peers.wait_for(lambda: len(h.lines) >= 3, 5)
        assert any(" open " in x and "client 127.0.0.1:" in x for x in h.lines), h.lines
        assert any(" close " in x and "status 200" in x for x in h.lines), h.lines
    finally:
        m.stop()
        h.stop()
    # count N: exits 0 by itself
    p = subprocess.Popen([str(KFWDCTL_BIN), "-f", str(c.file), "-j", "monitor", "count", "2"], stdout=subprocess.PIPE, text=True)
    wait_monitoring(c)
    get(k.port, "/a/x")
    assert wait_exit(p, 10) == 0
    assert [json.loads(x)["event"] for x in p.stdout.read().splitlines()] == ["open", "close"]


def test_monitor_ends_when_kfwd_stops(ckfwd, peer):
    a = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(a))
    m = Monitor(c)
    wait_monitoring(c)
    k.send_signal(signal.SIGTERM)
    assert k.wait(10) == 0
    assert wait_exit(m.proc, 10) == EX_UNREACH
    assert "kfwd stopped" in m.proc.stderr.read()
    assert not c.file.exists(), "kfwd removes its file on exit"


@pytest.mark.timeout(60)
def test_stalled_client_paused_with_rising_pause_count(ckfwd, peer):
    """A client reading slowly: conn list shows the response flow paused, its pause count
    rising, and stats shows spliced bytes growing; monitor sees pause/resume events."""
    src = peer(peers.CountingSender(size=512 * MiB))
    k, c = ckfwd(upstream_config(src, extra="pipe-size 256k\nclient-sndbuf 64k\nupstream-rcvbuf 64k"))
    m = Monitor(c)
    wait_monitoring(c)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * KiB)
    sock.connect(("127.0.0.1", k.port))
    sock.sendall(b"GET /a/big HTTP/1.1\r\nHost: x\r\n\r\n")
    stop = threading.Event()
    got = [0]

    def reader():
        sock.settimeout(10)
        while not stop.is_set():
            d = sock.recv(16 * KiB)
            if not d:
                return
            got[0] += len(d)
            time.sleep(0.02)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        port = sock.getsockname()[1]
        samples, spliced, seen_paused, human_paused = [], [], False, False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (len(samples) < 4 or not seen_paused):
            conn = [x for x in c.json("conn", "list") if x["client"].endswith(f":{port}")]
            assert conn, "the stalled connection is listed"
            resp = conn[0]["response"]
            samples.append(resp["pauses"])
            seen_paused |= resp["paused"]
            spliced.append(c.json("stats")["bytes_spliced_total"]["response"])
            if not human_paused:
                human_paused = any(ln.split()[0] == str(conn[0]["id"]) and "response" in ln.split()
                                   for ln in c.ok("conn", "list").splitlines()[1:])
            time.sleep(0.4)
        assert seen_paused, f"never seen paused; pause counts {samples}"
        assert human_paused, "human conn list never showed the response flow paused"
        rising = [x for x in samples if x >= 1]
        assert len(set(rising)) >= 2 and rising[-1] > rising[0], f"pause count not rising: {samples}"
        assert all(x <= y for x, y in zip(samples, samples[1:])), samples
        assert spliced[-1] > spliced[0], f"spliced bytes not growing: {spliced}"
        assert conn[0]["response"]["spliced"] > 0 and conn[0]["state"] == "exchange"
        assert conn[0]["response"]["queued"] <= conn[0]["response"]["high_water"]
        assert peers.wait_for(lambda: {"pause", "resume"} <= {e["event"] for e in m.events()}, 5), m.lines[-5:]
        pause = next(e for e in m.events() if e["event"] == "pause")
        assert pause["dir"] == "response" and pause["conn"] == conn[0]["id"] and pause["level"] > 0
        st = c.json("stats")
        assert st["pauses_total"] >= samples[-1] and st["resumes_total"] >= 1
    finally:
        stop.set()
        sock.close()
        t.join(5)
        m.stop()


# --------------------------------------------------------------------------- permissions


def test_non_root_refused(ckfwd, peer):
    a = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(a))
    for args in READ_ONLY + MUTATING + [["monitor"]]:
        err = c.fails(EX_PERM, *args, nobody=True)
        assert "permission denied" in err and "uid 65534" in err, (args, err)
    assert c.json("stats")["ctl_denied_total"] == len(READ_ONLY + MUTATING) + 1
    assert c.json("status")["config_generation"] == 0 and get(k.port, "/a/x").status == 200


def test_ctl_group_reads_but_cannot_change(ckfwd, peer):
    a = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(a, extra="ctl-group nogroup"))
    assert c.json("status")["ctl_group"] == "nogroup"
    for args in READ_ONLY:
        c.ok(*args, nobody=True)
    assert c.json("stats", nobody=True)["requests_total"] == 0
    m = subprocess.Popen(NOBODY + [str(KFWDCTL_BIN), "-f", str(c.file), "-j", "monitor", "count", "1"],
                         stdout=subprocess.PIPE, text=True)
    wait_monitoring(c)
    get(k.port, "/a/x")
    assert wait_exit(m, 10) == 0
    for args in MUTATING:
        err = c.fails(EX_PERM, *args, nobody=True)
        assert "uid 0 only" in err, (args, err)
    # supplementary group membership counts too (the real gid is not nogroup here)
    sup = ["setpriv", "--reuid=65534", "--regid=100", "--groups=65534"]
    p = subprocess.run(sup + [str(KFWDCTL_BIN), "-f", str(c.file), "status"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    other = ["setpriv", "--reuid=65534", "--regid=100", "--clear-groups"]
    p = subprocess.run(other + [str(KFWDCTL_BIN), "-f", str(c.file), "status"], capture_output=True, text=True, timeout=10)
    assert p.returncode == EX_PERM and "group nogroup" in p.stderr


# --------------------------------------------------------------------------- squatters, addressing

SQUATTER = r"""
import socket, struct, sys
sys.path.insert(0, sys.argv[2])
import ctlproto as P
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, P.NETLINK_USERSOCK)
s.bind((int(sys.argv[1]), 0))
print("bound", flush=True)
answer = sys.argv[3] == "answer"
while True:
    data, addr = s.recvfrom(65536)
    if not answer:
        continue
    for t, flags, seq, pid, payload in P.parse_msgs(data):
        # a convincing fake: the right type, version and a status
        fake = P.msg(t, 0, seq, P.u32(P.A_VERSION, P.VERSION) + P.nest(P.A_STATUS, P.strz(P.ST_VERSION, "evil")))
        s.sendto(fake, addr)
"""


# Another unprivileged uid than kfwdctl's in these tests, so kfwdctl cannot look at its fds.
SQUATTER_USER = ["setpriv", "--reuid=65533", "--regid=65533", "--clear-groups"]


def start_squatter(portid, mode):
    p = subprocess.Popen(SQUATTER_USER + ["/usr/bin/python3", "-c", SQUATTER, str(portid), str(Path(__file__).parent), mode],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    assert line.strip() == "bound", p.stderr.read()
    return p


def stop(p):
    p.kill()
    p.wait(5)


def test_squatter_detected_by_kfwdctl(ckfwd, peer, ctl_dir):
    a = peer(peers.EchoUpload())
    portid = 0x7B000000 + os.getpid() % 100000
    k, c = ckfwd(upstream_config(a, extra=f"ctl-port-id {portid}"))
    assert c.json("status")["ctl_port_id"] == portid
    published = c.file.read_text()
    k.send_signal(signal.SIGTERM)
    assert k.wait(10) == 0
    assert not c.file.exists()
    for mode in ("answer", "silent"):
        sq = start_squatter(portid, mode)
        try:
            # root kfwdctl: the holder of the port id is not kfwd, said before talking to it
            err = c.fails(EX_IMPOSTOR, "status", opts=["-p", str(portid)])
            assert f"pid {sq.pid}" in err and "squatting" in err, err
            # non-root kfwdctl (cannot see who holds it): the answer's credentials give it away
            p = subprocess.run(NOBODY + [str(KFWDCTL_BIN), "-p", str(portid), "-t", "2", "status"],
                               capture_output=True, text=True, timeout=20)
            if mode == "answer":
                assert p.returncode == EX_IMPOSTOR, p.stderr
                assert f"pid {sq.pid} (uid 65533)" in p.stderr and "not kfwd" in p.stderr, p.stderr
                assert "evil" not in p.stdout
            else:
                assert p.returncode == EX_UNREACH and "no answer" in p.stderr, p.stderr
            # a stale file naming kfwd's old pid: not running, whoever holds the port now
            stale = ctl_dir / "stale"
            stale.write_text(published)
            os.chmod(stale, 0o644)
            err = c.fails(EX_UNREACH, "status", opts=["-f", str(stale)])
            assert "not running" in err and "stale" in err, err
        finally:
            stop(sq)
    # a file that is not root's is not trusted
    fake = ctl_dir / "fake"
    fake.write_text(f"portid={portid} pid=1\n")
    os.chown(fake, 65534, 65534)
    assert "not trusted" in c.fails(EX_IMPOSTOR, "status", opts=["-f", str(fake)])


def test_kfwd_refuses_to_start_beside_a_squatter(ctl_dir, free_port):
    portid = 0x7C000000 + os.getpid() % 100000
    sq = start_squatter(portid, "silent")
    conf = ctl_dir / "k.conf"
    conf.write_text(f"listen 127.0.0.1:{free_port()}\nroute / url-embedded\nallow *\n"
                    f"ctl-port-id {portid}\nctl-socket-file {ctl_dir}/ctl\n")
    try:
        p = subprocess.run([str(KFWD), "-c", str(conf)], capture_output=True, text=True, timeout=20)
        assert p.returncode == 1, p.stderr
        assert f"port id {portid} is held by pid {sq.pid}" in p.stderr and "refusing to start" in p.stderr, p.stderr
        assert not (ctl_dir / "ctl").exists()
    finally:
        stop(sq)


def test_two_instances_and_port_id_override(ckfwd, peer):
    """Several kfwd side by side (each its pid as port id and its own file); -p addresses one."""
    a = peer(peers.EchoUpload())
    k1, c1 = ckfwd(upstream_config(a))
    k2, c2 = ckfwd(upstream_config(a))
    assert c1.json("status")["pid"] == k1.pid and c2.json("status")["pid"] == k2.pid
    p = subprocess.run([str(KFWDCTL_BIN), "-j", "-p", str(c2.portid), "status"], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0 and json.loads(p.stdout)["pid"] == k2.pid
    p = subprocess.run([str(KFWDCTL_BIN), "-j", "-f", str(c1.file), "-p", str(c2.portid), "status"],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, "-p with a file of another instance: that file's pid is not expected"


def test_ctl_off(kfwd, ctl_dir, peer):
    a = peer(peers.EchoUpload())
    k = kfwd(upstream_config(a) + f"\nctl-port-id off\nctl-socket-file {ctl_dir}/ctl\n")
    assert "control socket off" in k.stderr
    assert not (ctl_dir / "ctl").exists()


# --------------------------------------------------------------------------- the protocol itself


def exchange(client, data, timeout=5):
    client.send(data)
    got = client.recv(timeout)
    assert got is not None, "no answer"
    return got


def test_protocol_raw(ckfwd, peer):
    a = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(a))
    with P.Client(c.portid) as cl:
        data, cred, src = exchange(cl, P.request(P.CMD_STATUS, flags=P.F_REQUEST, seq=7))
        assert src == c.portid and cred[0] == k.pid and cred[1] == 0, "answers carry kfwd's credentials"
        (t, flags, seq, _, payload), = P.parse_msgs(data)
        assert (t, seq) == (P.CMD_STATUS, 7)
        attrs = dict(P.parse_attrs(payload))
        assert struct.unpack("=I", attrs[P.A_VERSION])[0] == P.VERSION and P.A_STATUS in attrs

        def error(req):
            data, _, _ = exchange(cl, req)
            (t, flags, seq, _, payload), = P.parse_msgs(data)
            assert t == P.NLMSG_ERROR
            return P.error_of(payload, flags)

        # no version / another version / unknown command
        assert error(P.msg(P.CMD_STATUS, P.F_REQUEST, 1, b"")) == (71, "request without KFWD_A_VERSION")
        e, text = error(P.msg(P.CMD_STATUS, P.F_REQUEST, 1, P.u32(P.A_VERSION, 99)))
        assert e == 71 and "version 99" in text
        e, text = error(P.request(250))
        assert e == 95 and "unknown command" in text
        # bad attribute: EINVAL with its offset
        bad = P.request(P.CMD_CONN_KILL, P.u32(P.A_CONN_ID, 1))
        data, _, _ = exchange(cl, bad)
        (t, flags, seq, _, payload), = P.parse_msgs(data)
        e, text = P.error_of(payload, flags)
        assert e == 22 and "conn-id" in text and "expected 8" in text
        offs = [v for tt, v in P.parse_attrs(payload[20:]) if tt == P.NLMSGERR_ATTR_OFFS]
        assert offs and struct.unpack("=I", offs[0])[0] == 16 + 8, "offset of the bad attribute"
        # unknown attributes are ignored
        data, _, _ = exchange(cl, P.request(P.CMD_STATUS, P.attr(200, b"xyz") + P.nest(201, P.u32(1, 5)), flags=P.F_REQUEST))
        assert P.parse_msgs(data)[0][0] == P.CMD_STATUS
        # two requests in one datagram: two answers
        cl.send(P.request(P.CMD_STATS, flags=P.F_REQUEST, seq=11) + P.request(P.CMD_STATUS, flags=P.F_REQUEST, seq=12))
        seqs = []
        for _ in range(2):
            d, _, _ = cl.recv(5)
            seqs += [m[2] for m in P.parse_msgs(d)]
        assert sorted(seqs) == [11, 12]
        # an action is acknowledged (error 0) even without NLM_F_ACK
        assert error(P.request(P.CMD_UPSTREAM_ENABLE, P.strz(P.A_UPSTREAM, "up"), flags=P.F_REQUEST)) == (0, None)
        # answers and replies-to-nothing are never answered
        cl.send(P.error_msg(-1, P.request(P.CMD_STATUS)))
        cl.send(P.done_msg(5))
        cl.send(P.msg(P.CMD_STATUS, 0, 5, P.u32(P.A_VERSION, P.VERSION)))
        assert cl.recv(0.5) is None


@pytest.mark.timeout(120)
def test_dump_split_over_many_messages(ckfwd, peer):
    a = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(a))
    n = 1500
    peers.raise_nofile(n + 200)
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection(("127.0.0.1", k.port)))
        assert peers.wait_for(lambda: c.json("status")["connections"] == n, 20)
        conns = c.json("conn", "list", timeout=60)
        ids = [x["id"] for x in conns]
        assert len(ids) == n and len(set(ids)) == n and ids == sorted(ids)
        assert len(c.ok("conn", "list").splitlines()) == n + 1
        # on the wire: NLM_F_MULTI messages in several datagrams, pages ending in NLMSG_DONE
        with P.Client(c.portid) as cl:
            cursor, pages, datagrams, objects = None, 0, 0, 0
            while True:
                extra = P.u64(P.A_CURSOR, cursor) if cursor is not None else b""
                cl.send(P.request(P.CMD_CONN_LIST, extra, flags=P.F_REQUEST | P.F_DUMP, seq=100 + pages))
                pages += 1
                cursor = None
                done = False
                while not done:
                    d, cred, _ = cl.recv(5)
                    assert cred[1] == 0 and len(d) <= P.MSG_MAX
                    datagrams += 1
                    for t, flags, seq, _, payload in P.parse_msgs(d):
                        assert flags & P.F_MULTI
                        if t == P.NLMSG_DONE:
                            done = True
                            for at, v in P.parse_attrs(payload[4:]):
                                if at == P.A_CURSOR:
                                    cursor = struct.unpack("=Q", v)[0]
                        else:
                            assert t == P.CMD_CONN_LIST
                            objects += 1
                if cursor is None:
                    break
            assert objects == n and pages > 1 and datagrams > pages
            print(f"conn list of {n}: {pages} pages, {datagrams} datagrams")
    finally:
        for s in socks:
            s.close()


def malformed_messages(rng, count):
    """Random lengths, types, nesting, truncated TLVs, lying length fields, bad strings."""
    cmds = list(range(P.CMD_STATUS, P.CMD_EVENT + 1))

    def rand_attrs(depth=0):
        out = b""
        for _ in range(rng.randint(0, 6)):
            kind = rng.random()
            t = rng.choice([rng.randint(0, 40), rng.randint(0, 0xFFFF)])
            if kind < 0.25 and depth < 6:
                out += P.nest(t, rand_attrs(depth + 1))
            elif kind < 0.45:
                out += P.attr(t, rng.randbytes(rng.choice([0, 1, 3, 4, 7, 8, 9, rng.randint(0, 300)])))
            elif kind < 0.6:
                s = rng.choice([b"", b"abc", b"a\0b", b"x" * 2000, b"/x\nlisten 0.0.0.0:1", b"\xff\xfe", b"debug"])
                out += P.attr(t, s + rng.choice([b"\0", b""]))
            elif kind < 0.7:  # a TLV whose length runs past its container
                out += struct.pack("=HH", rng.randint(5, 0xFFFF), t) + rng.randbytes(rng.randint(0, 8))
            elif kind < 0.8:
                out += struct.pack("=HH", rng.randint(0, 3), t)
            else:
                out += P.u32(P.A_VERSION, rng.choice([P.VERSION, 0, 2]))
        return out

    for _ in range(count):
        r = rng.random()
        if r < 0.15:
            yield rng.randbytes(rng.randint(0, 200))
        elif r < 0.3:
            body = rand_attrs()
            length = rng.choice([0, 1, 15, 16, 17, 0xFFFFFFFF, 0x7FFFFFFF, 16 + len(body) + rng.randint(1, 64)])
            yield struct.pack("=IHHII", length, rng.choice(cmds), P.F_REQUEST, 1, 0) + body
        elif r < 0.45:
            m = P.request(rng.choice(cmds), rand_attrs(), flags=P.F_REQUEST | rng.choice([0, P.F_ACK, P.F_DUMP]))
            yield m[:rng.randint(0, len(m))]  # truncated
        elif r < 0.9:
            yield P.request(rng.choice(cmds), rand_attrs(), flags=P.F_REQUEST | rng.choice([0, P.F_ACK, P.F_DUMP]))
        else:
            t = rng.choice([0, 1, 2, 3, 4, 15, 250, 0xFFFF])
            yield P.msg(t, rng.randint(0, 0xFFFF), rng.randint(0, 2**32 - 1), rand_attrs())


@pytest.mark.timeout(120)
def test_10000_malformed_messages_leave_kfwd_serving(ckfwd, peer):
    a = peer(peers.EchoUpload())
    k, c = ckfwd(upstream_config(a))
    rng = random.Random(20251123)
    gen0 = c.json("status")["config_generation"]
    t0 = time.monotonic()
    sent = 0
    with P.Client(c.portid) as cl:
        for i, m in enumerate(malformed_messages(rng, 10000)):
            try:
                cl.send(m)
                sent += 1
            except OSError:
                pass  # e.g. a zero-length datagram
            if i % 200 == 199:
                cl.drain()
        # huge datagrams are cut (MSG_TRUNC) and answered with EMSGSIZE
        cl.send(P.request(P.CMD_STATUS, P.attr(50, b"x" * 60000) + P.attr(50, b"y" * 10000)))
        cl.drain()
    elapsed = time.monotonic() - t0
    print(f"10000 malformed messages sent in {elapsed:.2f} s")
    assert k.alive()
    assert get(k.port, "/a/x").status == 200
    st = c.json("stats")
    assert st["ctl_malformed_total"] > 5000, st["ctl_malformed_total"]
    s = c.json("status")
    assert s["pid"] == k.pid and s["listen"] == [f"127.0.0.1:{k.port}"]
    # random messages can name real commands with valid attributes; none of them may have
    # smuggled a configuration line in (checked: nothing but this listener answers)
    assert s["config_generation"] >= gen0
    assert [x["prefix"] for x in c.json("route", "list")][0] == "/a/"
