"""The import graph of `bench` against the allowed-imports table of docs/architecture.md.

Every module under bench/ is read with `ast` (nothing is imported): each `import bench...` / `from bench... import`
anywhere in the module counts, at the top level or inside a function; imports under `if TYPE_CHECKING:` do not
(they never run). The test fails naming the edge when an import is not allowed by the table, and naming the
modules when there is an import cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "architecture.md"


# ------------------------------------------------------------------------------------------- reading the code


def modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under root/bench (a package's __init__ is the package)."""
    out = {}
    for path in sorted((root / "bench").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or \
        (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The bench modules that module `name` (file `path`) imports, at any depth of the file."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                for stmt in child.orelse:  # the `else:` of `if TYPE_CHECKING:` does run
                    visit_statement(stmt)
                continue
            visit_statement(child)

    def visit_statement(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "bench")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package of this module, `level - 1` packages up
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "bench":
                for alias in node.names:  # `from bench.zoo import checkpoints` imports the module bench.zoo.checkpoints
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in known else target)
        visit(node)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    found.discard(name)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    mods = modules(root)
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


# ------------------------------------------------------------------------------------------- reading the table


def read_table(text: str) -> tuple[dict[str, int], dict[str, set[str]], set[tuple[str, str]]]:
    """(layer per unit, allowed units per unit, allowed module-to-module exceptions) from the architecture doc."""
    def block(tag: str) -> list[str]:
        m = re.search(rf"<!-- {tag}[^>]*-->(.*?)<!-- /{tag} -->", text, re.S)
        assert m, f"docs/architecture.md has no <!-- {tag} --> ... <!-- /{tag} --> block"
        return [line for line in m.group(1).splitlines() if line.startswith("|")][2:]  # skip header + rule

    layers: dict[str, int] = {}
    allowed: dict[str, set[str]] = {}
    for line in block("import-table"):
        cols = [c.strip() for c in line.strip("|").split("|")]
        unit = cols[1].strip("`")
        assert unit not in layers, f"unit {unit!r} has two rows in the import table"
        layers[unit] = int(cols[0])
        allowed[unit] = set(re.findall(r"`([^`]+)`", cols[2]))
    exceptions = set()
    for line in block("import-exceptions"):
        cols = [c.strip() for c in line.strip("|").split("|")]
        exceptions.add((cols[0].strip("`"), cols[1].strip("`")))
    return layers, allowed, exceptions


def unit_of(module: str, units: set[str]) -> str | None:
    """The unit of a dotted module name: the longest unit that names it or a package above it."""
    rel = module.split(".")[1:]
    if not rel:
        return "bench" if "bench" in units else None
    for n in range(len(rel), 0, -1):
        candidate = ".".join(rel[:n])
        if candidate in units:
            return candidate
    return None


# ------------------------------------------------------------------------------------------- the checks


def forbidden_edges(graph: dict[str, set[str]], allowed: dict[str, set[str]],
                    exceptions: set[tuple[str, str]] = frozenset()) -> list[str]:
    """One line per import the table does not allow (or per module whose unit has no row)."""
    units = set(allowed)
    problems = []
    for src in sorted(graph):
        su = unit_of(src, units)
        if su is None:
            problems.append(f"{src}: its unit is not in the import table of docs/architecture.md (add a row)")
            continue
        for dst in sorted(graph[src]):
            du = unit_of(dst, units)
            if du is None:
                problems.append(f"{src} -> {dst}: the unit of {dst} is not in the import table (add a row)")
            elif du != su and du not in allowed[su] and (src, dst) not in exceptions:
                problems.append(f"{src} -> {dst}: {su} may not import {du} "
                                f"(allowed: {', '.join(sorted(allowed[su])) or 'nothing'})")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def strongconnect(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


def cycle_path(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest import cycle through the first module of a strongly connected set: [a, b, ..., a]."""
    start, inside = component[0], set(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ())):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w in inside and w not in previous:
                    previous[w] = v
                    nxt.append(w)
        frontier = nxt
    return component


def layering_problems(layers: dict[str, int], allowed: dict[str, set[str]]) -> list[str]:
    """Rows that list an unknown unit, or a unit on the same or a higher layer (the table must be layered)."""
    problems = []
    for unit, targets in sorted(allowed.items()):
        for t in sorted(targets):
            if t not in layers:
                problems.append(f"{unit} lists {t!r}, which has no row")
            elif layers[t] >= layers[unit]:
                problems.append(f"{unit} (layer {layers[unit]}) lists {t} (layer {layers[t]}): not a lower layer")
    return problems


# ------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def table() -> tuple[dict[str, int], dict[str, set[str]], set[tuple[str, str]]]:
    return read_table(DOC.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_every_import_is_allowed_by_the_table(graph, table):
    _, allowed, exceptions = table
    problems = forbidden_edges(graph, allowed, exceptions)
    assert not problems, "imports docs/architecture.md does not allow:\n" + "\n".join(problems)


def test_there_is_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, "import cycles between modules:\n" + "\n".join(
        " -> ".join(cycle_path(graph, c)) + (f"  ({len(c)} modules in the cycle)" if len(c) > 2 else "")
        for c in found)


def test_the_table_is_layered_and_names_real_units(graph, table):
    layers, allowed, exceptions = table
    assert not layering_problems(layers, allowed)
    used = {unit_of(m, set(layers)) for m in graph}
    assert set(layers) <= used, f"rows for units with no module: {sorted(set(layers) - used)}"
    for src, dst in sorted(exceptions):  # an exception no longer needed goes
        assert dst in graph.get(src, set()), f"exception {src} -> {dst}: {src} no longer imports {dst}; remove it"
    assert [u for u, targets in allowed.items() if "cli" in targets] == ["__main__"]  # nothing else imports cli


def test_the_checker_reports_a_forbidden_edge_and_a_cycle():
    allowed = {"errors": set(), "store": {"errors"}, "cli": {"store", "errors"}}
    fake = {"bench.errors": set(), "bench.store": {"bench.errors", "bench.cli"}, "bench.cli": {"bench.store"}}
    problems = forbidden_edges(fake, allowed)
    assert problems == ["bench.store -> bench.cli: store may not import cli (allowed: errors)"]
    assert cycles(fake) == [["bench.cli", "bench.store"]]
    assert cycle_path(fake, ["bench.cli", "bench.store"]) == ["bench.cli", "bench.store", "bench.cli"]
    ring = {"bench.a": {"bench.b"}, "bench.b": {"bench.c"}, "bench.c": {"bench.a"}}
    assert cycle_path(ring, cycles(ring)[0]) == ["bench.a", "bench.b", "bench.c", "bench.a"]
    assert cycles({"bench.a": {"bench.b"}, "bench.b": {"bench.c"}, "bench.c": set()}) == []
    # an exception allows exactly its one edge
    assert forbidden_edges(fake, allowed, {("bench.store", "bench.cli")}) == []
    # a module of a unit without a row, and a layering error in the table, are reported
    assert forbidden_edges({"bench.newthing": set()}, allowed) == [
        "bench.newthing: its unit is not in the import table of docs/architecture.md (add a row)"]
    assert layering_problems({"a": 0, "b": 0}, {"a": {"b"}, "b": set()}) == ["a (layer 0) lists b (layer 0): not a lower layer"]


def test_function_level_imports_count_and_type_checking_ones_do_not(tmp_path):
    pkg = tmp_path / "bench"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("X = 1\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "mod.py").write_text("from bench.sub import mod\n")
    (pkg / "high.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from bench.sub import mod\n"
        "def f():\n    from bench.low import X\n    return X\n"
        "def g():\n    try:\n        from .sub import mod\n    except ImportError:\n        pass\n")
    g = import_graph(tmp_path)
    assert g["bench.high"] == {"bench.low", "bench.sub.mod"}  # the relative import in a try, inside g(), counts
    assert g["bench.sub.mod"] == set()  # a module importing itself is no edge
    (pkg / "high.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import bench.low\n")
    assert import_graph(tmp_path)["bench.high"] == set()


def test_the_doc_table_matches_the_unit_mapping(table):
    layers, _, _ = table
    units = set(layers)
    assert unit_of("bench.metrics.frechet", units) == "metrics.frechet"
    assert unit_of("bench.metrics.fd", units) == "metrics"
    assert unit_of("bench.adapters.hf.weights", units) == "adapters"
    assert unit_of("bench", units) == "bench"
    assert unit_of("bench.__main__", units) == "__main__"
