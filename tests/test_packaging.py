"""Packaging: make install/uninstall, the systemd unit, the example configuration, the man pages.

The man page checks parse the sources (user/config.c's directives and route options,
user/kfwdctl.c's commands) so that a directive or command added without documentation fails
here, naming what is missing.
"""

import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

PKG = ROOT / "scripts" / "packaging"
MAN = PKG / "man"
PAGES = [MAN / "kfwd.8", MAN / "kfwdctl.8", MAN / "kfwd.conf.5"]
# Style messages that only say the page is not installed here (or libsystemd-dev's sd_notify(3)
# is not), and that the system's mandoc.db is stale: nothing about the pages themselves.
ALLOWED_STYLE = ("referenced manual not found", "outdated mandoc.db")
MAX_EXPOSURE = 3.0  # systemd-analyze security: "OK" is below 4.0
CAPS = ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_BPF", "CAP_PERFMON", "CAP_SYS_RESOURCE",
        "CAP_SETUID", "CAP_SETGID"]


def files_under(root):
    return sorted(str(p.relative_to(root)) for p in Path(root).rglob("*") if not p.is_dir())


def make(*args):
    p = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), *args],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"make {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}"
    return p


def installed(prefix):
    usr = prefix.strip("/")
    etc = "etc" if prefix == "/usr" else f"{usr}/etc"
    return sorted([
        f"{etc}/kfwd/kfwd.conf",
        f"{usr}/lib/systemd/system/kfwd.service",
        f"{usr}/sbin/kfwd",
        f"{usr}/sbin/kfwdctl",
        f"{usr}/share/kfwd/openwrt/kfwd.init",
        f"{usr}/share/kfwd/openwrt/kfwd.uci",
        f"{usr}/share/kfwd/openwrt/uci2conf.sh",
        f"{usr}/share/man/man5/kfwd.conf.5",
        f"{usr}/share/man/man8/kfwd.8",
        f"{usr}/share/man/man8/kfwdctl.8",
    ])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("prefix", ["/usr", "/usr/local"])
def test_install_uninstall(tmp_path, prefix):
    dest = tmp_path / "root"
    args = [f"DESTDIR={dest}"] + ([f"PREFIX={prefix}"] if prefix != "/usr/local" else [])
    make("install", *args)
    assert files_under(dest) == installed(prefix)
    usr = dest / prefix.strip("/")
    etc = dest / "etc" if prefix == "/usr" else usr / "etc"
    assert os.access(usr / "sbin" / "kfwd", os.X_OK) and os.access(usr / "share/kfwd/openwrt/kfwd.init", os.X_OK)
    # The installed binary accepts the installed example.
    conf = etc / "kfwd" / "kfwd.conf"
    p = subprocess.run([str(usr / "sbin" / "kfwd"), "-t", "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    # Installed files name the installed paths.
    unit = (usr / "lib/systemd/system/kfwd.service").read_text()
    assert f"ExecStart={prefix}/sbin/kfwd -c /{etc.relative_to(dest).as_posix()}/kfwd/kfwd.conf" in unit
    assert f"UCI2CONF={prefix}/share/kfwd/openwrt/uci2conf.sh" in (usr / "share/kfwd/openwrt/kfwd.init").read_text()
    # An edited configuration survives install and uninstall.
    conf.write_text(conf.read_text() + "log-level debug\n")
    make("install", *args)
    assert conf.read_text().endswith("log-level debug\n")
    out = make("uninstall", *args).stdout
    assert "was edited, left as it is" in out
    assert files_under(dest) == [str(conf.relative_to(dest))]
    conf.unlink()
    # Unedited: uninstall leaves no file and none of kfwd's own directories.
    make("install", *args)
    make("uninstall", *args)
    assert files_under(dest) == []
    assert not (etc / "kfwd").exists() and not (usr / "share" / "kfwd").exists()


def systemd_analyze(*args, **env):
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, SYSTEMD_LOG_COLOR="0", **env))


