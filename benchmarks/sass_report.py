"""Compile the CUDA kernels as CuPy does and report what the GPU will execute.

    python benchmarks/sass_report.py [--arch sm_90]

The module source, name expressions and options are the ones the CuPy backend
hands to ``cupy.RawModule``; CuPy then adds ``-ftz=true``, the architecture and
``--device-as-default-execution-space``, and so does this script. NVRTC comes
from the pip package nvidia-cuda-nvrtc-cu12; the CUBIN is disassembled with
cuobjdump (nvidia-cuda-cuobjdump, which needs nvidia-cuda-nvdisasm): ``pip
install -e ".[sass]"``. No GPU is needed. It prints a Markdown table (the one in
benchmarks/README.md, section "SASS report (sass_report.py)").

Per kernel instantiation it reports registers and spill bytes (ptxas), and the
SASS instructions one thread executes for one element on the common path at
LeNet sizes. That count is read off the control-flow graph: the grid-stride
loop runs once (at LeNet sizes every thread handles one element), each inner
loop counts its trip count times its body, and at every branch the longer
side counts (so it is an upper bound: the padding side of a window load, the
skipped side of a ``continue``). Subroutines reached by CALL (the slow path
of a 64-bit division) are not counted; the CALL itself is.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dualconv.kernels import cuda as kernels_cuda  # noqa: E402

CUPY_OPTIONS = ("-ftz=true", "--device-as-default-execution-space")
"""What cupy.RawModule appends to our options (CuPy 14, cupy/cuda/compiler.py)."""


@dataclass(frozen=True)
class Workload:
    """How many times each inner loop runs for one element, outermost first."""
    label: str
    trips: tuple[int, ...] = ()


LENET = {
    # conv1 (1@28x28, 5x5, pad 2) and conv2 (6@14x14, 5x5): no inner loop.
    "im2col": [Workload("conv 5x5")],
    # conv2's input gradient: an interior pixel is read by all 5x5 offsets.
    "col2im": [Workload("conv 5x5, stride 1", (5, 5))],
    "max_pool_forward": [Workload("2x2", (2, 2)), Workload("5x5", (5, 5))],
    "max_pool_backward": [Workload("2x2 stride 2", (2, 2))],
    "avg_pool_forward": [Workload("2x2", (2, 2))],
    "avg_pool_backward": [Workload("2x2 stride 2", (2, 2))],
    "sgd_update": [Workload("per element")],
    "adam_update": [Workload("per element")],
    "softmax_cross_entropy": [Workload("per row of 10 classes", (10,))],
    "sgd_update_guarded": [Workload("per element")],
    "adam_update_guarded": [Workload("per element")],
    "flag_nonfinite_loss": [Workload("per step")],
}
"""The loop trip counts of one element at LeNet sizes, per kernel."""


# ------------------------------------------------------------------ compiling

def _nvrtc() -> ctypes.CDLL:
    try:
        import nvidia.cuda_nvrtc
    except ImportError as exc:
        raise SystemExit("needs NVRTC: pip install nvidia-cuda-nvrtc-cu12") from exc
    for root in nvidia.cuda_nvrtc.__path__:
        for lib in sorted(Path(root, "lib").glob("libnvrtc.so.*")):
            return ctypes.CDLL(str(lib))
    raise SystemExit("nvidia-cuda-nvrtc-cu12 is installed but has no libnvrtc.so")


def compile_cubin(source: str, names: Iterable[str], options: Iterable[str]
                  ) -> tuple[bytes, str, dict[str, str]]:
    """(CUBIN, compile log, {name expression: mangled name})."""
    nvrtc = _nvrtc()
    names = list(names)
    prog = ctypes.c_void_p()

    def check(rc: int) -> None:
        if rc != 0:
            nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
            raise RuntimeError(f"NVRTC error {rc}: {nvrtc.nvrtcGetErrorString(rc).decode()}")

    check(nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"dualconv.cu",
                                   0, None, None))
    try:
        for name in names:
            check(nvrtc.nvrtcAddNameExpression(prog, name.encode()))
        opts = [o.encode() for o in options]
        rc = nvrtc.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
        size = ctypes.c_size_t()
        check(nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size)))
        log = ctypes.create_string_buffer(size.value)
        check(nvrtc.nvrtcGetProgramLog(prog, log))
        if rc != 0:
            raise RuntimeError(f"compile failed:\n{log.value.decode(errors='replace')}")
        check(nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(size)))
        cubin = ctypes.create_string_buffer(size.value)
        check(nvrtc.nvrtcGetCUBIN(prog, cubin))
        lowered = {}
        for name in names:
            out = ctypes.c_char_p()
            check(nvrtc.nvrtcGetLoweredName(prog, name.encode(), ctypes.byref(out)))
            lowered[name] = out.value.decode()
        return cubin.raw, log.value.decode(errors="replace"), lowered
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))


def _cuobjdump() -> tuple[str, dict[str, str]]:
    """The cuobjdump executable and the environment that lets it find nvdisasm."""
    found = shutil.which("cuobjdump")
    env = dict(os.environ)
    try:
        import nvidia
        for root in nvidia.__path__:
            for tool in Path(root).glob("cu*/bin/cuobjdump"):
                found = found or str(tool)
                env["PATH"] = f"{tool.parent}{os.pathsep}{env.get('PATH', '')}"
    except ImportError:
        pass
    if found is None:
        raise SystemExit("needs cuobjdump: pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm")
    return found, env


def disassemble(cubin: bytes) -> dict[str, list[str]]:
    """{mangled function name: its SASS lines} of a CUBIN."""
    tool, env = _cuobjdump()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "module.cubin")
        path.write_bytes(cubin)
        proc = subprocess.run([tool, "-sass", str(path)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"cuobjdump failed: {proc.stderr.strip()}")
    functions: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in proc.stdout.splitlines():
        match = re.match(r"\s*Function : (\S+)", line)
        if match:
            current = functions.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return functions


_PTXAS = re.compile(r"Function properties for (\S+)\n.*?(\d+) bytes spill stores, "
                    r"(\d+) bytes spill loads\n.*?Used (\d+) registers", re.S)


def resources(log: str) -> dict[str, tuple[int, int]]:
    """{mangled name: (registers, spill bytes stored + loaded)} from a ptxas -v log."""
    return {m.group(1): (int(m.group(4)), int(m.group(2)) + int(m.group(3)))
            for m in _PTXAS.finditer(log)}


# ------------------------------------------------------------------ counting

_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


@dataclass(frozen=True)
class Instruction:
    addr: int
    predicated: bool
    op: str
    target: int | None  # of a branch

    @property
    def ends_flow(self) -> bool:
        """Control never falls through to the next instruction."""
        return not self.predicated and self.op.split(".")[0] in ("BRA", "EXIT", "RET")


def parse(lines: list[str]) -> list[Instruction]:
    out = []
    for line in lines:
        m = _INSTRUCTION.search(line)
        if not m:
            continue
        op = m.group(3)
        target = None
        if op.startswith("BRA"):
            t = re.search(r"0x([0-9a-f]+)", m.group(4))
            target = int(t.group(1), 16) if t else None
        guard = (m.group(2) or "").strip()
        out.append(Instruction(int(m.group(1), 16), guard not in ("", "@PT"), op, target))
    return out


def count_one_element(code: list[Instruction], trips: tuple[int, ...]) -> int:
    """Instructions on the longest path from entry to EXIT for one element (see module doc).

    A loop is a backward branch (latch) and its target (head). A loop inside
    ``depth`` others runs ``trips[depth - 1]`` times; a loop inside none (the
    grid-stride loop) runs once.
    """
    index = {ins.addr: i for i, ins in enumerate(code)}
    loops = sorted({(index[ins.target], i) for i, ins in enumerate(code)
                    if ins.target is not None and ins.target < ins.addr})

    def inside(a: tuple[int, int], b: tuple[int, int]) -> bool:
        return b[0] <= a[0] and a[1] <= b[1] and a != b

    def runs(loop: tuple[int, int]) -> int:
        depth = sum(inside(loop, other) for other in loops)
        if depth == 0:
            return 1
        if depth > len(trips):
            raise ValueError(f"loop at {code[loop[0]].addr:#x} is {depth} deep; "
                             f"only {len(trips)} trip counts given")
        return trips[depth - 1]

    def walk(start: int, end: int) -> dict[int, int]:
        """Longest costs from code[start] to every place control leaves [start, end]
        ({index outside, or -1 for EXIT: cost}); loops inside are collapsed and the
        region's own back edge (at end) is dropped."""
        region = (start, end)
        outer = [lp for lp in loops if inside(lp, region) and
                 not any(inside(lp, o) and inside(o, region) for o in loops)]
        heads = {h: (h, l) for h, l in outer}
        dist = {start: 0}
        leave: dict[int, int] = {}

        def reach(j: int, cost: int) -> None:
            book = dist if start <= j <= end else leave
            book[j] = max(book.get(j, -1), cost)

        i = start
        while i <= end:
            if i not in dist:
                i += 1
                continue
            if i in heads and heads[i] != region:
                h, l = heads[i]
                body = walk(h, l)
                per_run = max(body.values())
                for j in body:
                    reach(j, dist[i] + runs((h, l)) * per_run)
                i = l + 1
                continue
            ins = code[i]
            cost = dist[i] + (ins.op != "NOP")
            if ins.op.startswith("EXIT"):
                leave[-1] = max(leave.get(-1, -1), cost)
            if not ins.ends_flow or (i == end and start < end):  # the latch ends a run
                reach(i + 1, cost)
            if ins.target is not None and ins.target > ins.addr:
                reach(index[ins.target], cost)
            i += 1
        return leave

    top = walk(0, len(code) - 1)
    if -1 not in top:
        raise ValueError("no path reaches EXIT")
    return top[-1]


