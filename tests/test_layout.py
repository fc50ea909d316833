"""The package reads as floors: each top-level package imports only from packages on lower floors (or from
itself). A type named only for type checkers (under ``if TYPE_CHECKING:``) is not an import at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import llmscratch

PACKAGE = Path(llmscratch.__file__).parent

# lowest first; a package may import the packages on the floors below its own
FLOORS = [
    ("util",),
    ("backends", "tokenizers"),
    ("ops", "data"),
    ("kernels",),
    ("layers",),
    ("models",),
    ("generation", "interop", "reference"),
    ("tasks",),
    ("training", "viz"),
    ("cli",),
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def _runtime_imports(tree: ast.Module) -> list[ast.ImportFrom | ast.Import]:
    """Every import statement, less those under ``if TYPE_CHECKING:``."""
    found: list[ast.ImportFrom | ast.Import] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def imported_packages(path: Path) -> set[str]:
    """The top-level llmscratch packages a module imports at run time."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    package = list(parts[:-1])  # the module's own package, as a list of names below llmscratch
    out = set()
    for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names if a.name.startswith("llmscratch.")]
            out |= {n[1] for n in names}
        elif node.level:
            base = package[: len(package) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            out |= {target[0]} if target else {a.name for a in node.names}
        elif node.module and node.module.startswith("llmscratch."):
            out.add(node.module.split(".")[1])
    return out


def test_every_package_has_a_floor():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(FLOOR), f"give each package a floor: {sorted(packages ^ set(FLOOR))}"
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert loose == [], f"modules belong in a package, not loose at the top: {loose}"


def test_imports_point_down():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) == 1:  # the package's own __init__ and __main__ sit above every floor
            continue
        own = parts[0]
        for other in sorted(imported_packages(path) - {own}):
            if other in FLOOR and FLOOR[other] >= FLOOR[own]:
                wrong.append(f"{path.relative_to(PACKAGE)} imports {other} (floor {FLOOR[other]} >= {FLOOR[own]})")
    assert wrong == [], "imports that run up or sideways:\n" + "\n".join(wrong)


def test_the_check_sees_an_upward_import(tmp_path):
    """The checker itself: a layer that imports training is caught, a type-only import is not."""
    layer = PACKAGE / "layers"
    fake = layer / "_probe_for_test.py"
    fake.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..tasks import Task\n")
    try:
        assert imported_packages(fake) == set()
        fake.write_text("from ..training.config import TrainConfig\nimport llmscratch.cli\n")
        assert imported_packages(fake) == {"training", "cli"}
    finally:
        fake.unlink()


def test_no_two_test_files_share_a_name():
    """pytest imports test files by their base name: two of one name shadow each other or fail to collect."""
    root = Path(__file__).resolve().parents[1]
    names = [p.name for folder in ("tests", "benchmarks") for p in (root / folder).rglob("test_*.py")]
    assert sorted(names) == sorted(set(names))
