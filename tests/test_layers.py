"""The dependency rule, read from the source: every import of every module, top level or inside a
function, is checked against the layer it comes from, and the module graph has no cycle.

    hil root      the method (hil/*.py)                    imports: the hil root
    hil.studies   sweeps, gradient checks, reports, watch  imports: the hil root, hil.studies, sim.factory
    drivers       instruments and the bench backend        imports: the hil root, drivers
    sim           twin, ngspice, emulators                 imports: the hil root, drivers, sim
    hil.cli       the `hil` command                        imports: anything; nothing imports it
"""

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hil", "drivers", "sim")
ALLOWED = {
    "hil root": {"hil root"},
    "hil.studies": {"hil root", "hil.studies", "sim.factory"},
    "drivers": {"hil root", "drivers"},
    "sim": {"hil root", "drivers", "sim", "sim.factory"},
    "sim.factory": {"hil root", "drivers", "sim", "sim.factory"},
    "hil.cli": {"hil root", "hil.studies", "hil.cli", "drivers", "sim", "sim.factory"},
}


def layer(module: str) -> str:
    if module == "sim.factory":
        return "sim.factory"
    for prefix in ("hil.cli", "hil.studies"):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    top = module.split(".")[0]
    return "hil root" if top == "hil" else top


def modules(root: Path) -> dict[str, Path]:
    """Every module of the three packages, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in (root / package).rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, name: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) of every import of our own packages in one file; `from p import m` counts as
    an import of p.m when m is a module, else of p."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.append((node.lineno, full if full in known else base))
    return [(line, m) for line, m in out if m.split(".")[0] in PACKAGES]


def graph(root: Path) -> tuple[dict[str, set[str]], list[str]]:
    """The import graph of our modules, and every import that breaks the layer rule."""
    found = modules(root)
    edges: dict[str, set[str]] = {m: set() for m in found}
    broken = []
    for name, path in found.items():
        for line, target in imports(path, name, set(found)):
            edges[name].add(target)
            here, there = layer(name), layer(target)
            if there == "hil.cli" and here != "hil.cli":
                broken.append(
                    f"{path.relative_to(root)}:{line}: {name} imports {target}: nothing imports the CLI"
                )
            elif there not in ALLOWED[here]:
                broken.append(
                    f"{path.relative_to(root)}:{line}: {name} ({here}) imports {target} ({there}); "
                    f"{here} may import only {', '.join(sorted(ALLOWED[here]))}"
                )
    return edges, broken


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (a package importing its own submodules is not one)."""
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt == node or node.startswith(nxt + "."):  # a module and the package holding it
                continue
            if state.get(nxt) == "open":
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_every_import_keeps_the_layer_rule():
    _, broken = graph(ROOT)
    assert broken == [], "\n".join(broken)


def test_there_is_no_import_cycle():
    edges, _ = graph(ROOT)
    assert sum(len(targets) for targets in edges.values()) > 50  # the scan sees the real imports
    assert cycles(edges) == []


@pytest.fixture
def tree(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


@pytest.mark.parametrize(
    "file, line, rule",
    [
        ("hil/eqprop.py", "from sim.twin import TwinBackend", "hil root may import only hil root"),
        ("hil/train.py", "import drivers.bench", "hil.train (hil root) imports drivers.bench"),
        ("drivers/bench.py", "    from sim.virtual.bench import VirtualBench", "drivers may import only"),
        ("hil/studies/sweep.py", "from sim.twin import TwinBackend", "hil.studies may import only"),
        ("sim/factory.py", "from hil.cli import main", "nothing imports the CLI"),
        ("hil/studies/report.py", "from ..cli.common import StopFlag", "nothing imports the CLI"),
    ],
)
def test_a_forbidden_import_is_caught(tree, file, line, rule):
    path = tree / file
    text = path.read_text()
    if line.startswith("    "):  # inside a function, where lazy imports hide
        text += f"\n\ndef _late() -> None:\n{line}\n"
    else:
        text = f"{line}\n{text}"
    path.write_text(text)
    _, broken = graph(tree)
    assert len(broken) == 1 and rule in broken[0], broken


def test_a_cycle_is_caught(tree):
    (tree / "drivers" / "roles.py").write_text(
        "import drivers.bench\n" + (tree / "drivers/roles.py").read_text()
    )
    edges, _ = graph(tree)
    found = cycles(edges)
    assert found and {"drivers.roles", "drivers.bench"} <= set(found[0])
