"""The sockmap data path's lifecycle and observability: a clean restart after SIGKILL with the
same pin dir, the pinned maps readable with bpftool (counters move), and the fallback to splice
when BPF is not allowed.

Every test starts kfwd through the env fixture (conftest.py, peers_sockmap.Env): a pin dir of its
own under /sys/fs/bpf for the sockmap data path, removed at teardown; peers from
tests/peers_tunnel.py on 127.0.0.1. Measured numbers go to build/tunnel_measurements.json."""

import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

import peers
import peers_tunnel as pt
from conftest import KFWD_BIN, Kfwd
from peers import KiB, MiB, Payload, mdelta
from peers_sockmap import FLOWS, MEASURE, PIN_NAMES, SPL_RESP, TUNNELS, assert_sockmap_flow_metrics, bpftool, bpftool_exists, dirs_dump, log_problems, pinned_ids, verdict_progs_attached, wait_idle, wait_log


@pytest.mark.timeout(90)
def test_sockmap_sigkill_restart_same_pin_dir(env, peer):
    p = peer(peers.CountingSender(size=256 * MiB))
    k1 = env.start("sockmap")
    pin = k1.pin
    maps1, prog1 = pinned_ids(pin)
    assert verdict_progs_attached(Path(pin) / "kfwd_socks") == [prog1]
    c = pt.TunnelHttpConn(k1.port, p.port, timeout=10)
    c.request("GET", "/big")
    _, status, _, _ = c.read_head()
    assert status == 200
    c.read_length_body_into(bytearray(8 * MiB))
    k1.send_signal(signal.SIGKILL)
    assert k1.wait(10) == -signal.SIGKILL
    # the client's tunnel ends (kernel closes kfwd's sockets)
    c.settimeout(10)
    try:
        while c.stream.read_some(MiB):
            pass
    except (OSError, socket.timeout):
        pass
    c.close()
    # what the crash left: pins, and the program still attached to the pinned sockhash
    assert sorted(os.listdir(pin)) == PIN_NAMES, os.listdir(pin)
    assert verdict_progs_attached(Path(pin) / "kfwd_socks") == [prog1], "setup: no stale attachment to clean"

    k2 = env.start("sockmap", pin=pin)
    assert not log_problems(k2.stderr), f"restart after SIGKILL logged problems:\n{k2.stderr}"
    assert sorted(os.listdir(pin)) == PIN_NAMES, os.listdir(pin)
    maps2, prog2 = pinned_ids(pin)
    attached = verdict_progs_attached(Path(pin) / "kfwd_socks")
    assert attached == [prog2], f"programs attached to the new sockhash: {attached}, pinned program {prog2}"
    assert prog2 != prog1 and maps2["kfwd_socks"] != maps1["kfwd_socks"]
    assert not bpftool_exists("prog", prog1), f"the crashed run's program {prog1} still exists"
    for name, mid in maps1.items():
        assert not bpftool_exists("map", mid), f"the crashed run's map {name} (id {mid}) still exists"
    ours = set(maps1.values()) | set(maps2.values())
    verdicts = [q["id"] for q in bpftool("prog", "show") if q.get("name") == "kfwd_verdict" and ours & set(q.get("map_ids", []))]
    assert verdicts == [prog2], f"kfwd_verdict programs using this pin dir's maps: {verdicts}"
    # a new tunnel works, through the sockmap
    m0 = k2.metrics()
    c = pt.TunnelHttpConn(k2.port, p.port, timeout=30)
    c.request("GET", "/bytes/33554432")
    r = c.read_response(read_size=MiB)
    assert r.status == 200 and r.complete and r.body_len == 32 * MiB, r
    assert r.sha256 == Payload(32 * MiB, seed=p.payload.seed).sha256
    c.close()
    wait_idle(k2)
    assert_sockmap_flow_metrics(k2, m0, k2.metrics())


