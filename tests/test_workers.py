"""workers N: a master and N worker processes, each with its own SO_REUSEPORT listeners and
sessions (user/workers.c); the master's control socket and metrics endpoint answer for all.

Connections land on both workers (their pids in `conn list` details, listed across dump pages),
counters are summed, `conn kill` and `kfwdctl monitor` reach every worker, a route added by
kfwdctl or by a reloaded file serves on every worker, SIGTERM drains every worker (in-flight
downloads complete), a killed worker is restarted, the sockmap program is shared (the master
passes ring events to the flow's worker), `workers 1` stays one process, and bad values are
refused.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from peers import MiB  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KFWD = Path(os.environ.get("KFWD_BIN") or ROOT / "build" / "kfwd")
KFWDCTL = Path(os.environ.get("KFWDCTL_BIN") or ROOT / "build" / "kfwdctl")

# With two reuseport listeners the kernel picks one by a hash of the 4-tuple: 24 connections
# all on one worker has a chance of 2 * 2**-24.
SPREAD = 24


def ctl(k, *args):
    """kfwdctl -j ARGS against kfwd @k (its ctl-socket-file is ctl in the config's directory)."""
    path = Path(k.config_path).parent / "ctl-workers"
    p = subprocess.run([str(KFWDCTL), "-f", str(path), "-j", *args], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, f"kfwdctl {' '.join(args)}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return json.loads(p.stdout) if p.stdout.strip() else None


def start(kfwd, tmp_path, body, workers=2):
    k = kfwd(f"workers {workers}\nctl-socket-file {tmp_path}/ctl-workers\n" + body)
    # The port answers once the first worker listens; the master says when all do.
    if workers > 1:
        assert peers.wait_for(lambda: f"{workers} workers serving" in k.stderr, 10), k.stderr
    return k


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def open_kept(port, n, target="/a"):
    """n keep-alive connections, each after one answered GET of @target: (conns, statuses)."""
    conns, statuses = [], []
    for _ in range(n):
        c = peers.HttpConn(port, timeout=10)
        c.request("GET", target)
        statuses.append(c.read_response().status)
        conns.append(c)
    return conns, statuses


def by_worker(k):
    """{worker number: set of pids} from conn list details."""
    seen = {}
    for c in ctl(k, "conn", "list"):
        seen.setdefault(c["details"]["worker"], set()).add(c["details"]["pid"])
    return seen


def test_two_workers_both_serve(kfwd, peer, tmp_path):
    origin = peer(peers.EchoUpload())
    k = start(kfwd, tmp_path, f"upstream up {origin.addr}\nroute / up\n")
    conns, statuses = open_kept(k.port, SPREAD)
    assert statuses == [200] * SPREAD
    listed = ctl(k, "conn", "list")
    assert len(listed) == SPREAD
    assert len({c["id"] for c in listed}) == SPREAD, "connection ids repeat across workers"
    seen = by_worker(k)
    assert set(seen) == {1, 2}, f"connections landed on workers {seen}"
    pids = seen[1] | seen[2]
    assert len(pids) == 2 and k.pid not in pids
    assert all(parent_of(p) == k.pid for p in pids), "workers are not the master's children"
    assert ctl(k, "status")["connections"] == SPREAD

    # conn kill reaches the worker that has the connection.
    victim = next(c for c in listed if c["details"]["worker"] == 2)
    ctl(k, "conn", "kill", str(victim["id"]))
    assert peers.wait_for(lambda: len(ctl(k, "conn", "list")) == SPREAD - 1, 5)
    assert victim["id"] not in {c["id"] for c in ctl(k, "conn", "list")}
    for c in conns:
        c.close()


def test_conn_list_pages_across_workers(kfwd, peer, tmp_path):
    # More connections than one dump page (48 KiB) and one answer of a worker (64 KiB) hold.
    n = 250
    origin = peer(peers.EchoUpload())
    k = start(kfwd, tmp_path, f"upstream up {origin.addr}\nroute / up\n")
    conns, statuses = open_kept(k.port, n)
    assert statuses == [200] * n
    ids = [c["id"] for c in ctl(k, "conn", "list")]
    assert len(ids) == n and len(set(ids)) == n
    assert set(by_worker(k)) == {1, 2}
    for c in conns:
        c.close()


def test_monitor_sees_every_worker(kfwd, peer, tmp_path):
    origin = peer(peers.EchoUpload())
    k = start(kfwd, tmp_path, f"upstream up {origin.addr}\nroute / up\n")
    path = Path(k.config_path).parent / "ctl-workers"
    mon = subprocess.Popen(
        [str(KFWDCTL), "-f", str(path), "-j", "monitor", "count", str(2 * SPREAD)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # status asks every worker after the master told it a monitor listens (one socket,
        # in order): connections opened from then on are seen.
        assert peers.wait_for(lambda: ctl(k, "status")["monitors"] == 1, 5)
        conns, statuses = open_kept(k.port, SPREAD)
        for c in conns:
            c.close()
        out, err = mon.communicate(timeout=20)
    finally:
        if mon.poll() is None:
            mon.kill()
            mon.wait()
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    opened = {e["conn"] for e in events if e["event"] == "open"}
    closed = {e["conn"] for e in events if e["event"] == "close"}
    assert len(opened) == SPREAD and opened == closed, (out, err)
    assert {c >> 48 for c in opened} == {1, 2}, "events of one worker only"
    assert all(e["status"] == 200 for e in events if e["event"] == "close"), out


def test_upstream_list_sums_every_worker(kfwd, peer, tmp_path):
    origin = peer(peers.EchoUpload())
    dead = peers.free_port()  # nothing listens: each worker's first try fails there
    k = start(
        kfwd, tmp_path,
        f"upstream-max-fails 1\nupstream up 127.0.0.1:{dead} {origin.addr}\nroute / up\n",
    )
    conns, statuses = open_kept(k.port, SPREAD)
    assert statuses == [200] * SPREAD
    assert set(by_worker(k)) == {1, 2}
    (up,) = ctl(k, "upstream", "list")
    bad, good = up["servers"]
    # Every upstream connection is one a worker holds (in use or pooled): the master has none.
    assert good["conns"] == origin.accepted and good["state"] == "up"
    assert bad["state"] == "down" and bad["failures"] >= 2 and bad["down_ms"] > 0, bad
    for c in conns:
        c.close()


def test_stats_and_metrics_sum_every_worker(kfwd, peer, tmp_path):
    origin = peer(peers.EchoUpload())
    k = start(kfwd, tmp_path, f"upstream up {origin.addr}\nroute / up\n")
    accepted = ctl(k, "stats")["connections_accepted_total"]  # the readiness probe's
    conns, _ = open_kept(k.port, SPREAD)
    for c in conns:  # a second request on each connection
        c.request("GET", "/b")
        assert c.read_response().status == 200
    assert set(by_worker(k)) == {1, 2}
    stats = ctl(k, "stats")
    assert stats["requests_total"] == 2 * SPREAD
    assert stats["connections_accepted_total"] == accepted + SPREAD
    assert stats["connections_active"] == SPREAD
    assert stats["responses_total"]["2xx"] == 2 * SPREAD
    assert len(origin.requests) == 2 * SPREAD
    m = k.metrics()
    assert m["kfwd_requests_total"] == 2 * SPREAD
    assert m["kfwd_connections_accepted_total"] == accepted + SPREAD
    for c in conns:
        c.close()


def routed_to(port, target, n):
    """Statuses and bodies of @n new connections' GET @target."""
    out = []
    for _ in range(n):
        r = peers.get(port, target, keep_body=True)
        out.append((r.status, json.loads(r.body)["target"] if r.status == 200 else None))
    return out


def test_route_add_and_reload_reach_every_worker(kfwd, peer, tmp_path):
    first = peer(peers.EchoUpload())
    second = peer(peers.EchoUpload())
    k = start(kfwd, tmp_path, f"upstream up {first.addr}\nupstream other {second.addr}\nroute / up\n")
    conns, _ = open_kept(k.port, SPREAD)  # kept open: conn list shows which workers serve
    assert set(by_worker(k)) == {1, 2}

    ctl(k, "route", "add", "/added/", "other")
    before = len(second.requests)
    assert routed_to(k.port, "/added/x", SPREAD) == [(200, "/added/x")] * SPREAD
    assert len(second.requests) - before == SPREAD, "a worker still routes /added/ to the first origin"

    # The file changes and reload drops the runtime route: /file/ goes to the second origin.
    path = Path(k.config_path)
    path.write_text(path.read_text() + "route /file/ other\n")
    ctl(k, "reload")
    before, first_before = len(second.requests), len(first.requests)
    assert routed_to(k.port, "/file/y", SPREAD) == [(200, "/file/y")] * SPREAD
    assert len(second.requests) - before == SPREAD
    assert routed_to(k.port, "/added/z", SPREAD) == [(200, "/added/z")] * SPREAD
    assert len(first.requests) - first_before == SPREAD, "a worker kept the dropped runtime route"

    # SIGHUP to the master: the same, from the file.
    path.write_text(path.read_text().replace("route /file/ other\n", "route /hup/ other\n"))
    os.kill(k.pid, signal.SIGHUP)
    assert peers.wait_for(lambda: ctl(k, "status")["config_generation"] == 3, 5)
    before = len(second.requests)
    assert routed_to(k.port, "/hup/q", SPREAD) == [(200, "/hup/q")] * SPREAD
    assert len(second.requests) - before == SPREAD
    for c in conns:
        c.close()


def test_upstream_drain_and_set_reach_every_worker(kfwd, peer, tmp_path):
    origin = peer(peers.EchoUpload())
    k = start(kfwd, tmp_path, f"upstream up {origin.addr}\nroute / up\n")
    conns, _ = open_kept(k.port, SPREAD)
    assert set(by_worker(k)) == {1, 2}
    ctl(k, "upstream", "drain", "up")
    # Every server of the group drained: 502 at once, from whichever worker accepts.
    assert [s for s, _ in routed_to(k.port, "/d", SPREAD)] == [502] * SPREAD
    ctl(k, "upstream", "enable", "up")
    assert routed_to(k.port, "/e", SPREAD) == [(200, "/e")] * SPREAD
    # set: max-connections 1 per worker; the kept connections already exceed it everywhere.
    ctl(k, "set", "max-connections", "1")
    assert [s for s, _ in routed_to(k.port, "/f", SPREAD)] == [503] * SPREAD
    for c in conns:
        c.close()


def test_sigterm_drains_every_worker(kfwd, peer, tmp_path):
    size = 16 * MiB
    origin = peer(peers.CountingSender(size=size))
    k = start(kfwd, tmp_path, f"upstream up {origin.addr}\nroute / up\n")
    clients = []
    for _ in range(SPREAD // 2):
        c = peers.HttpConn(k.port, rcvbuf=64 * 1024, timeout=30)
        c.request("GET", "/big")
        clients.append(c)
    assert peers.wait_for(lambda: len(ctl(k, "conn", "list")) == len(clients), 5)
    seen = by_worker(k)
    assert set(seen) == {1, 2}, f"downloads landed on workers {seen}"
    pids = seen[1] | seen[2]

    k.send_signal(signal.SIGTERM)
    # No worker accepts any more (each closed its listener), yet every download completes.
    assert peers.wait_for(lambda: not peers_accepting(k.port), 5), "a worker still accepts"
    for c in clients:
        r = c.read_response()
        assert r.status == 200 and r.complete and r.body_len == size
        assert r.sha256 == origin.payload.sha256
    assert k.wait(10) == 0, k.stderr
    assert all(not Path(f"/proc/{p}").exists() or parent_of(p) != k.pid for p in pids)


def peers_accepting(port):
    try:
        peers.HttpConn(port, timeout=1).close()
        return True
    except OSError:
        return False


def test_killed_worker_is_restarted(kfwd, peer, tmp_path):
    origin = peer(peers.EchoUpload())
    k = start(kfwd, tmp_path, f"upstream up {origin.addr}\nroute / up\n")
    conns, _ = open_kept(k.port, SPREAD)
    old = by_worker(k)
    assert set(old) == {1, 2}
    (victim,) = old[2]
    for c in conns:
        c.close()
    os.kill(victim, signal.SIGKILL)
    assert peers.wait_for(lambda: "worker 2 killed by signal 9: restarting it" in k.stderr, 5), k.stderr
    assert peers.wait_for(lambda: "worker 2 started" in k.stderr.split("restarting it", 1)[1], 5)
    conns, statuses = open_kept(k.port, SPREAD)
    assert statuses == [200] * SPREAD
    now = by_worker(k)
    assert set(now) == {1, 2} and now[1] == old[1] and now[2] != old[2]
    for c in conns:
        c.close()


@pytest.fixture
def pin_dir():
    """A BPF pin directory of its own; requested before kfwd, so removed after kfwd stopped."""
    p = Path("/sys/fs/bpf") / f"kfwd-test-workers-{os.getpid()}-{time.monotonic_ns():x}"
    yield p
    if p.exists():
        for e in p.iterdir():
            e.unlink()
        p.rmdir()


def test_sockmap_shared_by_every_worker(pin_dir, kfwd, peer, tmp_path):
    """One program and pin set, loaded by the master; each worker's flows use it, and the events
    of the one ring reach the flow's worker: clients that stall past the cap and then read get
    every byte."""
    size, n = 4 * MiB, 8
    # A live stream, 8 MB/s: its queue is empty when kfwd hands it to the program.
    origin = peer(peers.CloseDelimited(size, piece=32 * 1024, interval=0.004))
    k = start(kfwd, tmp_path, f"data-path sockmap\nbpf-pin-dir {pin_dir}\nlog-level debug\nupstream up {origin.addr}\nroute / up\n")
    if "sockmap data path ready" not in k.stderr:
        pytest.skip("no BPF sockmap here: " + k.stderr[-300:])
    assert sorted(e.name for e in pin_dir.iterdir()) == ["kfwd_ctl", "kfwd_dirs", "kfwd_events", "kfwd_socks", "kfwd_verdict"]
    clients = []
    for _ in range(n):
        c = peers.HttpConn(k.port, rcvbuf=64 * 1024, timeout=30)
        c.request("GET", "/live")
        clients.append(c)
    assert peers.wait_for(lambda: len(ctl(k, "conn", "list")) == n, 5)
    assert set(by_worker(k)) == {1, 2}
    time.sleep(0.5)  # stalled: every flow pauses at the cap and waits for its worker's event
    for c in clients:
        r = c.read_response()
        assert r.status == 200 and r.body_len == size and r.sha256 == origin.payload.sha256, r
    assert peers.wait_for(lambda: not ctl(k, "conn", "list"), 5), ctl(k, "conn", "list")
    # The master read the ring and passed each event to the worker whose flow it names.
    for w in (1, 2):
        assert f"kfwd worker {w} debug: sockmap event from the master: flow 0x{w:02x}" in k.stderr
    m = k.metrics()
    # A body whose source never paused during the hand-over splices (start fallback): rare at
    # this pace, not rare under ASan.
    assert m["kfwd_sockmap_responses_total"] + m["kfwd_sockmap_start_fallbacks_total"] >= n
    assert m["kfwd_sockmap_responses_total"] >= 2
    assert m['kfwd_bytes_sockmap_total{direction="response"}'] > 0
    k.send_signal(signal.SIGTERM)
    assert k.wait(10) == 0, k.stderr
    assert not pin_dir.exists(), "the master left its pins"


def test_workers_one_is_one_process(kfwd, peer, tmp_path):
    origin = peer(peers.EchoUpload())
    k = start(kfwd, tmp_path, f"upstream up {origin.addr}\nroute / up\n", workers=1)
    conns, statuses = open_kept(k.port, 4)
    assert statuses == [200] * 4
    listed = ctl(k, "conn", "list")
    assert len(listed) == 4 and all("worker" not in c.get("details", {}) for c in listed)
    children = Path(f"/proc/{k.pid}/task/{k.pid}/children").read_text().split()
    assert children == []
    for c in conns:
        c.close()


@pytest.mark.parametrize(
    "line,message",
    [
        ("workers 0", "usage: workers N|auto"),
        ("workers many", "usage: workers N|auto"),
        ("workers 65", "usage: workers N|auto"),
        ("workers 2\nupgrade-socket /run/kfwd-test.upgrade", "needs workers 1"),
    ],
)
def test_bad_workers_refused(tmp_path, line, message):
    conf = tmp_path / "k.conf"
    conf.write_text(f"listen 127.0.0.1:{peers.free_port()}\nroute / url-embedded\n{line}\n")
    p = subprocess.run([str(KFWD), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert p.returncode != 0
    assert f"{conf}:3:" in p.stderr and message in p.stderr, p.stderr


def test_workers_auto_is_accepted(tmp_path):
    conf = tmp_path / "k.conf"
    conf.write_text(f"listen 127.0.0.1:{peers.free_port()}\nroute / url-embedded\nworkers auto\n")
    p = subprocess.run([str(KFWD), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
