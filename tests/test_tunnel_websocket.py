"""WebSocket tunnels (Upgrade/101) in the splice and the sockmap data paths: python3-websockets
client and server 200 MB each way at once, byte-exact, and a route's data-path mode taking
precedence over the global one.

Every test starts kfwd through the env fixture (conftest.py, peers_sockmap.Env): a pin dir of its
own under /sys/fs/bpf for the sockmap data path, removed at teardown; peers from
tests/peers_tunnel.py on 127.0.0.1. Measured numbers go to build/tunnel_measurements.json."""

import time

import pytest

import peers_tunnel as pt
from peers import Payload, mdelta
from peers_sockmap import CP_REQ, CP_RESP, FLOWS, MB, MEASURE, MODES, SM_REQ, SM_RESP, SPL_REQ, SPL_RESP, TUNNELS, assert_sockmap_flow_metrics, log_problems, wait_idle, wait_log


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(120)
def test_websocket_200mb_each_way(env, mode):
    """python3-websockets client and server through a url-embedded route: 200 MB each way at
    once, byte-exact, clean close; metrics say which path carried the tunnel."""
    N = 200 * MB
    ws = pt.WsServerProcess(N, seed=31)
    env.procs.append(ws)
    k = env.start(mode)
    m0 = k.metrics()
    t0 = time.monotonic()
    r = pt.ws_client(f"ws://127.0.0.1:{k.port}/http/127.0.0.1:{ws.port}/ws", Payload(N, seed=32), N, 90)
    dt = time.monotonic() - t0
    srv = ws.result(30)
    MEASURE[f"websocket_{mode}_MBps_each_way"] = round(N / MB / dt, 1)
    assert r["sent"] == N
    assert r["received"] == N, f"client received {r['received']} of {N} bytes"
    assert r["sha256"] == Payload(N, seed=31).sha256, "server->client bytes corrupted"
    assert r["close_code"] == 1000, r
    assert srv is not None, f"ws-server reported nothing; kfwd log:\n{k.stderr[-3000:]}"
    assert srv["error"] is None, srv
    assert srv["received"] == N, f"server received {srv['received']} of {N} bytes"
    assert srv["sha256"] == Payload(N, seed=32).sha256, "client->server bytes corrupted"
    wait_idle(k)
    m1 = k.metrics()
    assert mdelta(m1, m0, TUNNELS) == 1
    if mode == "sockmap":
        kernel = mdelta(m1, m0, SM_REQ) + mdelta(m1, m0, SM_RESP)
        MEASURE["websocket_sockmap_fraction_in_kernel"] = round(kernel / (2 * N), 3)
        # per direction only "> 0 in total": the server starts sending the moment it wrote the
        # 101, racing the flow's first resume (see test_sockmap_redirects_again_after_a_cap_pause)
        assert_sockmap_flow_metrics(k, m0, m1, req_min=0, resp_min=0)
        assert kernel > 0, "no byte of the WebSocket tunnel was redirected in the kernel"
    else:
        assert mdelta(m1, m0, FLOWS) == 0
        assert mdelta(m1, m0, SM_REQ) == 0 and mdelta(m1, m0, SM_RESP) == 0
        # Bytes that arrived together with a head are copied, the rest spliced.
        for spl, cp in ((SPL_REQ, CP_REQ),
                        (SPL_RESP, CP_RESP)):
            assert mdelta(m1, m0, spl) + mdelta(m1, m0, cp) >= N, (spl, mdelta(m1, m0, spl))
            assert mdelta(m1, m0, spl) >= N * 0.99, (spl, mdelta(m1, m0, spl))
    assert not log_problems(k.stderr), k.stderr


@pytest.mark.timeout(60)
def test_websocket_route_mode_overrides_data_path(env):
    """Global data-path splice, route mode=sockmap: that route's WebSocket goes through the
    sockmap; a route without mode= stays on splice."""
    N = 8 * MB
    ws = pt.WsServerProcess(N, seed=33)
    env.procs.append(ws)
    pin = env.pin_dir()
    k = env._kfwd(
        "\n".join([
            "allow 127.0.0.0/8",
            "route /sm/ url-embedded mode=sockmap",
            "route /sp/ url-embedded",
            "data-path splice",
            f"bpf-pin-dir {pin}",
        ])
    )
    wait_log(k, r"kfwd running")
    assert "sockmap data path ready" in k.stderr, k.stderr
    for prefix, flows in (("sm", 1), ("sp", 0)):
        m0 = k.metrics()
        r = pt.ws_client(f"ws://127.0.0.1:{k.port}/{prefix}/127.0.0.1:{ws.port}/ws", Payload(N, seed=34), N, 30)
        srv = ws.result(20)
        assert r["received"] == N and r["sha256"] == Payload(N, seed=33).sha256, (prefix, r)
        assert srv and srv["received"] == N and srv["sha256"] == Payload(N, seed=34).sha256, (prefix, srv)
        wait_idle(k)
        m1 = k.metrics()
        assert mdelta(m1, m0, TUNNELS) == 1
        assert mdelta(m1, m0, FLOWS) == flows, f"route /{prefix}/: {FLOWS} grew by {mdelta(m1, m0, FLOWS)}"