@pytest.fixture(scope="module")
def installed_unit(tmp_path_factory):
    """The unit as `make install PREFIX=/usr` writes it, with its paths moved under the DESTDIR
    (systemd-analyze verify checks that ExecStart= and ExecReload= binaries exist)."""
    dest = tmp_path_factory.mktemp("unit") / "root"
    make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    text = (dest / "usr/lib/systemd/system/kfwd.service").read_text()
    unit = dest.parent / "kfwd.service"
    unit.write_text(text.replace("/usr/sbin/", f"{dest}/usr/sbin/").replace("/etc/kfwd/", f"{dest}/etc/kfwd/"))
    return unit, dest, text


def test_unit_verifies(installed_unit):
    unit, dest, text = installed_unit
    # MANPATH: the Documentation= man pages are checked against the installed ones.
    p = systemd_analyze("verify", str(unit), MANPATH=str(dest / "usr/share/man"))
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr
    broken = unit.with_name("broken.service")
    broken.write_text(unit.read_text().replace(f"{dest}/usr/sbin/kfwd -c", "/nonexistent/kfwd -c"))
    assert systemd_analyze("verify", str(broken), MANPATH=str(dest / "usr/share/man")).returncode != 0


def test_unit_contents(installed_unit):
    unit, dest, text = installed_unit
    props = {}
    for ln in text.splitlines():
        if "=" in ln and not ln.startswith("#"):
            k, v = ln.split("=", 1)
            props.setdefault(k, []).append(v)
    assert props["Type"] == ["notify"]
    assert props["ExecReload"] == ["/usr/sbin/kfwdctl reload"]
    assert props["ExecStart"] == ["/usr/sbin/kfwd -c /etc/kfwd/kfwd.conf"]
    assert sorted(props["CapabilityBoundingSet"][0].split()) == sorted(CAPS)
    assert "AmbientCapabilities" not in props  # kfwd starts as root
    for k, v in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("ProtectHome", "yes"),
                 ("RuntimeDirectory", "kfwd"), ("ReadWritePaths", "/sys/fs/bpf"), ("PrivateTmp", "yes")]:
        assert props[k] == [v], k
    assert int(props["LimitNOFILE"][0]) >= 4 * 4096 + 64
    p = systemd_analyze("security", "--offline=yes", str(unit))
    m = re.search(r"Overall exposure level for kfwd.service: ([0-9.]+)", p.stdout)
    assert m, p.stdout + p.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, p.stdout


# --------------------------------------------------------------------------- example configuration


