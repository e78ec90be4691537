"""OpenWrt packaging: the procd init script and the UCI -> kfwd.conf translator.

The real scripts/packaging/openwrt/kfwd.init and uci2conf.sh run under dash, with
tests/openwrt/functions.sh standing in for OpenWrt's /lib/functions.sh (config_load & co.)
and procd's shell API (recorded to a log). Each translation is checked line for line and
by build/kfwd -t (the init script runs it too); one is served by a real kfwd.
"""

import json
import os
import subprocess
import textwrap

import pytest

import peers
from conftest import KFWD_BIN, ROOT

OPENWRT = ROOT / "scripts" / "packaging" / "openwrt"
STAND_IN = ROOT / "tests" / "openwrt" / "functions.sh"
HEADER = "# Generated from /etc/config/kfwd by uci2conf.sh: edit that file, not this one."
CTL_EX_UNREACH = 3
ROUTE = "\nconfig route\n    option prefix '/http/'\n    option target 'url-embedded'\n"


class Box:
    """A pretend router: UCI dir, generated conf, procd log, a kfwdctl stub."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        (tmp_path / "config").mkdir()
        self.conf = tmp_path / "var" / "etc" / "kfwd.conf"
        self.procd = tmp_path / "procd.log"
        self.ctl_log = tmp_path / "ctl.log"
        self.ctl = tmp_path / "kfwdctl"
        self.ctl_status = 0

    def uci(self, text):
        (self.dir / "config" / "kfwd").write_text(textwrap.dedent(text).lstrip("\n"))

    def run(self, verb):
        """Source functions.sh and the init script, call VERB; returns the CompletedProcess."""
        self.ctl.write_text(f'#!/bin/sh\necho "$*" >>"{self.ctl_log}"\nexit {self.ctl_status}\n')
        self.ctl.chmod(0o755)
        script = f"""
            . "{STAND_IN}"
            . "{OPENWRT / 'kfwd.init'}"
            PROG="{KFWD_BIN}" CTL="{self.ctl}" UCI2CONF="{OPENWRT / 'uci2conf.sh'}" CONF="{self.conf}"
            {verb}
        """
        env = dict(os.environ, UCI_CONFIG_DIR=str(self.dir / "config"), PROCD_LOG=str(self.procd))
        return subprocess.run(["dash", "-c", script], capture_output=True, text=True, env=env, timeout=30)

    def procd_log(self):
        return self.procd.read_text().splitlines() if self.procd.exists() else []

    def conf_lines(self):
        return self.conf.read_text().splitlines()


@pytest.fixture
def box(tmp_path):
    return Box(tmp_path)


def kfwd_check(path):
    return subprocess.run([str(KFWD_BIN), "-t", "-c", str(path)], capture_output=True, text=True, timeout=10)


def test_shipped_uci_starts(box):
    port = peers.free_port()
    box.uci((OPENWRT / "kfwd.uci").read_text().replace("192.168.1.1:8080", f"127.0.0.1:{port}"))
    p = box.run("start_service")
    assert p.returncode == 0, p.stderr
    assert box.conf_lines() == [
        HEADER,
        f"listen 127.0.0.1:{port}",
        "data-path splice",
        "max-connections 1024",
        "log-level info",
        "drain-timeout 10s",
        "deny 192.168.1.1/32",
        "allow *",
        "route /http/ url-embedded",
    ]
    assert box.procd_log() == [
        "open_instance",
        f"set_param command {KFWD_BIN} -c {box.conf}",
        "set_param respawn 3600 5 5",
        "set_param stdout 1",
        "set_param stderr 1",
        "set_param limits nofile=65536 65536",
        "close_instance",
    ]
    assert not box.conf.with_name("kfwd.conf.new").exists()
    p = box.run("service_triggers")
    assert box.procd_log()[-1] == "reload_trigger kfwd"


FULL_UCI = """
    config kfwd 'main'
        list listen '127.0.0.1:{port}'
        option connect '1'
        option pipe_size '512k'
        option upstream_max_conns '8'
        option client_timeout '30s'
        option metrics_listen '127.0.0.1:{mport}'
        list allow '10.0.0.0/8'
        list deny '10.1.0.0/16'
        list allow 'example.com'

    config upstream 'nas'
        list server '127.0.0.1:{origin}'

    config upstream
        option name 'cams'
        list servers '127.0.0.1:{origin}'
        list servers '127.0.0.2:{origin}'

    config upstream 'old'
        option enabled '0'

    config route
        option prefix '/nas/'
        option target 'nas'
        option strip_prefix '1'
        option forwarded '0'
        list methods 'GET'
        list methods 'HEAD'
        option retries '2'
        list retry_on 'connect'
        list retry_on '5xx'

    config route 'cams'
        option prefix '/cam/'
        option target 'cams'
        option host '*.cams.lan'
        option mode 'sockmap'
        option idle_timeout '5m'

    config route 'off'
        option enabled '0'
        option prefix '/off/'
        option target 'nas'

    config route 'web'
        option prefix '/http/'
        option target 'url-embedded'
