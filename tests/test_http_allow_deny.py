"""allow/deny rules of url-embedded routes: which destinations a client may name, first match
wins, and what kfwd answers (403) for the others.

Upstreams: the Python servers of tests/peers.py and tests/peers_http.py. Everything
listens on 127.0.0.1; every process a test starts is stopped by PID at teardown."""

import pytest

import peers
from peers import mdelta
from peers_http import CONNECTS, REUSES, cfg, echo_json, is_kfwd_answer, nreq, request


ALLOW_DENY_CASES = [
    # (id, rules, {url host: expected status})
    ("default-deny", [], {"127.0.0.1": 403, "localhost": 403}),
    ("bare-address", ["allow 127.0.0.1"], {"127.0.0.1": 200, "localhost": 200}),
    ("first-match-deny", ["deny 127.0.0.1", "allow 127.0.0.0/8"], {"127.0.0.1": 403, "localhost": 403}),
    ("first-match-allow", ["allow 127.0.0.0/8", "deny 127.0.0.1"], {"127.0.0.1": 200, "localhost": 200}),
    ("name-resolved-then-cidr", ["deny 127.0.0.0/8", "allow *"], {"127.0.0.1": 403, "localhost": 403}),
    ("star-after-nothing", ["allow *"], {"127.0.0.1": 200, "localhost": 200}),
    ("deny-star-first", ["deny *", "allow 127.0.0.1"], {"127.0.0.1": 403, "localhost": 403}),
    ("host-pattern-only", ["allow localhost"], {"127.0.0.1": 403, "localhost": 200}),
    ("host-deny-before-cidr", ["deny localhost", "allow 127.0.0.0/8"], {"127.0.0.1": 200, "localhost": 403}),
    ("wildcard-not-suffix-itself", ["allow *.localhost"], {"localhost": 403}),
    ("wildcard-needs-dot", ["deny *.host", "allow *"], {"localhost": 200}),
    ("other-nets", ["allow 10.0.0.0/8", "allow 192.168.0.0/16", "allow ::1/128"], {"127.0.0.1": 403, "localhost": 403}),
    ("cidr-31-in", ["allow 127.0.0.0/31"], {"127.0.0.1": 200}),
    ("cidr-31-out", ["allow 127.0.0.2/31"], {"127.0.0.1": 403}),
    ("cidr-9-in", ["allow 127.0.0.0/9"], {"127.0.0.1": 200, "localhost": 200}),
    ("cidr-9-out", ["allow 127.128.0.0/9"], {"127.0.0.1": 403, "localhost": 403}),
    ("cidr-0", ["deny 0.0.0.0/0", "allow *"], {"127.0.0.1": 403, "localhost": 403}),
]


@pytest.mark.parametrize("rules,expect", [c[1:] for c in ALLOW_DENY_CASES], ids=[c[0] for c in ALLOW_DENY_CASES])
def test_url_embedded_allow_deny(kfwd, peer, rules, expect):
    e = peer(peers.EchoUpload())
    k = kfwd(cfg("route /http/ url-embedded", *rules))
    m0 = k.metrics()
    wrong = []
    for host, status in expect.items():
        before = nreq(e)
        r = request(k.port, "GET", f"/http/{host}:{e.port}/p?q=1")
        reached = nreq(e) - before
        if status == 403:
            if not is_kfwd_answer(r, 403) or reached:
                wrong.append(f"{host}: expected kfwd's 403, got {r.status} {r.body[:80]!r}, upstream saw {reached}")
        else:
            if r.status != 200 or reached != 1 or echo_json(r)["target"] != "/p?q=1":
                wrong.append(f"{host}: expected 200 from the upstream, got {r.status} {r.body[:80]!r}")
    m1 = k.metrics()
    n_allowed = sum(1 for s in expect.values() if s == 200)
    assert not wrong, f"rules {rules}:\n" + "\n".join(wrong) + f"\nkfwd log:\n{k.stderr[-2000:]}"
    # A denied destination is never connected to.
    assert mdelta(m1, m0, CONNECTS) + mdelta(m1, m0, REUSES) == n_allowed
