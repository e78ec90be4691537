"""Network namespaces for tests: a pair joined by a veth, sockets made inside one of them, and
nftables rules that make a peer vanish. Addresses live only inside the namespaces this module
creates; everything is removed by close() (also after a failure)."""

import ctypes
import os
import socket
import subprocess
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def run(*argv, check=True):
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30, check=check)


class NetnsPair:
    """Namespaces `a` and `b`, veth between them: a has ADDR_A, b has ADDR_B (a /30 that exists
    only inside these two namespaces)."""

    ADDR_A = "10.251.17.1"
    ADDR_B = "10.251.17.2"

    def __init__(self, tag):
        self.a = f"kfwdt-{tag}-a"
        self.b = f"kfwdt-{tag}-b"
        self.veth_a = f"kv{tag}a"[:15]
        self.veth_b = f"kv{tag}b"[:15]
        self.created = []
        try:
            for ns in (self.a, self.b):
                run("ip", "netns", "add", ns)
                self.created.append(ns)
            run("ip", "link", "add", self.veth_a, "netns", self.a, "type", "veth", "peer", "name", self.veth_b,
                "netns", self.b)
            for ns, dev, addr in ((self.a, self.veth_a, self.ADDR_A), (self.b, self.veth_b, self.ADDR_B)):
                run("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", dev)
                run("ip", "-n", ns, "link", "set", dev, "up")
                run("ip", "-n", ns, "link", "set", "lo", "up")
        except Exception:
            self.close()
            raise

    def exec_argv(self, ns):
        return ["ip", "netns", "exec", ns]

    def socket(self, ns, *args):
        """A socket created inside namespace `ns` (usable from any thread afterwards)."""
        out = {}

        def make():
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    out["err"] = OSError(ctypes.get_errno(), "setns")
                    return
                out["sock"] = socket.socket(*args)
            finally:
                os.close(fd)

        t = threading.Thread(target=make)  # setns changes only this thread's namespace
        t.start()
        t.join()
        if "err" in out:
            raise out["err"]
        return out["sock"]

    def vanish(self, ns):
        """Drop every packet in and out of `ns` (its peers see silence, no RST, no FIN)."""
        rules = (
            "table inet kfwdtest_vanish {\n"
            " chain in { type filter hook input priority -300; policy drop; }\n"
            " chain out { type filter hook output priority -300; policy drop; }\n"
            "}\n"
        )
        subprocess.run(self.exec_argv(ns) + ["nft", "-f", "-"], input=rules, text=True, check=True,
                       capture_output=True, timeout=30)

    def established(self, ns, port):
        """Established TCP connections in `ns` with local port `port`."""
        out = run(*self.exec_argv(ns), "ss", "-Htn", "state", "established", f"( sport = :{port} )").stdout
        return [ln for ln in out.splitlines() if ln.strip()]

    def close(self):
        for ns in self.created:
            # the tables die with the namespace; deleting it also removes the veth pair
            run("ip", "netns", "del", ns, check=False)
        self.created = []