# ------------------------------------------------------------------ report

@dataclass(frozen=True)
class Row:
    name: str
    registers: int
    spill_bytes: int
    counts: tuple[tuple[str, int], ...]  # (workload label, instructions per element)


def _fits(name: str, work: Workload) -> bool:
    """A pooling kernel compiled for a fixed K x K window runs only that window."""
    side = re.search(r", (\d+)>$", name)
    return side is None or side.group(1) == "0" or all(t == int(side.group(1)) for t in work.trips)


def measure(arch: str = "sm_90") -> list[Row]:
    """One row per kernel instantiation of the module the CuPy backend compiles."""
    options = [*kernels_cuda.COMPILE_OPTIONS, *CUPY_OPTIONS, f"-arch={arch}", "--ptxas-options=-v"]
    names = kernels_cuda.NAME_EXPRESSIONS
    cubin, log, lowered = compile_cubin(kernels_cuda.module_source(), names, options)
    usage = resources(log)
    sass = disassemble(cubin)
    rows = []
    for name in names:
        mangled = lowered[name]
        code = parse(sass[mangled])
        counts = tuple((w.label, count_one_element(code, w.trips))
                       for w in LENET.get(name.split("<")[0], []) if _fits(name, w))
        rows.append(Row(name, *usage[mangled], counts))
    return rows


def markdown(rows: list[Row]) -> str:
    lines = ["| kernel | registers | spill bytes | SASS instructions per element (LeNet sizes) |",
             "|---|---:|---:|---|"]
    for r in rows:
        counts = "; ".join(f"{n} ({label})" for label, n in r.counts) or "-"
        lines.append(f"| `{r.name}` | {r.registers} | {r.spill_bytes} | {counts} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="sm_90", help="GPU architecture (default sm_90, Hopper)")
    args = parser.parse_args(argv)
    print(markdown(measure(args.arch)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