"""


def test_full_translation_serves(box, kfwd, peer):
    origin = peer(peers.EchoUpload())
    port, mport = peers.free_port(), peers.free_port()
    box.uci(FULL_UCI.format(port=port, mport=mport, origin=origin.port))
    p = box.run("start_service")
    assert p.returncode == 0, p.stderr
    assert box.conf_lines() == [
        HEADER,
        f"listen 127.0.0.1:{port}",
        "connect on",
        "pipe-size 512k",
        "upstream-max-conns 8",
        "client-timeout 30s",
        f"metrics-listen 127.0.0.1:{mport}",
        "deny 10.1.0.0/16",
        "allow 10.0.0.0/8",
        "allow example.com",
        f"upstream nas 127.0.0.1:{origin.port}",
        f"upstream cams 127.0.0.1:{origin.port} 127.0.0.2:{origin.port}",
        "route /nas/ nas strip-prefix retries=2 methods=GET,HEAD retry-on=connect,5xx",
        "route /cam/ cams host=*.cams.lan mode=sockmap idle-timeout=5m",
        "route /http/ url-embedded",
    ]
    assert kfwd_check(box.conf).returncode == 0
    # The translation serves: strip-prefix and methods= as written.
    k = kfwd(box.conf.read_text())
    r = peers.get(k.port, "/nas/file?x=1", keep_body=True)
    assert r.status == 200
    assert json.loads(r.body)["target"] == "/file?x=1"
    assert peers.get(k.port, "/nas/file", method="DELETE").status == 405
    assert peers.get(k.port, "/off/file").status == 404


@pytest.mark.parametrize(
    "option, message",
    [
        ("option pipe_size '1'", "pipe-size must be between"),
        ("option no_such_knob '1'", "unknown directive 'no-such-knob'"),
        ("option log_level 'info # listen 0.0.0.0:1'", "may not contain a newline or '#'"),
        ("option log_level 'info\nlisten 0.0.0.0:1'", "may not contain a newline or '#'"),
        ("option connect 'maybe'", "usage: connect on|off"),
        ("list listen '127.0.0.1:notaport'", "listen"),
    ],
)
def test_bad_value_is_not_applied(box, option, message):
    box.uci(f"""
        config kfwd 'main'
            list listen '127.0.0.1:{peers.free_port()}'
            {option}
    """ + ROUTE)
    p = box.run("start_service")
    assert p.returncode == 1
    assert message in p.stderr
    assert "/etc/config/kfwd not applied" in p.stderr
    assert not box.conf.exists() and not box.conf.with_name("kfwd.conf.new").exists()
    assert box.procd_log() == []


@pytest.mark.parametrize(
    "section, message",
    [
        ("config upstream 'u'\n    option name 'u'", "upstream u: no server"),
        ("config route 'r'\n    option target 'url-embedded'", "r.prefix: empty value"),
        ("config route 'r'\n    option prefix '/x/'\n    option target 'nosuch'", "unknown upstream"),
        ("config route 'r'\n    option prefix '/x/'\n    option target 'url-embedded'\n    option host 'a b'",
         "r.host: 'a b' must be one word"),
    ],
)
def test_bad_section_is_not_applied(box, section, message):
    box.uci(f"config kfwd 'main'\n    list listen '127.0.0.1:{peers.free_port()}'\n\n{section}\n")
    p = box.run("start_service")
    assert p.returncode == 1 and message in p.stderr, p.stderr
    assert box.procd_log() == [] and not box.conf.exists()


def test_disabled_does_not_start(box):
    box.uci("config kfwd 'main'\n    option enabled '0'\n    list listen '127.0.0.1:1'\n")
    p = box.run("start_service")
    assert p.returncode == 0 and box.procd_log() == [] and not box.conf.exists()


def test_reload_service(box):
    port = peers.free_port()
    box.uci(f"config kfwd 'main'\n    list listen '127.0.0.1:{port}'\n" + ROUTE)
    assert box.run("start_service").returncode == 0
    # A valid change: rewritten, then kfwdctl reload (nothing restarted).
    box.uci(f"config kfwd 'main'\n    list listen '127.0.0.1:{port}'\n    option log_level 'debug'\n" + ROUTE)
    p = box.run("reload_service")
    assert p.returncode == 0, p.stderr
    assert "log-level debug" in box.conf_lines()
    assert box.ctl_log.read_text().splitlines() == ["reload"]
    assert box.procd_log()[-1] == "close_instance"
    # A bad change: the file in use stays, kfwdctl is not asked.
    box.uci(f"config kfwd 'main'\n    list listen '127.0.0.1:{port}'\n    option log_level 'loud'\n" + ROUTE)
    p = box.run("reload_service")
    assert p.returncode == 1 and "log-level" in p.stderr
    assert "log-level debug" in box.conf_lines()
    assert box.ctl_log.read_text().splitlines() == ["reload"]
    # kfwd not running (kfwdctl exits 3): started instead.
    box.uci(f"config kfwd 'main'\n    list listen '127.0.0.1:{port}'\n" + ROUTE)
    box.ctl_status = CTL_EX_UNREACH
    p = box.run("reload_service")
    assert p.returncode == 0 and box.procd_log()[-1] == "start"
    # Disabled: stopped.
    box.uci("config kfwd 'main'\n    option enabled '0'\n")
    p = box.run("reload_service")
    assert p.returncode == 0 and box.procd_log()[-1] == "stop"


def test_translator_runs_standalone(box):
    box.uci("config kfwd 'main'\n    list listen '127.0.0.1:1'\n\nconfig route\n    option prefix '/'\n"
            "    option target 'url-embedded'\n")
    env = dict(os.environ, UCI_CONFIG_DIR=str(box.dir / "config"), KFWD_FUNCTIONS_SH=str(STAND_IN))
    p = subprocess.run(["dash", str(OPENWRT / "uci2conf.sh")], capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == [HEADER, "listen 127.0.0.1:1", "route / url-embedded"]
