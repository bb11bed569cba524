import subprocess
import sys

import harness


def test_core_never_imports_comfy():
    """core/ must stay usable from a plain script: importing all of it pulls in no comfy module."""
    code = (
        "import sys, pkgutil, importlib; sys.path.insert(0, %r); import boxdirector.core as c;"
        "[importlib.import_module('boxdirector.core.' + m.name) for m in pkgutil.iter_modules(c.__path__)];"
        "bad = [m for m in sys.modules if m == 'comfy' or m.startswith(('comfy.', 'comfy_api'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    ) % str(harness.ROOT / ".cache" / "pkg")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
