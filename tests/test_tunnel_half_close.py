"""Half-close through CONNECT tunnels in the splice and the sockmap data paths: the client's FIN
first, the upstream's FIN first while the client still sends, and both sides half-closed before
the client reads; every byte arrives, then EOF, never a reset.

Every test starts kfwd through the env fixture (conftest.py, peers_sockmap.Env): a pin dir of its
own under /sys/fs/bpf for the sockmap data path, removed at teardown; peers from
tests/peers_tunnel.py on 127.0.0.1."""

import hashlib
import socket
import threading
import time

import pytest

import peers_tunnel as pt
from peers import KiB, MiB, Payload
from peers_sockmap import MODES, tunnel_diagnostics, wait_idle


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(60)
def test_connect_half_close_client_first(env, peer, mode):
    """Client sends N bytes then SHUT_WR; the peer reads to EOF, answers the sha and closes:
    the client gets the answer, then EOF."""
    N = 32 * MiB + 12345
    p = peer(pt.ShaAfterEof())
    k = env.start(mode)
    body = Payload(N, seed=43)
    s, rest = env.tunnel(k, p.port)
    assert rest == b""
    for piece in body.pieces():
        s.sendall(piece)
    s.shutdown(socket.SHUT_WR)
    s.settimeout(20)
    data = bytearray()
    reset = False
    while True:
        try:
            d = s.recv(65536)
        except ConnectionResetError:
            reset = True
            break
        except socket.timeout:
            pytest.fail(f"no EOF within 20 s after the answer {bytes(data)!r}; peer results {p.results}\n{k.stderr[-3000:]}")
        if not d:
            break
        data += d
    assert p.results == [(N, body.sha256)], f"peer got {p.results}, expected {N} bytes {body.sha256}"
    assert bytes(data) == f"{N} {body.sha256}\n".encode(), f"client got {bytes(data)!r}"
    assert not reset, "the tunnel ended with a reset instead of a FIN"
    s.close()
    wait_idle(k)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(90)
def test_connect_half_close_upstream_first(env, peer, mode):
    """The peer sends 8 MiB and half-closes at once while the client is still sending 16 MiB
    (256 KiB every 10 ms): the client sees every byte then EOF, keeps sending, and the peer gets
    all 16 MiB. 8 rounds (a new tunnel each) on one kfwd: the end of a tunnel is where races
    live."""
    down = 8 * MiB + 777
    up = Payload(16 * MiB, seed=45)
    p = peer(pt.SendThenRead(down, seed=47))
    k = env.start(mode)
    for rnd in range(8):
        p.done.clear()
        p.sent_all.clear()
        s, rest = env.tunnel(k, p.port)
        state = {}

        def sender():
            try:
                for piece in up.pieces(256 * KiB):
                    s.sendall(piece)
                    time.sleep(0.01)
                state["sent_at"] = time.monotonic()
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                state["send_error"] = e

        t = threading.Thread(target=sender, daemon=True)
        t.start()
        s.settimeout(10)
        h = hashlib.sha256(rest)
        total, sha, end = pt.read_to_eof(s, hasher=h)
        total += len(rest)
        eof_at = time.monotonic()
        if end == "timeout":
            pytest.fail(
                f"{mode}, round {rnd}: no EOF 10 s after the upstream half-closed: client got {total} of {down} "
                f"bytes; peer sent all + FIN: {p.sent_all.is_set()}, client sender state {state}\n"
                + tunnel_diagnostics(k)
            )
        t.join(20)
        assert "send_error" not in state, f"round {rnd}: client could not keep sending after the upstream's FIN: {state}"
        assert end == "eof", f"round {rnd}: client got a {end} instead of EOF"
        assert total == down and sha == p.payload.sha256, (
            f"round {rnd}: client got {total} of {down} bytes (sha ok: {sha == p.payload.sha256})"
        )
        assert state.get("sent_at", 0) > eof_at, (
            f"round {rnd}: the client got EOF {eof_at - p.fin_at:.3f} s after the peer's FIN, "
            f"{eof_at - state.get('sent_at', 0):.3f} s after it had sent everything"
        )
        assert p.done.wait(10), f"round {rnd}: peer never saw the client's EOF\n{tunnel_diagnostics(k)}"
        assert p.received[-1][:2] == (up.size, up.sha256), f"round {rnd}: peer got {p.received[-1]}, expected {up.size}"
        s.close()
        wait_idle(k)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.timeout(60)
def test_connect_both_half_closed_before_client_reads(env, peer, mode):
    """Deterministic form of the race above: the peer sends 640 KiB and half-closes; the client,
    not reading yet, sends 1 MiB and half-closes; the peer reads to EOF and closes. Only then
    does the client read: it must get every byte, then EOF. Both FINs have crossed kfwd while
    the bytes still wait inside it (small client buffers; the pipe holds them for splice; for the
    sockmap, an 8 MiB cap, whose source window in pass mode (an eighth of the cap, 1 MiB) holds
    the 640 KiB even while a resume round waits for a client that reads nothing: at a 1 MiB cap
    the window is 128 KiB, and whether the peer's FIN crosses depended on the round's timing —
    it did not under ASan)."""
    down = 640 * KiB + 999
    up = Payload(MiB, seed=49)
    p = peer(pt.SendThenRead(down, seed=51, wait_acked=10))
    # kfwd holds the 640 KiB for a client that reads nothing: no max-memory floor allowance
    k = env.start(mode, extra=["sockmap-cap 8m", "client-sndbuf 64k", "max-memory 0"])
    s, rest = env.tunnel(k, p.port, rcvbuf=16 * KiB)
    assert p.sent_all.wait(15) and p.acked, "setup: kfwd did not take the peer's bytes and FIN"
    for piece in up.pieces():
        s.sendall(piece)
    s.shutdown(socket.SHUT_WR)
    assert p.done.wait(10), f"peer never saw the client's EOF\n{tunnel_diagnostics(k)}"
    assert p.received[0][:2] == (up.size, up.sha256), f"peer got {p.received}"
    time.sleep(0.3)
    s.settimeout(10)
    total, sha, end = pt.read_to_eof(s, hasher=hashlib.sha256(rest))
    total += len(rest)
    assert end == "eof" and total == down, (
        f"{mode}: after both half-closes the client got {total} of {down} bytes, then {end}\n"
        + (tunnel_diagnostics(k) if end == "timeout" else "")
    )
    assert sha == p.payload.sha256
    s.close()
    wait_idle(k)
