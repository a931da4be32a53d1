"""Print a markdown table of one asv results file: each benchmark by backend, with the peer ratio.

    python benchmarks/results_table.py                      # newest results file under benchmarks/results
    python benchmarks/results_table.py benchmarks/results/MACHINE/COMMIT-ENV.json
    python benchmarks/results_table.py --machine intel-avx512-2cpu --all-columns

Rows are benchmarks (and their non-backend parameters); columns are the
backends numpy, torch, cupy, torch-cuda, and the ratios numpy/torch and
cupy/torch-cuda (value divided by value: for times and memory, above 1 means
dualconv is slower / bigger; for images/s and GB/s, above 1 means dualconv is
faster). GPU columns, and rows with no figure at all, are left out when the
file has none, unless --all-columns. Skipped or failed cases print as "-".

This module sits in the benchmark package only to be found easily; it defines
no benchmarks.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from typing import Any

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BACKEND_COLUMNS = ["numpy", "torch", "cupy", "torch-cuda"]
RATIOS = [("numpy", "torch"), ("cupy", "torch-cuda")]


def newest_results_file(results_dir: str, machine: str | None = None) -> str:
    """The results file (not benchmarks.json / machine.json) with the latest date."""
    best: tuple[float, str] | None = None
    for root, _, files in os.walk(results_dir):
        if machine is not None and os.path.basename(root) != machine:
            continue
        for name in files:
            if not name.endswith(".json") or name in ("benchmarks.json", "machine.json"):
                continue
            path = os.path.join(root, name)
            with open(path) as f:
                date = json.load(f).get("date") or 0
            if best is None or date > best[0]:
                best = (date, path)
    if best is None:
        raise SystemExit(f"no asv results file under {results_dir} (run `asv run --python=same` first)")
    return best[1]


def load_units(results_file: str) -> dict[str, str]:
    """Benchmark name -> unit, from the benchmarks.json beside the machine folder."""
    path = os.path.join(os.path.dirname(os.path.dirname(results_file)), "benchmarks.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        data = json.load(f)
    return {name: b.get("unit", "") for name, b in data.items() if isinstance(b, dict)}


def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if unit == "seconds":
        for scale, suffix in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {suffix}"
        return f"{value:.3g} s"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    return f"{value:.4g}"


def rows_of(results_file: str) -> tuple[list[dict[str, Any]], str]:
    """One row per (benchmark, non-backend parameters): {name, params, unit, <backend>: value}."""
    with open(results_file) as f:
        data = json.load(f)
    columns = data.get("result_columns", ["result", "params"])
    units = load_units(results_file)
    rows: list[dict[str, Any]] = []
    for name, entry in sorted(data["results"].items()):
        record = dict(zip(columns, entry)) if isinstance(entry, list) else dict(entry)
        values = record.get("result")
        params = record.get("params") or []
        if values is None:
            continue
        if not isinstance(values, list):
            values = [values]
        combos = list(itertools.product(*params)) if params else [()]
        param_names = _param_names(results_file, name, len(params))
        backend_axis = param_names.index("backend") if "backend" in param_names else None
        grouped: dict[tuple[str, ...], dict[str, Any]] = {}
        for combo, value in zip(combos, values):
            combo = tuple(_unquote(c) for c in combo)
            backend = combo[backend_axis] if backend_axis is not None else "numpy"
            rest = tuple(f"{n}={c}" for i, (n, c) in enumerate(zip(param_names, combo)) if i != backend_axis)
            row = grouped.setdefault(rest, {"name": name, "params": ", ".join(rest),
                                            "unit": units.get(name, "")})
            row[backend] = value
        rows.extend(grouped.values())
    commit = str(data.get("commit_hash", ""))[:8]
    return rows, f"{data.get('params', {}).get('machine', '?')} @ {commit}"


_PARAM_NAMES_CACHE: dict[str, dict[str, list[str]]] = {}


def _param_names(results_file: str, name: str, count: int) -> list[str]:
    path = os.path.join(os.path.dirname(os.path.dirname(results_file)), "benchmarks.json")
    if path not in _PARAM_NAMES_CACHE:
        names: dict[str, list[str]] = {}
        if os.path.exists(path):
            with open(path) as f:
                for bname, b in json.load(f).items():
                    if isinstance(b, dict):
                        names[bname] = list(b.get("param_names", []))
        _PARAM_NAMES_CACHE[path] = names
    found = _PARAM_NAMES_CACHE[path].get(name)
    return found if found and len(found) == count else [f"p{i}" for i in range(count)]


def _unquote(value: Any) -> str:
    text = str(value)
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def table(rows: list[dict[str, Any]], all_columns: bool = False) -> str:
    def has(backend: str) -> bool:
        return any(_number(r.get(backend)) is not None for r in rows)

    backends = [b for b in BACKEND_COLUMNS if all_columns or b in ("numpy", "torch") or has(b)]
    ratios = [(a, b) for a, b in RATIOS if a in backends and b in backends]
    header = ["benchmark", "params", "unit", *backends, *(f"{a}/{b}" for a, b in ratios)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        if not all_columns and all(_number(r.get(b)) is None for b in backends):
            continue  # e.g. GPU-only benchmarks on a CPU machine
        short = r["name"].split(".", 1)[-1]
        unit = r["unit"]
        cells = [short, r["params"], unit, *(fmt(_number(r.get(b)), unit) for b in backends)]
        for a, b in ratios:
            va, vb = _number(r.get(a)), _number(r.get(b))
            cells.append(f"{va / vb:.2f}" if va is not None and vb else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results_file", nargs="?", help="an asv results JSON (default: the newest one)")
    parser.add_argument("--results-dir", default=RESULTS_DIR)
    parser.add_argument("--machine", help="only look in this machine's folder")
    parser.add_argument("--all-columns", action="store_true", help="keep backend columns with no figures")
    args = parser.parse_args(argv)
    path = args.results_file or newest_results_file(args.results_dir, args.machine)
    rows, label = rows_of(path)
    print(f"<!-- {os.path.relpath(path)} ({label}) -->")
    print(table(rows, args.all_columns))


if __name__ == "__main__":
    sys.exit(main())
