"""dualconv/kernels/built_files.py: the on-disk cache both compiled libraries go through
(the CPU kernels and the emulated CuPy's modules): built once, rebuilt when asked, and a
failed build leaves neither a file nor its scratch folder behind."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dualconv.kernels.built_files import built, digest, whole


def test_digest_tells_where_the_parts_divide() -> None:
    assert digest("ab", "c") != digest("a", "bc")
    assert digest("ab", "c") == digest("ab", "c") and len(digest("x")) == 24


def test_built_once_then_kept_and_rebuilt_when_asked(tmp_path) -> None:
    calls = []

    def build(scratch: Path) -> Path:
        calls.append(scratch)
        made = scratch / "lib.so"
        made.write_text(f"build {len(calls)}")
        return made

    target = tmp_path / "cache" / "lib_0123.so"
    assert built(target, build) == target and target.read_text() == "build 1"
    assert built(target, build) == target and len(calls) == 1  # kept
    assert built(target, build, again=True).read_text() == "build 2"
    assert sorted(p.name for p in target.parent.iterdir()) == ["lib_0123.so"]  # no scratch left
    assert all(not scratch.exists() for scratch in calls)


def test_a_failed_build_leaves_nothing(tmp_path) -> None:
    def build(scratch: Path) -> Path:
        (scratch / "half.so").write_text("half")
        raise RuntimeError("cc exited with 1")

    target = tmp_path / "lib.so"
    with pytest.raises(RuntimeError, match="cc exited with 1"):
        built(target, build)
    assert list(tmp_path.iterdir()) == []


def test_an_elf_file_cut_short_is_built_again(tmp_path) -> None:
    """Loading a library cut short can kill the process (SIGBUS) instead of raising, so
    built() checks an ELF file's length against its section headers before handing it on."""
    elf = Path(sys.executable).resolve().read_bytes()
    if elf[:4] != b"\x7fELF":
        pytest.skip("this Python is not an ELF file")
    target = tmp_path / "lib.so"
    for cut in (60, 1000, len(elf) // 2, len(elf) - 1):
        target.write_bytes(elf[:cut])
        assert not whole(target)
    target.write_bytes(elf)
    assert whole(target)
    target.write_bytes(elf[:len(elf) // 2])

    def build(scratch: Path) -> Path:
        (scratch / "lib.so").write_bytes(elf)
        return scratch / "lib.so"
    assert built(target, build).read_bytes() == elf
