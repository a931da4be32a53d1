"""Rules of the package's shape, read from the source with ``ast``: no import cycle
among dualconv's modules, no Python file over 400 lines, no dated or machine-bound
notes in code and tests, and layers that know nothing of the CPU engine.

Imports are read statically: ``import dualconv.x``, ``from dualconv.x import y``,
``from .x import y`` and ``from . import name`` (resolved to the submodule when
``name`` is a module file or package, else to the module named before ``import``).
An edge points at that module alone, not at the packages above it; a package is
its ``__init__.py``; an import of a module that no longer exists makes no edge. Imports inside a
function run only when it is called ("lazy"); imports under ``if TYPE_CHECKING:``
never run and are left out of the cycle search.
"""
from __future__ import annotations

import ast
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "dualconv"
MAX_LINES = 400


@dataclass(frozen=True)
class Import:
    """One import of a dualconv module: where it is, what it reaches, how it runs."""
    source: str  # importing module
    target: str  # imported module file, "" when none exists (a stale import)
    names: tuple[str, ...]  # the absolute names written: "dualconv.x", "dualconv.x.name"
    path: str  # file, relative to the repository
    line: int
    function: str | None  # enclosing function of a lazy import, None at module level
    type_checking: bool  # under ``if TYPE_CHECKING:``

    def where(self) -> str:
        how = "module level" if self.function is None else f"lazy, in {self.function}()"
        return f"{self.path}:{self.line} ({how})"


def module_files(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Module name -> file, for every .py of the package (a package is its __init__.py)."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute name ``from <node.level dots><node.module>`` means inside ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, modules: dict[str, Path], root: Path = ROOT) -> list[Import]:
    """Every import of a package module in ``path``, once per line (self-imports left out)."""
    package = module.split(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    rel = path.relative_to(root).as_posix()
    found: list[Import] = []

    def add(names: tuple[str, ...], node: ast.stmt, function: str | None,
            type_checking: bool) -> None:
        if names[0].split(".")[0] != package:
            return
        target = next((n for n in reversed(names) if n in modules), "")
        new = Import(module, target, names, rel, node.lineno, function, type_checking)
        if target != module and new not in found:
            found.append(new)

    def visit(node: ast.AST, function: str | None, type_checking: bool) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add((alias.name,), node, function, type_checking)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node)
            for alias in node.names:
                add((base, f"{base}.{alias.name}"), node, function, type_checking)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, function, True)
            for child in node.orelse:
                visit(child, function, type_checking)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            name = getattr(node, "name", "<lambda>")
            function = name if function is None else f"{function}.{name}"
        for child in ast.iter_child_nodes(node):
            visit(child, function, type_checking)

    visit(tree, None, False)
    return found


def all_imports(root: Path = ROOT, package: str = PACKAGE) -> list[Import]:
    modules = module_files(root, package)
    return [i for name, path in modules.items() for i in imports_of(name, path, modules, root)]


# ---------------------------------------------------------------- cycles

