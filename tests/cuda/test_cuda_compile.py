"""Every kernel instantiation compiles for the GPU, without needing a GPU.

Uses NVRTC from the pip package nvidia-cuda-nvrtc-cu12 through ctypes (the
compiler CuPy itself uses), on exactly the source and options that
dualconv.kernels.cuda hands to cupy.RawModule; falls back to nvcc on PATH.
"""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from dualconv.kernels import cuda, sources
from dualconv.testing.fake_cupy._raw import NVRTC  # libnvrtc (nvidia-cuda-nvrtc-cu12), or None

ARCHES = ["compute_75", "sm_90"]  # PTX for Turing+, CUBIN for Hopper

NVCC = shutil.which("nvcc")


def nvrtc_compile(source: str, arch: str,
                  name_expressions: tuple[str, ...] = ()) -> tuple[int, str, bytes, dict]:
    """(result code, log, PTX or CUBIN, {name expression: lowered name})."""
    assert NVRTC is not None
    prog = ctypes.c_void_p()
    check = _checker()
    check(NVRTC.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"dualconv_kernels.cu",
                                   0, None, None))
    try:
        for name in name_expressions:
            check(NVRTC.nvrtcAddNameExpression(prog, name.encode()))
        options = _options(arch)
        opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
        rc = NVRTC.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        check(NVRTC.nvrtcGetProgramLogSize(prog, ctypes.byref(size)))
        log = ctypes.create_string_buffer(size.value)
        check(NVRTC.nvrtcGetProgramLog(prog, log))
        if rc != 0:
            return rc, log.value.decode(errors="replace"), b"", {}
        cubin = arch.startswith("sm_")
        get_size = NVRTC.nvrtcGetCUBINSize if cubin else NVRTC.nvrtcGetPTXSize
        get = NVRTC.nvrtcGetCUBIN if cubin else NVRTC.nvrtcGetPTX
        check(get_size(prog, ctypes.byref(size)))
        image = ctypes.create_string_buffer(size.value)
        check(get(prog, image))
        lowered = {}
        for name in name_expressions:
            out = ctypes.c_char_p()
            check(NVRTC.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(out)))
            lowered[name] = out.value.decode()
        return 0, log.value.decode(errors="replace"), image.raw, lowered
    finally:
        NVRTC.nvrtcDestroyProgram(ctypes.byref(prog))


def _options(arch: str) -> list[str]:
    return [*cuda.COMPILE_OPTIONS, f"--gpu-architecture={arch}"]


def _checker():
    NVRTC.nvrtcGetErrorString.restype = ctypes.c_char_p

    def check(rc: int) -> None:
        if rc != 0:
            raise RuntimeError(f"NVRTC error {rc}: {NVRTC.nvrtcGetErrorString(rc).decode()}")
    return check


def nvcc_compile(source: str, arch: str, tmp_path: Path) -> tuple[int, str]:
    """Compile with nvcc; name expressions become host references that instantiate them."""
    refs = "".join(f"void* dc_ref_{i} = (void*)&{e};\n"
                   for i, e in enumerate(cuda.NAME_EXPRESSIONS))
    src = tmp_path / "dualconv_kernels.cu"
    src.write_text(source + refs)
    kind = "-cubin" if arch.startswith("sm_") else "-ptx"
    cmd = [NVCC, kind, f"-arch={arch}", *cuda.COMPILE_OPTIONS, str(src),
           "-o", str(tmp_path / "out")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("arch", ARCHES)
def test_every_instantiation_compiles(arch, tmp_path):
    source = sources.module_source()
    if NVRTC is not None:
        rc, log, image, lowered = nvrtc_compile(source, arch, cuda.NAME_EXPRESSIONS)
        assert rc == 0, log
        assert image, "NVRTC returned an empty image"
        assert set(lowered) == set(cuda.NAME_EXPRESSIONS)
        for name, mangled in lowered.items():
            assert name.split("<")[0] in mangled
    elif NVCC is not None:
        rc, log = nvcc_compile(source, arch, tmp_path)
        assert rc == 0, log
    else:
        pytest.skip("neither NVRTC (pip install nvidia-cuda-nvrtc-cu12) nor nvcc is available")


@pytest.mark.skipif(NVRTC is None, reason="NVRTC (nvidia-cuda-nvrtc-cu12) not installed")
def test_compile_errors_name_file_and_line(tmp_path, monkeypatch):
    """module_source()'s #line directives make errors point at the .cu file and line."""
    (tmp_path / "common.cuh").write_text("#pragma once\n__device__ int ok() { return 1; }\n")
    (tmp_path / "good.cu").write_text('#include "common.cuh"\n__global__ void g() {}\n')
    (tmp_path / "broken.cu").write_text(
        '// a comment\n#include "common.cuh"\n\n__global__ void f() { undefined_name; }\n')
    monkeypatch.setattr(sources, "kernel_dir", lambda: tmp_path)
    rc, log, _, _ = nvrtc_compile(sources.module_source(), "compute_75", ())
    assert rc != 0
    assert "broken.cu(4): error" in log, log
