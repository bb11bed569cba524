"""The machinery that runs the pack against a real ComfyUI: paths, in-process import, live server.

Kept free of pytest so that benchmarks and the demo use the very same code.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMFYUI_VERSION = "0.3.75"     # the default target
NEWER_SINCE = (0, 28, 0)       # and every ComfyUI from this one on


def _comfy_dir() -> Path:
    """$BOXDIRECTOR_COMFYUI: a folder, or a release tarball that scripts/setup.sh unpacked into
    .cache/unpacked/<its name>; by default the 0.3.75 that setup installs."""
    src = os.environ.get("BOXDIRECTOR_COMFYUI")
    if not src:
        return ROOT / ".cache" / f"comfyui-{COMFYUI_VERSION}"
    for ext in (".tar.gz", ".tgz"):
        if src.endswith(ext):
            return ROOT / ".cache" / "unpacked" / Path(src).name[: -len(ext)]
    return Path(src)


COMFY_DIR = _comfy_dir()
PACK_NAME = "boxdirector"
SETUP_HINT = ("Fix: run `bash scripts/setup.sh` (it installs ComfyUI 0.3.75 into .cache/, or unpacks the "
              "tarball BOXDIRECTOR_COMFYUI names) and run pytest with the venv it names.")


def comfy_version(comfy_dir: Path = None) -> tuple:
    """The version a ComfyUI folder declares, as a tuple of ints; () if unknown."""
    text = ((comfy_dir or COMFY_DIR) / "comfyui_version.py").read_text()
    for line in text.splitlines():
        if line.startswith("__version__"):
            return tuple(int(x) for x in line.split("=", 1)[1].strip().strip("\"'").split(".") if x.isdigit())
    return ()


class ComfyInstallError(RuntimeError):
    pass


def check_comfy_install() -> Path:
    """The ComfyUI folder, after checking it is a version the pack supports."""
    version_file = COMFY_DIR / "comfyui_version.py"
    if not version_file.is_file():
        raise ComfyInstallError(f"no ComfyUI at {COMFY_DIR}. {SETUP_HINT}")
    v = comfy_version()
    if v != tuple(int(x) for x in COMFYUI_VERSION.split(".")) and v < NEWER_SINCE:
        raise ComfyInstallError(
            f"ComfyUI at {COMFY_DIR} is {'.'.join(map(str, v)) or 'of unknown version'}; the pack supports "
            f"{COMFYUI_VERSION} and {'.'.join(map(str, NEWER_SINCE))} or newer. {SETUP_HINT}")
    if (COMFY_DIR / "extra_model_paths.yaml").exists():
        raise ComfyInstallError(f"{COMFY_DIR}/extra_model_paths.yaml makes main.py crash; delete it.")
    return COMFY_DIR


def import_pack():
    """Import this checkout as the package ``boxdirector``, the way ComfyUI sees it: as a package,
    so that its relative imports work and its ``nodes`` never shadows ComfyUI's ``nodes`` module."""
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    link_dir = ROOT / ".cache" / "pkg"
    link = link_dir / PACK_NAME
    link_dir.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(link_dir))
    import importlib

    return importlib.import_module(PACK_NAME)


def import_comfy():
    """Import ComfyUI in-process on the CPU and return its ``nodes`` module (idempotent)."""
    if "comfy.sd" in sys.modules:
        return sys.modules["nodes"]
    comfy_dir = str(check_comfy_install())
    if comfy_dir not in sys.path:
        sys.path.insert(0, comfy_dir)
    # comfy.cli_args parses sys.argv once, at import time; hand it ComfyUI's arguments, not pytest's.
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401
        # ComfyUI's top-level ``utils`` package first, as main.py does: nodes.py puts comfy/ at the
        # front of sys.path, after which ``import utils`` would find comfy/utils.py instead.
        import utils.install_util  # noqa: F401
        import comfy.sd  # noqa: F401
        import comfy.sample  # noqa: F401
        import comfy.samplers  # noqa: F401
        import nodes  # (ComfyUI's own nodes.py)
    finally:
        sys.argv = saved_argv
    # The comfy_extras nodes (MaskToImage, SamplerCustomAdvanced, ...) as the server loads them.
    import asyncio

    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    return nodes