@pytest.mark.timeout(60)
def test_sockmap_bpftool_dump_counters_move(env, nginx):
    f = nginx.files["30m"]
    k = env.start("sockmap", extra=["sockmap-cap 2m"])
    pin = k.pin
    assert dirs_dump(pin) == {}, "kfwd_dirs not empty before any tunnel"
    c = pt.TunnelHttpConn(k.port, nginx.port, timeout=30)
    c.request("GET", f.url)
    res = {}

    def reader():
        def pace(i):
            time.sleep(0.004)

        res["r"] = c.read_response(read_size=64 * KiB, pace=pace)

    def bytes_moved(d):
        return sum(v["redirected"] + v["passed"] for v in d.values())

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    # two samples of the flow while the paced download runs, its counters apart
    d1 = peers.wait_for(lambda: (lambda d: d if len(d) == 2 and bytes_moved(d) else None)(dirs_dump(pin)), 10)
    assert d1, f"the flow's two directions with bytes moved never showed in kfwd_dirs: {dirs_dump(pin)}"
    d2 = peers.wait_for(lambda: (lambda d: d if bytes_moved(d) > bytes_moved(d1) else None)(dirs_dump(pin)), 10)
    assert d2, f"kfwd_dirs counters did not move in 10 s: {d1}"
    t.join(45)
    assert "r" in res, "download did not finish"
    r = res["r"]
    assert r.status == 200 and r.complete and r.body_len == f.size and r.sha256 == f.sha256, r
    print(f"kfwd_dirs sample 1: {d1}\nsample 2: {d2}")
    for d in (d1, d2):
        assert len(d) == 2, f"expected the two directions of one flow in kfwd_dirs: {d}"
        a, b = d.values()
        for v in (a, b):
            for field in ("flow_id", "src_cookie", "dst_cookie", "cap", "redirected", "passed", "user_written",
                          "state", "pause_count", "resume_count", "gaps"):
                assert field in v, f"field {field} missing in {v}"
            assert v["cap"] == 2 * MiB, f"cap {v['cap']} != sockmap-cap 2m"
            assert v["state"] in ("KFWD_REDIRECT", "KFWD_PASS"), v["state"]
            assert v["gaps"] == 0, f"the program saw a sequence gap: {v}"
            assert v["pause_count"] >= 1
        assert a["flow_id"] == b["flow_id"]
        assert a["src_cookie"] == b["dst_cookie"] and b["src_cookie"] == a["dst_cookie"]
    assert set(d1) == set(d2), "the flow's keys changed between samples"
    moved = {key: (d2[key]["redirected"] + d2[key]["passed"]) - (d1[key]["redirected"] + d1[key]["passed"]) for key in d1}
    down = max(d1, key=lambda key: d2[key]["redirected"] + d2[key]["passed"])
    assert moved[down] > 0, f"the download direction's counters did not move: {d1[down]} -> {d2[down]}"
    c.close()
    wait_idle(k)
    assert peers.wait_for(lambda: dirs_dump(pin) == {}, 5), f"kfwd_dirs not emptied after the tunnel: {dirs_dump(pin)}"


@pytest.mark.timeout(60)
def test_sockmap_fallback_without_bpf_capabilities(env, nginx):
    """kfwd started without CAP_BPF/SYS_ADMIN/PERFMON/NET_ADMIN and `data-path sockmap`: says once
    why the sockmap is unavailable, and a CONNECT tunnel works through splice."""
    pin = env.pin_dir()
    port, mport = peers.free_port(), peers.free_port()
    cfg = env.tmp_path / "nobpf.conf"
    cfg.write_text(
        f"listen 127.0.0.1:{port}\nmetrics-listen 127.0.0.1:{mport}\ndrain-timeout 5s\n"
        + env.config("sockmap", pin) + "\n"
    )
    argv = [
        "setpriv", "--bounding-set=-bpf,-sys_admin,-perfmon,-net_admin", "--inh-caps=-all",
        str(KFWD_BIN), "-c", str(cfg),
    ]
    k = Kfwd(argv, env.tmp_path / "nobpf.log", port, mport, cfg)
    env.own.append(k)
    k.wait_ready()
    wait_log(k, r"kfwd running")
    with open(f"/proc/{k.pid}/status") as st:
        capeff = int(next(ln for ln in st if ln.startswith("CapEff:")).split()[1], 16)
    assert not capeff & (1 << 39), "setup: kfwd still has CAP_BPF"
    f = nginx.files["8m"]
    m0 = k.metrics()
    c = pt.TunnelHttpConn(k.port, nginx.port, timeout=30)
    for _ in range(2):
        c.request("GET", f.url)
        r = c.read_response(read_size=MiB)
        assert r.status == 200 and r.complete and r.sha256 == f.sha256, r
    c.close()
    wait_idle(k)
    m1 = k.metrics()
    log = k.stderr
    lines = [ln for ln in log.splitlines() if "sockmap data path unavailable" in ln]
    assert len(lines) == 1, f"expected the unavailable line once:\n{log}"
    m = re.search(r"sockmap data path unavailable \((.+)\): tunnels use splice", lines[0])
    assert m and m.group(1).strip(), f"no reason given: {lines[0]}"
    assert "sockmap data path ready" not in log
    assert mdelta(m1, m0, TUNNELS) == 1
    assert mdelta(m1, m0, FLOWS) == 0, "a tunnel went to a sockmap that could not be loaded"
    moved = {key: mdelta(m1, m0, key) for key in m1 if key.startswith(("kfwd_bytes_", "kfwd_pipe"))}
    assert mdelta(m1, m0, SPL_RESP) >= 2 * f.size, f"{SPL_RESP} grew by {mdelta(m1, m0, SPL_RESP)}: {moved}"
    assert k.alive()
    MEASURE["fallback_reason"] = m.group(1)
