"""Which machine a benchmark ran on: the CPU model, its kind, and NumPy's BLAS.

    python benchmarks/machine_info.py           # one line: kind, CPU, cores, BLAS
    python benchmarks/machine_info.py --kind    # the machine kind, e.g. intel-avx512-2cpu
    python benchmarks/machine_info.py --cpu     # CPU model and BLAS, for `asv machine --cpu`

The project's machines come in kinds (an AMD EPYC and an Intel Xeon, both with
AVX-512, 2 cores each), and one kind can be fast where another is not, so every
recorded figure names the kind, the CPU model (with its family and model numbers:
a VM may name every EPYC generation just "AMD EPYC") and the BLAS with the kernel
it chose for this CPU, which threadpoolctl reports. OpenBLAS 0.3.31 picks its
SkylakeX kernels on both the Xeon and the EPYC of family 25, model 17; the AMD
VM of 2026-11-21 was recorded with its Haswell kernels, which lack the
small-matrix path. The kind is also the asv machine name, so results from
different kinds land in different folders of benchmarks/results/.
"""
from __future__ import annotations

import argparse
import os
import platform


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields from /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers where /proc/cpuinfo has
    them, e.g. "AMD EPYC (family 25, model 17)"."""
    info = _cpuinfo()
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info and "model" in info:
        name += f" (family {info['cpu family']}, model {info['model']})"
    return name


def machine_kind() -> str:
    """vendor-isa-Ncpu, e.g. "intel-avx512-2cpu" or "amd-avx2-2cpu": the widest vector
    instructions decide which BLAS kernels run, the core count how many threads can."""
    info = _cpuinfo()
    vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(info.get("vendor_id", ""),
                                                                   platform.machine().lower())
    flags = set(info.get("flags", "").split())
    isa = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "generic"
    return f"{vendor}-{isa}-{os.cpu_count()}cpu"


def blas() -> str:
    """NumPy's BLAS, its version, the kernel it chose and its thread count, e.g.
    "openblas 0.3.31 (SkylakeX kernels, 2 threads)"."""
    import numpy  # noqa: F401  (loads the BLAS so that threadpoolctl can see it)
    from threadpoolctl import threadpool_info
    found = [f"{lib.get('internal_api')} {lib.get('version')} "
             f"({lib.get('architecture', '?')} kernels, {lib.get('num_threads')} threads)"
             for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return "; ".join(found) or "no BLAS found by threadpoolctl"


def describe() -> dict[str, str]:
    """Everything above, as strings."""
    return {"kind": machine_kind(), "cpu": cpu_model(), "num_cpu": str(os.cpu_count()), "blas": blas()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", action="store_true", help="print the machine kind (the asv machine name)")
    parser.add_argument("--cpu", action="store_true", help="print the CPU model and BLAS (asv's cpu field)")
    args = parser.parse_args()
    info = describe()
    if args.kind:
        print(info["kind"])
    elif args.cpu:
        print(f"{info['cpu']}; {info['blas']}")
    else:
        print(f"{info['kind']}: {info['cpu']}, {info['num_cpu']} CPUs; BLAS {info['blas']}")


if __name__ == "__main__":
    main()