def load_pack_nodes() -> dict:
    """Register the pack's nodes into the in-process ComfyUI exactly as its loader does; returns
    {node_id: class}."""
    import asyncio

    nodes = import_comfy()
    import_pack()  # makes the link .cache/pkg/boxdirector, so ComfyUI names the module as a server would
    before = set(nodes.NODE_CLASS_MAPPINGS)
    ok = asyncio.run(nodes.load_custom_node(str(ROOT / ".cache" / "pkg" / PACK_NAME), module_parent="custom_nodes"))
    if not ok:
        raise RuntimeError("ComfyUI's load_custom_node refused the pack; see the log above")
    from_pack = {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k not in before}
    return from_pack or {k: v for k, v in nodes.NODE_CLASS_MAPPINGS.items() if k.startswith("BoxDirector.")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A real ComfyUI server (main.py) on a free loopback port, with the pack linked into its
    custom_nodes. Use as a context manager: the process group is always stopped."""

    def __init__(self, base_dir: Path, port: int | None = None, startup_timeout: float = 240.0):
        self.base_dir = Path(base_dir)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.base_dir / "comfyui.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ComfyServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        comfy_dir = check_comfy_install()
        custom_nodes = self.base_dir / "custom_nodes"
        custom_nodes.mkdir(parents=True, exist_ok=True)
        link = custom_nodes / PACK_NAME
        if not link.exists():
            link.symlink_to(ROOT, target_is_directory=True)
        cmd = [
            sys.executable, str(comfy_dir / "main.py"), "--cpu",
            "--base-directory", str(self.base_dir),
            "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--database-url", "sqlite:///:memory:",
        ]
        self._log = open(self.log_path, "w")
        # Its own process group, so that stop() also ends anything ComfyUI spawned.
        self.proc = subprocess.Popen(cmd, cwd=comfy_dir, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"ComfyUI exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                self.get("/system_stats", timeout=2)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=15)
        if getattr(self, "_log", None) is not None and not self._log.closed:
            self._log.close()

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    # --- HTTP -----------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, timeout: float = 30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path: str, timeout: float = 30):
        status, raw = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise urllib.error.HTTPError(self.url + path, status, raw.decode(errors="replace"), None, None)
        ctype_json = raw[:1] in (b"{", b"[")
        return json.loads(raw) if ctype_json else raw

    def post(self, path: str, body) -> tuple[int, dict]:
        status, raw = self.request("POST", path, body)
        return status, (json.loads(raw) if raw else {})

    def queue_prompt(self, prompt: dict, client_id: str = "boxdirector-tests") -> str:
        """POST an API-format prompt; its prompt_id, or raises with the server's node_errors."""
        status, answer = self.post("/prompt", {"prompt": prompt, "client_id": client_id})
        if status != 200:
            raise RuntimeError(f"prompt rejected ({status}): {json.dumps(answer, indent=1)}")
        return answer["prompt_id"]

    def wait_prompt(self, prompt_id: str, timeout: float = 300) -> dict:
        """The prompt's history entry once it has run; raises if it failed or timed out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist:
                entry = hist[prompt_id]
                if entry.get("status", {}).get("status_str") == "error":
                    raise RuntimeError(f"prompt failed: {json.dumps(entry['status'], indent=1)}\n{self.log_tail()}")
                return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout:.0f} s\n{self.log_tail()}")

    def run_prompt(self, prompt: dict, timeout: float = 300) -> dict:
        """Queue an API-format prompt and wait for its history entry."""
        return self.wait_prompt(self.queue_prompt(prompt), timeout)


# --- in-process node execution and validation, through ComfyUI's own code paths --------------
def validate_prompt(prompt: dict) -> tuple[bool, dict]:
    """ComfyUI's real ``execution.validate_prompt`` on an API-format prompt: (ok, node_errors)."""
    import asyncio

    import_comfy()
    import execution

    ok, error, _outputs, node_errors = asyncio.run(execution.validate_prompt("test", prompt, None))
    if not ok and not node_errors:
        node_errors = {"prompt": {"errors": [error]}}
    return ok, node_errors


def error_text(node_errors: dict) -> str:
    """All messages and details of a node_errors answer, flattened for assertions."""
    return "\n".join(f"{e.get('message', '')}: {e.get('details', '')}"
                     for n in node_errors.values() for e in n.get("errors", []))


def run_node(node_id: str, **inputs):
    """Execute one node class the way the executor does (a class clone with hidden inputs);
    returns the io.NodeOutput."""
    import asyncio
    import inspect

    nodes = import_comfy()
    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    clone = cls.PREPARE_CLASS_CLONE({})
    out = clone.execute(**inputs)
    return asyncio.run(out) if inspect.isawaitable(out) else out
