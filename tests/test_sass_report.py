"""benchmarks/sass_report.py: its path count on hand-made SASS listings, and
(when NVRTC, cuobjdump and nvdisasm are installed: the "sass" extra) the goals
of the compiled kernels: at LeNet sizes im2col at most 80 instructions per
element and 2x2 max-pool at most 120 per output; the float32 kernels with
32-bit indices at most 32 registers; no spills anywhere."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import sass_report  # noqa: E402


def listing(*ops: str) -> list[sass_report.Instruction]:
    """SASS lines in cuobjdump's format, one instruction every 0x10 bytes."""
    return sass_report.parse([f"        /*{16 * i:04x}*/   {op} ;" for i, op in enumerate(ops)])


def test_straight_line_code_counts_every_instruction_up_to_exit():
    code = listing("S2R R0, SR_TID.X", "IMAD R0, R0, R1, R2", "STG.E [R2.64], R0", "EXIT",
                   "BRA 0x40", "NOP")
    assert sass_report.count_one_element(code, ()) == 4


def test_the_longer_side_of_a_branch_counts():
    code = listing("ISETP.GE.AND P0, PT, R0, R1, PT",  # 0x00
                   "@P0 BRA 0x40",                     # 0x10: skip two
                   "IADD3 R0, R0, 1, RZ",              # 0x20
                   "IADD3 R0, R0, 1, RZ",              # 0x30
                   "EXIT")                             # 0x40
    assert sass_report.count_one_element(code, ()) == 5


def test_inner_loops_count_their_trips_and_the_grid_stride_loop_once():
    code = listing("MOV R0, RZ",                         # 0x00 setup
                   "MOV R1, RZ",                         # 0x10 grid-stride loop head
                   "IADD3 R1, R1, 1, RZ",                # 0x20 inner loop head
                   "ISETP.LT.AND P1, PT, R1, R3, PT",    # 0x30
                   "@P1 BRA 0x20",                       # 0x40 inner latch: 3 per trip
                   "ISETP.LT.AND P0, PT, R0, R4, PT",    # 0x50
                   "@P0 BRA 0x10",                       # 0x60 grid-stride latch
                   "EXIT")                               # 0x70
    # 1 setup + (1 + 3 * trips + 2) per element + EXIT
    assert sass_report.count_one_element(code, (5,)) == 1 + 1 + 3 * 5 + 2 + 1
    with pytest.raises(ValueError, match="trip counts"):
        sass_report.count_one_element(code, ())


def _tools_missing() -> bool:
    try:
        import nvidia.cuda_nvrtc  # noqa: F401
        sass_report._cuobjdump()
    except (ImportError, SystemExit):
        return True
    return False


@pytest.mark.skipif(_tools_missing(), reason="needs nvidia-cuda-nvrtc-cu12, cuobjdump and nvdisasm")
def test_the_lenet_kernels_meet_their_goals():
    """The goals of the GPU issue at LeNet sizes, float32 with 32-bit indices."""
    rows = {r.name: r for r in sass_report.measure()}
    im2col = dict(rows["im2col<float, int>"].counts)
    pool = dict(rows["max_pool_forward<float, int, 2>"].counts)
    assert im2col["conv 5x5"] <= 80
    assert pool["2x2"] <= 120
    for name, row in rows.items():
        assert row.spill_bytes == 0, name
        if name.startswith(tuple(f"{k}<float, int" for k in sass_report.LENET)):
            assert row.registers <= 32, name
