"""The wheel ships kernels/*.cu and kernels/cpu_*.c, and the installed package finds them.

Builds a wheel from a copy of the source tree (so no build/ or egg-info lands
in the checkout), installs it with no dependencies into a fresh venv, and
asks the installed dualconv.kernels.sources for its kernel sources.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KERNEL_FILES = sorted(p.name for p in (REPO / "kernels").iterdir() if p.suffix in (".cu", ".cuh"))
CPU_FILES = sorted(p.name for p in (REPO / "kernels").iterdir() if p.suffix == ".c")

CHECK = """
import importlib.resources, json, shutil
import dualconv
from dualconv.kernels import native, sources
from dualconv.testing import emulated_cupy
from dualconv.testing.fake_cupy import _native
stand_in = None
if shutil.which("g++"):
    with emulated_cupy():  # the CuPy stand-in, built from the installed harness
        stand_in = {"gpu_available": dualconv.gpu_available(), "harness": str(_native.HERE)}
found = sources.kernel_sources()
print(json.dumps({
    "module": sources.__file__,
    "resources": sorted(e.name for e in importlib.resources.files(sources.PACKAGE).iterdir()),
    "found": {name: str(path) for name, path in found.items()},
    "texts": {name: path.read_text() for name, path in found.items()},
    "source_has_line_directives": '#line 1 "im2col.cu"' in sources.module_source(),
    "stand_in": stand_in,
    "cpu_sources": sorted(native._sources()),
    "cpu_library": native.library() is not None if native._compiler() else None,
}))
"""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _copy_source_tree(dst: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info", "build")
    shutil.copy2(REPO / "pyproject.toml", dst / "pyproject.toml")
    shutil.copytree(REPO / "dualconv", dst / "dualconv", ignore=ignore)
    shutil.copytree(REPO / "kernels", dst / "kernels", ignore=ignore)
    for extra in ("README.md", "LICENSE"):
        if (REPO / extra).exists():
            shutil.copy2(REPO / extra, dst / extra)
    if not (dst / "README.md").exists():  # pyproject's readme; not this test's concern
        warnings.warn("README.md is missing from the repository; the wheel test used a stub")
        (dst / "README.md").write_text("dualconv\n")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    pytest.importorskip("setuptools")
    pytest.importorskip("wheel", reason="setuptools<70 needs the 'wheel' package to build wheels")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    _copy_source_tree(src)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", str(tmp / "dist"), str(src)])
    (built,) = (tmp / "dist").glob("dualconv-*.whl")
    return built


def test_wheel_contains_the_kernel_sources(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for f in KERNEL_FILES:
        assert f"dualconv/kernels/cuda_src/{f}" in names, f"{f} not shipped; wheel has {names}"
    for f in CPU_FILES:
        assert f"dualconv/kernels/cuda_src/{f}" in names, f"{f} not shipped"
    for f in ("cuda.py", "cuda_plans.py"):
        assert f"dualconv/kernels/{f}" in names, f"{f} not shipped"
    for f in ("emulation_harness.cpp", "emulation.h", "_raw.py", "cuda/runtime.py"):  # the CuPy stand-in
        assert f"dualconv/testing/fake_cupy/{f}" in names, f"{f} not shipped"


def test_installed_package_finds_its_kernels(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
          "--no-deps", "--no-index", str(wheel)])
    # numpy & co. come from this interpreter's site-packages, placed on
    # PYTHONPATH (which ignores .pth files, so no editable install leaks in).
    env = dict(os.environ, PYTHONPATH=sysconfig.get_paths()["purelib"],
               DUALCONV_EMULATION_CACHE=str(tmp_path / "emulation_cache"),
               DUALCONV_CACHE=str(tmp_path / "cpu_cache"))
    proc = _run([str(python), "-c", CHECK], env=env, cwd=tmp_path)
    report = json.loads(proc.stdout)
    assert Path(report["module"]).is_relative_to(venv), report["module"]
    assert set(KERNEL_FILES) <= set(report["resources"])
    assert sorted(report["found"]) == KERNEL_FILES
    for name, path in report["found"].items():
        assert Path(path).is_relative_to(venv), f"{name} found outside the install: {path}"
        assert report["texts"][name] == (REPO / "kernels" / name).read_text()
    assert report["source_has_line_directives"]
    assert report["cpu_sources"] == CPU_FILES and CPU_FILES
    assert report["cpu_library"] in (True, None)  # built from the installed sources where there is a cc
    if report["stand_in"] is not None:
        assert report["stand_in"]["gpu_available"]
        assert Path(report["stand_in"]["harness"]).is_relative_to(venv)