def readme_defaults():
    """{directive: default} from README's configuration table, where the default is one code word."""
    out = {}
    for ln in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"^\| `([a-z-]+)[^`]*` \| `([^`]+)`", ln)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_example_config(tmp_path):
    example = (PKG / "kfwd.conf.example").read_text()
    kfwd = ROOT / "build" / "kfwd"
    p = subprocess.run([str(kfwd), "-t", "-c", str(PKG / "kfwd.conf.example")], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    # Active lines: the embedded default.
    active = [ln for ln in example.splitlines() if ln and not ln.startswith("#")]
    assert active == ["listen 127.0.0.1:8080", "route /http/ url-embedded", "allow *"]
    # "#directive value" lines are defaults: README agrees, and all of them together are valid.
    defaults = readme_defaults()
    commented = [ln[1:].split(None, 1) for ln in example.splitlines() if re.match(r"^#[a-z]", ln)]
    assert len(commented) >= 20
    for name, value in commented:
        if name in defaults:
            assert defaults[name] == value, f"example says {name} {value}, README says {defaults[name]}"
    full = tmp_path / "full.conf"
    full.write_text(re.sub(r"(?m)^#([a-z])", r"\1", example))
    p = subprocess.run([str(kfwd), "-t", "-c", str(full)], capture_output=True, text=True, timeout=10)
    assert p.returncode == 0, p.stderr


# --------------------------------------------------------------------------- man pages


def lint(page, level):
    return subprocess.run(["mandoc", "-T", "lint", "-W", level, str(page)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_man_page_lint(page):
    p = lint(page, "warning")
    assert p.returncode == 0 and not (p.stdout + p.stderr).strip(), p.stdout + p.stderr
    style = [ln for ln in (lint(page, "style").stdout + lint(page, "style").stderr).splitlines()
             if ln.strip() and not any(a in ln for a in ALLOWED_STYLE)]
    assert not style, "\n".join(style)


def config_directives():
    """Every directive user/config.c accepts: its *_directives[] tables and strcmp(d, "...")."""
    src = (ROOT / "user" / "config.c").read_text()
    names = set(re.findall(r'strcmp\(d, "([a-z-]+)"\)', src))
    for table in re.findall(r"struct \w+_directive \w+\[\] = \{(.*?)\n\};", src, re.S):
        names |= set(re.findall(r'\{ "([a-z-]+)"', table))
    return names


def route_options():
    src = (ROOT / "user" / "config.c").read_text()
    body = ""
    for fn in ("static int parse_route_timing", "static int parse_route_options"):
        part = src[src.index(fn):]
        body += part[: part.index("\n}\n")]
    return set(re.findall(r'strn?cmp\(o, "([a-z-]+=?)"', body))


def kfwdctl_commands():
    """Commands in kfwdctl's usage text: `  WORD [word]` before the arguments (upper case)."""
    src = (ROOT / "user" / "kfwdctl.c").read_text()
    text = src[src.index("static const char usage_text[]"):]
    text = text[text.index('"commands:') : text.index('"\\n"\n', text.index('"commands:') + 20)]
    cmds = set()
    for m in re.finditer(r'^\s*"  ([a-z]+(?: [a-z]+)?)(?= |\\n)', text, re.M):
        cmds.add(m.group(1))
    return cmds


def man_items(page, macro="Ic"):
    """The words after `.It Ic` / `.It Cm` (and `, Ic NAME` on the same line)."""
    out = set()
    for ln in page.read_text().splitlines():
        if ln.startswith(".It "):
            out |= set(re.findall(rf"(?:\.It|,) {macro} ([^ ]+(?: [a-z]+(?= Ar| Op|$))?)", ln))
    return out


def test_every_directive_in_kfwd_conf_5_and_readme():
    directives = config_directives()
    assert {"listen", "route", "allow", "deny", "pipe-size", "drain-timeout", "ctl-group"} <= directives
    page = man_items(MAN / "kfwd.conf.5")
    page_words = {w.split()[0] for w in page}
    missing = sorted(directives - page_words)
    assert not missing, f"directives accepted by user/config.c but not in kfwd.conf(5): {', '.join(missing)}"
    readme = (ROOT / "README.md").read_text()
    missing = sorted(d for d in directives if not re.search(rf"^\| `{re.escape(d)}[ `]", readme, re.M)
                     and f"`{d} " not in readme)
    assert not missing, f"directives accepted by user/config.c but not in README's table: {', '.join(missing)}"


def test_every_route_option_in_kfwd_conf_5():
    options = route_options()
    assert {"strip-prefix", "host=", "retries=", "idle-timeout="} <= options
    page = (MAN / "kfwd.conf.5").read_text()
    missing = sorted(o for o in options if not re.search(rf"Cm {re.escape(o.rstrip('='))}(=| |$)", page, re.M))
    assert not missing, f"route options accepted by user/config.c but not in kfwd.conf(5): {', '.join(missing)}"


def test_every_kfwdctl_command_in_kfwdctl_8():
    commands = kfwdctl_commands()
    assert {"status", "stats", "conn list", "conn kill", "route add", "reload", "monitor", "help"} <= commands
    page = man_items(MAN / "kfwdctl.8")
    missing = sorted(commands - page)
    assert not missing, f"kfwdctl commands not in kfwdctl(8): {', '.join(missing)}"
    # And the options.
    src = (ROOT / "user" / "kfwdctl.c").read_text()
    longopts = re.findall(r'\{ "([a-z-]+)", (?:no|required)_argument', src)
    text = (MAN / "kfwdctl.8").read_text()
    missing = [o for o in longopts if f"Fl \\-{o}" not in text]
    assert not missing, f"kfwdctl options not in kfwdctl(8): {', '.join(missing)}"


def test_man_pages_render():
    for page in PAGES:
        p = subprocess.run(["mandoc", "-T", "utf8", str(page)], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0 and len(p.stdout) > 1000, page
