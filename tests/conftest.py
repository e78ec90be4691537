"""pytest harness for kfwd.

Fixtures
  free_port()              -> a free 127.0.0.1 TCP port (function)
  kfwd(config, ...)        -> start build/kfwd with a config written to tmp_path; returns a Kfwd
  nginx                    -> session nginx serving generated files of known sha256
  upload_file              -> session 100 MiB file of known sha256 (for uploads)
  peer(PeerInstance)       -> starts a tests/peers.py server, stopped at teardown
  mini_nginx(ident)        -> a private nginx process (peers_http.MiniNginx), stopped at teardown
  ctl_dir                  -> a 0755 directory in /run for ctl-socket-file (readable by non-root)
  env                      -> peers_sockmap.Env: kfwd for the tunnel and sockmap suites, a pin dir
                              of its own each, removed after kfwd stopped

Per-test time limit: SIGALRM, 120 s by default, @pytest.mark.timeout(N) to change it.
Strict mode: KFWD_TEST_STRICT=1 turns every skipped test into a failure.
"""

import faulthandler
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402
from peers_http import MiniNginx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KFWD_BIN = Path(os.environ.get("KFWD_BIN") or ROOT / "build" / "kfwd")  # override: env KFWD_BIN
KFWDCTL_BIN = Path(os.environ.get("KFWDCTL_BIN") or ROOT / "build" / "kfwdctl")  # override: env KFWDCTL_BIN
STRICT = os.environ.get("KFWD_TEST_STRICT") == "1"
# make test SANITIZE=1: KFWD_BIN is an ASan+UBSan build; any report in kfwd's output fails the test.
SANITIZE = os.environ.get("KFWD_SANITIZE") == "1"
SANITIZER_REPORT = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:")
# Under the sanitizers, bounds on kfwd's RSS growth are multiplied by SAN (shadow memory, the
# quarantine, redzones) and bounds on its CPU time, latency and exit time by SAN_CPU.
SAN = 8 if SANITIZE else 1
SAN_CPU = 3 if SANITIZE else 1

DEFAULT_TIMEOUT = 120.0
SETUP_TIMEOUT = 300.0  # setup may generate the session's files
TEARDOWN_TIMEOUT = 60.0

MiB = 1 << 20
KiB = 1 << 10


# --------------------------------------------------------------------------- markers, timeout, strict


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test time limit for the call phase (SIGALRM)")
    config.addinivalue_line("markers", "slow(reason): a test that is long on purpose")


class TestTimeout(Exception):
    __test__ = False


def _timeout_for(item):
    m = item.get_closest_marker("timeout")
    if m and m.args:
        return float(m.args[0])
    return DEFAULT_TIMEOUT


