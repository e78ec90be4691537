"""The declared layers of user/ (scripts/layers.txt) hold, and the check that says so fails on
an include that goes up a layer, on a cycle and on an undeclared file."""
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "check-layers.py"


def run(root):
    p = subprocess.run(["/usr/bin/python3", str(CHECK), str(root)], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def tree_copy(tmp_path):
    shutil.copytree(ROOT / "user", tmp_path / "user")
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "layers.txt", tmp_path / "scripts")
    return tmp_path


def prepend(path, line):
    path.write_text(line + "\n" + path.read_text())


def test_source_tree_respects_its_layers():
    rc, out = run(ROOT)
    assert rc == 0, out
    assert "no upward include, no cycle" in out


def test_upward_include_is_refused(tmp_path):
    root = tree_copy(tmp_path)
    prepend(root / "user" / "flow.c", '#include "ctl.h"')
    rc, out = run(root)
    assert rc == 1 and "user/flow.c: includes ctl.h of layer control" in out, out


def test_cycle_within_a_layer_is_refused(tmp_path):
    root = tree_copy(tmp_path)
    prepend(root / "user" / "log.c", '#include "stats.h"')
    prepend(root / "user" / "stats.c", '#include "log.h"')
    rc, out = run(root)
    assert rc == 1 and "include cycle:" in out and "log" in out and "stats" in out, out


def test_undeclared_file_is_refused(tmp_path):
    root = tree_copy(tmp_path)
    (root / "user" / "newthing.c").write_text('#include "log.h"\n')
    rc, out = run(root)
    assert rc == 1 and "user/newthing: not declared" in out, out


LONG = ROOT / "scripts" / "long-functions.py"


def long_functions(root):
    p = subprocess.run(["/usr/bin/python3", str(LONG), str(root)], capture_output=True, text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


def test_no_long_function_without_a_note():
    rc, out = long_functions(ROOT)
    assert rc == 0, out


def test_long_function_check_fails_on_a_long_function(tmp_path):
    """The check can fail: 90 lines without a note are listed, the same with "Long:" above pass."""
    root = tree_copy(tmp_path)
    body = "".join(f"\tx += {i};\n" for i in range(88))
    f = root / "user" / "util_extra.c"
    f.write_text(f"static int x;\n\nvoid filler(void)\n{{\n{body}}}\n")
    rc, out = long_functions(root)
    assert rc == 1 and "util_extra.c:3: filler: 91 lines" in out, out
    f.write_text(f"static int x;\n\n/* Long: a test. */\nvoid filler(void)\n{{\n{body}}}\n")
    rc, out = long_functions(root)
    assert rc == 0, out