def _components(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with a cycle (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


def _path(graph: dict[str, set[str]], start: str, goal: str, within: set[str]) -> list[str]:
    """A shortest path start -> ... -> goal inside ``within`` (breadth first)."""
    came = {start: start}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        if v == goal:
            path = [v]
            while path[-1] != start:
                path.append(came[path[-1]])
            return path[::-1]
        for w in sorted(graph.get(v, ())):
            if w in within and w not in came:
                came[w] = v
                queue.append(w)
    raise AssertionError(f"no path {start} -> {goal}")


def _describe(cycle: list[str], sites: dict[tuple[str, str], list[Import]]) -> str:
    lines = []
    for a, b in zip(cycle, cycle[1:]):
        where = "; ".join(dict.fromkeys(i.where() for i in sites[a, b]))
        lines.append(f"    {a} -> {b}    [{where}]")
    return "\n".join(lines)


def find_cycles(imports: list[Import]) -> tuple[list[str], list[str]]:
    """(cycles of module-level imports alone, cycles that a lazy import closes),
    one readable report per strongly connected component."""
    imports = [i for i in imports if i.target and not i.type_checking]
    eager: dict[str, set[str]] = {}
    every: dict[str, set[str]] = {}
    sites: dict[tuple[str, str], list[Import]] = {}
    for i in imports:
        every.setdefault(i.source, set()).add(i.target)
        if i.function is None:
            eager.setdefault(i.source, set()).add(i.target)
        sites.setdefault((i.source, i.target), []).append(i)

    module_level = []
    for members in _components(eager):
        start, within = members[0], set(members)
        cycle = [start] + _path(eager, next(w for w in sorted(eager[start]) if w in within),
                                start, within)
        module_level.append(f"  modules {', '.join(members)}; e.g.\n"
                            + _describe(cycle, {k: [i for i in v if i.function is None]
                                                for k, v in sites.items()}))
    lazy = []
    for members in _components(every):
        within = set(members)
        closing = [i for i in imports if i.function is not None and i.source in within
                   and i.target in within and i.target not in eager.get(i.source, ())]
        cycles = [[i.source] + _path(every, i.target, i.source, within) for i in closing]
        if not cycles:
            continue  # every edge of this component is a module-level import: reported above
        shortest = min(cycles, key=lambda c: (len(c), c))
        closers = "\n".join(dict.fromkeys(f"      {i.source} -> {i.target} at {i.where()}"
                                           for i in closing))
        lazy.append(f"  modules {', '.join(members)}; e.g.\n{_describe(shortest, sites)}\n"
                    f"    lazy imports closing a cycle here:\n{closers}")
    return module_level, lazy


def test_no_import_cycle_of_module_level_imports():
    module_level, _ = find_cycles(all_imports())
    assert not module_level, ("import cycles through module-level imports (each line: "
                              "importer -> imported [file:line]):\n" + "\n".join(module_level))


def test_no_import_cycle_closed_by_a_lazy_import():
    _, lazy = find_cycles(all_imports())
    assert not lazy, ("import cycles that an import inside a function closes (it hides the "
                      "cycle until the function runs):\n" + "\n".join(lazy))


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_cycle_finder_sees_module_level_and_lazy_cycles(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "from . import a\n",
        "pkg/a.py": "from .b import f\n",
        "pkg/b.py": "import pkg.a\n",  # a <-> b at module level
        "pkg/sub/__init__.py": "",
        "pkg/sub/c.py": "from .. import d\n",
        "pkg/d.py": "def g():\n    from .sub import c\n",  # c -> d, closed lazily by d -> c
        "pkg/e.py": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    from . import f\n"),
        "pkg/f.py": "from .e import x\n",  # e -> f only under TYPE_CHECKING: no cycle
    })
    module_level, lazy = find_cycles(all_imports(tmp_path, "pkg"))
    assert len(module_level) == 1 and "pkg.a, pkg.b" in module_level[0], module_level
    assert len(lazy) == 1 and "pkg.d, pkg.sub.c" in lazy[0], lazy
    assert "pkg/d.py:2 (lazy, in g())" in lazy[0], lazy


# ---------------------------------------------------------------- file length

def test_no_python_file_is_over_400_lines():
    long = []
    for folder in ("dualconv", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > MAX_LINES:
                long.append(f"  {path.relative_to(ROOT).as_posix()}: {n} lines")
    assert not long, f"Python files over {MAX_LINES} lines (split them, one concept per file):\n" \
                     + "\n".join(long)


# ---------------------------------------------------------------- dated notes

# Built from pieces so that this file does not match its own pattern.
_S = "ses" + "sion"
NOTE = re.compile("|".join([r"20[0-9]{2}-[0-9]{2}-[0-9]{2}", _S, "seed " + "002", "medians?" + " of",
                            "EP" + "YC", "Xe" + "on"]), re.IGNORECASE)
PYTEST_SCOPE = re.compile(r"""scope\s*=\s*(["'])""" + _S + r"\1|\bInference""" + _S + r"\b|\b" + _S + r"Options\b",
                          re.IGNORECASE)
"""What the pattern leaves alone: pytest's fixture scope and ONNX Runtime's class names (API
names, not notes)."""


def test_code_and_tests_carry_no_dates_machines_or_run_notes():
    """Docstrings and comments state contracts; a date, a CPU model, a sitting or a
    measured median belongs in a benchmark's output, not in the source."""
    files = [p for folder in ("dualconv", "tests") for p in (ROOT / folder).rglob("*.py")]
    files += [p for ext in ("*.cu", "*.cuh") for p in (ROOT / "kernels").rglob(ext)]
    hits = []
    for path in sorted(set(files) - {Path(__file__).resolve()}):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            found = [m.group(0) for m in NOTE.finditer(PYTEST_SCOPE.sub("", line))]
            if found:
                hits.append(f"  {path.relative_to(ROOT).as_posix()}:{n}: {', '.join(map(repr, found))}"
                            f" in: {line.strip()[:100]}")
    assert not hits, "dates, machine names or run notes in the source:\n" + "\n".join(hits)


# ---------------------------------------------------------------- layers know no engine

FORBIDDEN = ("dualconv.engine", "dualconv.parts", "dualconv.threads", "dualconv.processes",
             "dualconv.inference_bands", "dualconv.blocked_matmul", "dualconv.layout",
             "dualconv.kernels.layout")
"""Modules (and their submodules) of the CPU engine and of the kernels' memory order."""

FORBIDDEN_PREFIX = "dualconv.kernels.cpu"
"""Any module whose name starts so: the NumPy twins are reached through dualconv.kernels."""


def _layer_files() -> list[Path]:
    return sorted((ROOT / "dualconv" / "layers").glob("*.py")) + [
        p for p in (ROOT / "dualconv" / "model.py", ROOT / "dualconv" / "trainer.py") if p.exists()]


def _forbidden(target: str) -> bool:
    return target.startswith(FORBIDDEN_PREFIX) or any(
        target == f or target.startswith(f + ".") for f in FORBIDDEN)


def _array_type_tests(tree: ast.AST, rel: str, source: str) -> list[str]:
    """isinstance(..., np.ndarray) and ``is`` comparisons with the numpy module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" \
                and len(node.args) == 2:
            types = node.args[1].elts if isinstance(node.args[1], ast.Tuple) else [node.args[1]]
            if any(isinstance(t, ast.Attribute) and t.attr == "ndarray" for t in types):
                found.append(f"  {rel}:{node.lineno}: {ast.get_source_segment(source, node)}")
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.Is, ast.IsNot))
                                                   for op in node.ops):
            if any(isinstance(o, ast.Name) and o.id in ("np", "numpy")
                   for o in (node.left, *node.comparators)):
                found.append(f"  {rel}:{node.lineno}: {ast.get_source_segment(source, node)}")
    return found


def test_layers_model_and_trainer_know_no_cpu_engine():
    """Layers, Model and the trainer are written once against ``xp``: the CPU engine, the
    NumPy twins and the memory order lie behind dualconv.kernels and dualconv.backend."""
    modules = module_files()
    names = {path: name for name, path in modules.items()}
    files = _layer_files()
    assert files, "no layer files found"
    bad_imports, type_tests = [], []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        for i in imports_of(names[path], path, modules):
            if any(map(_forbidden, i.names)):
                bad_imports.append(f"  {i.where()}: imports {i.target or i.names[0]}")
        source = path.read_text(encoding="utf-8")
        if path.parent.name == "layers":  # a layer reads the same on every backend
            type_tests += _array_type_tests(ast.parse(source), rel, source)
    problems, bad_imports = [], list(dict.fromkeys(bad_imports))
    if bad_imports:
        problems.append("imports of the CPU engine, the NumPy twins or the memory order:\n"
                        + "\n".join(bad_imports))
    if type_tests:
        problems.append("tests of the array type (dispatch on xp through dualconv.backend "
                        "instead):\n" + "\n".join(type_tests))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("target, expected", [
    ("dualconv.engine.parts", True), ("dualconv.kernels.cpu", True),
    ("dualconv.kernels.cpu_blocked", True), ("dualconv.kernels", False),
    ("dualconv.partsx", False), ("dualconv.layout", True)])
def test_the_forbidden_list_matches_modules_and_their_submodules(target, expected):
    assert _forbidden(target) == expected