class _Alarm:
    def __init__(self, seconds, what):
        self.seconds = seconds
        self.what = what

    def _fire(self, signum, frame):
        sys.stderr.write(f"\n*** {self.what}: time limit of {self.seconds:g} s reached; thread stacks:\n")
        faulthandler.dump_traceback(all_threads=True)
        raise TestTimeout(f"{self.what} exceeded its time limit of {self.seconds:g} s")

    def __enter__(self):
        self.old = signal.signal(signal.SIGALRM, self._fire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def __exit__(self, *a):
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _Alarm(SETUP_TIMEOUT, f"setup of {item.nodeid}"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    with _Alarm(_timeout_for(item), item.nodeid):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    with _Alarm(TEARDOWN_TIMEOUT, f"teardown of {item.nodeid}"):
        yield


def _skip_reason(longrepr):
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if STRICT and rep.skipped and not hasattr(rep, "wasxfail"):
        rep.outcome = "failed"
        rep.longrepr = f"KFWD_TEST_STRICT=1: a skipped test is a failure. {_skip_reason(rep.longrepr)}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    rep = outcome.get_result()
    if STRICT and rep.skipped:
        rep.outcome = "failed"
        rep.longrepr = f"KFWD_TEST_STRICT=1: a skipped module is a failure. {_skip_reason(rep.longrepr)}"


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    peers.close_all_clients()


# --------------------------------------------------------------------------- small fixtures


@pytest.fixture
def free_port():
    return peers.free_port


@pytest.fixture
def peer():
    """peer(peers.EchoUpload(...)) starts it and stops it at teardown."""
    started = []

    def start(p):
        p.start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


# --------------------------------------------------------------------------- kfwd


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def check_config(tmp_path, text):
    """`kfwd -t` on @text written to tmp_path/k.conf: (exit status, stderr stripped, the path)."""
    conf = tmp_path / "k.conf"
    conf.write_text(text)
    p = subprocess.run([str(KFWD_BIN), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=20)
    return p.returncode, p.stderr.strip(), str(conf)


def parse_metrics(text):
    """Prometheus text exposition -> {'name{l1="v1",l2="v2"}': number}, labels in the order
    they appear, no spaces; samples without labels keyed by bare name."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"unparsable metrics line: {line!r}")
        name, _, labels, value = m.group(1), m.group(2), m.group(3), m.group(4)
        key = name
        if labels is not None and labels.strip():
            pairs = _LABEL.findall(labels)
            key = name + "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "}"
        v = float(value)
        out[key] = int(v) if v.is_integer() else v
    return out


class Kfwd:
    """A running build/kfwd."""

    def __init__(self, argv, log_path, port, metrics_port=None, config_path=None, listen_ports=()):
        self.argv = argv
        self.log_path = log_path
        self.port = port
        self.metrics_port = metrics_port
        self.config_path = config_path
        self.listen_ports = list(listen_ports) or [port]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.stopped_by_test = False
        self.exit_status = None

    # ---- state
    @property
    def stderr(self):
        if not self._log.closed:
            self._log.flush()
        return Path(self.log_path).read_text(errors="replace")

    @property
    def returncode(self):
        return self.proc.poll()

    def alive(self):
        return self.proc.poll() is None

    def _status(self, field):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field}")

    def rss_kb(self):
        return self._status("VmRSS")

    def voluntary_switches(self):
        """Times kfwd slept (waited in epoll_wait, mostly): its wake-ups."""
        return self._status("voluntary_ctxt_switches")

    def fd_count(self):
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def settled_fd_count(self, quiet=0.3, limit=5.0):
        """kfwd's fd count once it has not changed for `quiet` seconds: a connection the test
        just closed (a metrics request, the readiness probe) is closed by kfwd only after it
        reads the EOF, so a count taken at once can include it."""
        deadline = time.monotonic() + limit
        last, since = self.fd_count(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.05)
            n = self.fd_count()
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= quiet:
                break
        return last

    # ---- metrics
    def metrics_text(self):
        assert self.metrics_port, "this kfwd has no metrics-listen"
        with peers.HttpConn(self.metrics_port, timeout=10) as c:
            c.request("GET", "/metrics", [("Connection", "close")])
            r = c.read_response(keep_body=True)
        assert r.status == 200, f"metrics endpoint answered {r.status}"
        return r.body.decode()

    def metrics(self):
        return parse_metrics(self.metrics_text())

    def metric(self, key, default=None):
        return self.metrics().get(key, default)

    # ---- control socket
    def ctl(self, *args):
        """`kfwdctl ARGS` against this kfwd (through the file its control socket is published
        in); asserts exit 0 and returns stdout."""
        m = re.search(r"published in (\S+)", self.stderr)
        assert m, "kfwd did not publish its control socket"
        p = subprocess.run([str(KFWDCTL_BIN), "-f", m.group(1), *args], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0, f"kfwdctl {' '.join(args)}: exit {p.returncode}\n{p.stderr}"
        return p.stdout

    def ctl_json(self, *args):
        return json.loads(self.ctl("-j", *args))

    # ---- lifecycle
    def wait_ready(self, timeout=10.0):
        ports = list(self.listen_ports) + ([self.metrics_port] if self.metrics_port else [])
        peers.wait_accepting(self.proc, ports, timeout, "kfwd", lambda: self.stderr, AssertionError)
        return self

    def send_signal(self, sig):
        self.stopped_by_test = True
        self.proc.send_signal(sig)

    def wait(self, timeout):
        try:
            self.exit_status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.exit_status

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signal by PID, wait up to timeout, then SIGKILL. Returns the exit status
        (negative = killed by that signal) and whether SIGKILL was needed."""
        killed = False
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                killed = True
        self.exit_status = self.proc.returncode
        self._log.close()
        return self.exit_status, killed


@pytest.fixture
def kfwd(tmp_path, request):
    """Factory: kfwd(config_text=None, *, args=(), metrics=True, defaults=True, wait=True).

    config_text: directives (dedented). Unless it already has them, `listen 127.0.0.1:<free>`,
    `metrics-listen 127.0.0.1:<free>` (metrics=True) and `drain-timeout 5s` are added.
    config_text=None runs kfwd without -c (embedded default config) with `-l 127.0.0.1:<free>`
    unless args has -l (or auto_listen=False: no -l, expects 127.0.0.1:8080).
    Returns a Kfwd that accepts connections (wait=False: just started).
    At teardown: client sockets closed, SIGTERM, 10 s, SIGKILL. The test errors if kfwd died
    on its own during the test, or did not exit 0 on SIGTERM."""
    started = []
    counter = [0]

    def start(config_text=None, *, args=(), metrics=True, defaults=True, wait=True, auto_listen=True):
        if not KFWD_BIN.exists():
            pytest.fail(f"{KFWD_BIN} does not exist (run `make`)")
        counter[0] += 1
        n = counter[0]
        argv = [str(KFWD_BIN)]
        port = metrics_port = config_path = None
        listen_ports = []
        if config_text is not None:
            text = textwrap.dedent(config_text).strip("\n") + "\n"
            directives = {ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")}
            head = []
            if "listen" not in directives:
                port = peers.free_port()
                head.append(f"listen 127.0.0.1:{port}")
            if metrics and "metrics-listen" not in directives:
                metrics_port = peers.free_port()
                head.append(f"metrics-listen 127.0.0.1:{metrics_port}")
            if defaults and "drain-timeout" not in directives:
                head.append("drain-timeout 5s")
            # Each instance publishes its control socket in its own file, not /run/kfwd/ctl.
            if defaults and "ctl-socket-file" not in directives:
                head.append(f"ctl-socket-file {tmp_path}/ctl{n}")
            text = "\n".join(head) + ("\n" if head else "") + text
            for ln in text.splitlines():
                f = ln.split()
                if f and f[0] == "listen":
                    listen_ports.append(int(f[1].rsplit(":", 1)[1]))
                if f and f[0] == "metrics-listen":
                    metrics_port = int(f[1].rsplit(":", 1)[1])
            port = port or listen_ports[0]
            config_path = tmp_path / f"kfwd{n}.conf"
            config_path.write_text(text)
            argv += ["-c", str(config_path)]
        elif not auto_listen:
            listen_ports = [8080]  # the embedded default
            port = 8080
        else:
            if "-l" not in args:
                port = peers.free_port()
                argv += ["-l", f"127.0.0.1:{port}"]
                listen_ports.append(port)
            else:
                a = list(args)
                for i, x in enumerate(a):
                    if x == "-l":
                        listen_ports.append(int(a[i + 1].rsplit(":", 1)[1]))
                port = listen_ports[0]
        argv += list(args)
        k = Kfwd(argv, tmp_path / f"kfwd{n}.log", port, metrics_port, config_path, listen_ports)
        started.append(k)
        if wait:
            k.wait_ready()
        return k

    yield start

    peers.close_all_clients()
    problems = []
    for k in started:
        died = k.proc.poll() is not None and not k.stopped_by_test
        status, killed = k.stop()
        log = k.stderr
        tail = "\n".join(log.splitlines()[-60:])
        print(f"---- kfwd pid {k.pid} argv {k.argv} exit {status} (stderr tail) ----\n{tail}")
        if k.config_path:
            print(f"---- config ----\n{Path(k.config_path).read_text()}")
        reports = [ln for ln in log.splitlines() if SANITIZER_REPORT.search(ln)]
        if reports:
            problems.append(f"kfwd pid {k.pid}: {len(reports)} sanitizer report(s): {reports[0]}")
        if died:
            problems.append(f"kfwd pid {k.pid} died during the test with status {status}")
        elif killed:
            problems.append(f"kfwd pid {k.pid} did not exit within 10 s of SIGTERM (SIGKILLed)")
        elif not k.stopped_by_test and status != 0:
            problems.append(f"kfwd pid {k.pid} exited {status} on SIGTERM (expected 0)")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


# --------------------------------------------------------------------------- generated files, nginx


class FileInfo:
    def __init__(self, name, path, size, sha256):
        self.name = name
        self.path = Path(path)
        self.size = size
        self.sha256 = sha256
        self.url = f"/files/{name}"

    def read(self):
        return self.path.read_bytes()

    def __repr__(self):
        return f"<file {self.name} {self.size} {self.sha256[:12]}>"


def make_file(path, size):
    """Random file of `size` bytes written in 1 MiB blocks; returns sha256 hex."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            b = os.urandom(min(MiB, left))
            f.write(b)
            h.update(b)
            left -= len(b)
    return h.hexdigest()


FILES = {
    "256m": 256 * MiB,
    "30m": 30_000_000,
    "8m": 8 * MiB,
    "2m": 2 * MiB,
    "100k": 100 * KiB,
    "1k": 1 * KiB,
}


@pytest.fixture(scope="session")
def files_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    out = {}
    for name, size in FILES.items():
        p = d / name
        out[name] = FileInfo(name, p, size, make_file(p, size))
    return out


@pytest.fixture(scope="session")
def upload_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("upload")
    p = d / "upload.bin"
    return FileInfo("upload", p, 100 * MiB, make_file(p, 100 * MiB))


class Nginx(peers.NginxProcess):
    """The suite's nginx origin: files_dir under /files/, /204, /304 and /ok, on two ports (the
    second with sndbuf=256k on accepted sockets)."""

    def __init__(self, prefix, files):
        self.files = files
        self.port = peers.free_port()
        self.port_small_sndbuf = peers.free_port()  # same content, sndbuf=256k on accepted sockets
        self.addr = f"127.0.0.1:{self.port}"
        self.addr_small_sndbuf = f"127.0.0.1:{self.port_small_sndbuf}"
        root = files["1k"].path.parent
        http = f"""
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{self.port} backlog=4096;
        listen 127.0.0.1:{self.port_small_sndbuf} backlog=4096 sndbuf=256k;
        location /files/ {{ alias {root}/; etag on; }}
        location = /204 {{ return 204; }}
        location = /304 {{ return 304; }}
        location = /ok {{ return 200 "ok\\n"; }}
    }}"""
        super().__init__(prefix, http, (self.port, self.port_small_sndbuf), worker_connections=8192,
                         main="worker_rlimit_nofile 16384;")


@pytest.fixture(scope="session")
def nginx(tmp_path_factory, files_dir):
    n = Nginx(tmp_path_factory.mktemp("nginx"), files_dir)
    yield n
    n.stop()


@pytest.fixture
def mini_nginx(tmp_path):
    started = []

    def start(ident):
        n = MiniNginx(tmp_path / f"nginx-{ident}", ident)
        started.append(n)
        return n

    yield start
    for n in started:
        n.stop()


# --------------------------------------------------------------------------- the control socket


@pytest.fixture
def ctl_dir():
    # tmp_path is 0700: a non-root kfwdctl could not read the file there.
    d = Path(tempfile.mkdtemp(prefix="kfwd-ctl-test-", dir="/run"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------- tunnels and the sockmap


@pytest.fixture
def env(kfwd, tmp_path):
    from peers_sockmap import Env

    e = Env(kfwd, tmp_path)
    yield e
    e.close()
    # kfwd (fixture) is stopped after this fixture's teardown; pins are removed by _pins


@pytest.fixture(autouse=True)
def _pins(request):
    """Set up first: torn down last, after kfwd stopped, removing any pin dir env left."""
    yield
    e = request.node.funcargs.get("env")
    if e:
        from peers_sockmap import remove_pin_dir

        for p in e.pins:
            remove_pin_dir(p)


@pytest.fixture(scope="session", autouse=True)
def _report_measurements():
    """The numbers the tunnel and sockmap tests measured (peers_sockmap.MEASURE), printed and
    written to build/tunnel_measurements.json once the session ends."""
    yield
    measure = getattr(sys.modules.get("peers_sockmap"), "MEASURE", None)
    if not measure:
        return
    text = json.dumps(measure, indent=2, sort_keys=True)
    print(f"\n---- tunnel measurements ----\n{text}")
    try:
        out = ROOT / "build" / "tunnel_measurements.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(text + "\n")
    except OSError:
        pass
