"""The package structure of docs/architecture.md, enforced on the code.

Every ``import`` in ``src/buzon`` (at the top of a module or inside a function,
and ``importlib.import_module("buzon...")`` with a literal name) is read with
``ast`` and checked against the table "Who may import whom" in
docs/architecture.md, which this test parses: the document is the rule, and a
package or module missing from it fails the test until someone places it.
Also: no module over 400 lines (STYLE practice 11).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
DOC = REPO / "docs" / "architecture.md"
MAX_LINES = 400
ANYTHING = "*"


@dataclass(frozen=True)
class Edge:
    source: str  # the importing unit
    target: str  # the imported unit
    where: str  # file:line


def unit_of(module: str) -> str:
    """``buzon.smtp.session`` → ``smtp``; ``buzon.net`` → ``net``; ``buzon`` → ``buzon``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path, src: Path) -> str:
    name = ".".join(path.relative_to(src).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        if node.level == 0:
            return [node.module or ""]
        base = module.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        return [".".join([*base, node.module] if node.module else base)]
    if (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module",
                                                                             "__import__")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]
    return []


def import_edges(src: Path) -> list[Edge]:
    """Every import from one unit of the ``buzon`` package into another."""
    edges = []
    for path in sorted((src / "buzon").rglob("*.py")):
        module = module_name(path, src)
        source = unit_of(module)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for name in _imported(node, module, path.name == "__init__.py"):
                if name == "buzon" or name.startswith("buzon."):
                    target = unit_of(name)
                    if target != source:
                        edges.append(Edge(source, target, f"{path.relative_to(src)}:{node.lineno}"))
    return edges


def allowed_table(text: str) -> dict[str, set[str]]:
    """Parse the "Who may import whom" table: ``| `unit` | `a`, `b` |`` rows."""
    section = text.split("## Who may import whom", 1)[1].split("\n## ", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        unit = cells[0].strip("`").rstrip("/").removesuffix(".py")
        names = re.findall(r"`([^`]+)`", cells[1])
        if cells[1].startswith("anything"):
            names = [ANYTHING]
        table[unit] = {n.rstrip("/").removesuffix(".py") for n in names}
    return table


def violations(src: Path, table: dict[str, set[str]]) -> list[str]:
    found = []
    units = {unit_of(module_name(p, src)) for p in (src / "buzon").rglob("*.py")}
    for unit in sorted(units - table.keys()):
        found.append(f"{unit}: not placed in the table of docs/architecture.md")
    for edge in import_edges(src):
        allowed = table.get(edge.source, set())
        if ANYTHING not in allowed and edge.target not in allowed:
            found.append(f"{edge.where}: {edge.source} may not import {edge.target}")
    return found


def test_every_import_follows_the_documented_directions() -> None:
    table = allowed_table(DOC.read_text(encoding="utf-8"))
    assert {"app", "smtp", "spool", "delivery", "transform", "storage"} <= table.keys()
    assert violations(SRC, table) == []


def test_only_the_entry_point_imports_the_composition_root() -> None:
    importers = {e.source for e in import_edges(SRC) if e.target == "app"}
    assert importers <= {"__main__"}


def test_the_lower_packages_never_import_smtp() -> None:
    lower = {"storage", "spool", "delivery", "transform", "metrics", "monitor"}
    assert [e for e in import_edges(SRC) if e.source in lower and e.target == "smtp"] == []


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("import buzon.smtp.session\n", "storage may not import smtp"),
        ("def f():\n    from buzon.app import server\n", "storage may not import app"),
        ("from ..smtp import replies\n", "storage may not import smtp"),
        ("import importlib\nimportlib.import_module('buzon.app.main')\n",
         "storage may not import app"),
    ],
)
def test_the_checker_sees_an_upward_import(tmp_path: Path, code: str, expected: str) -> None:
    """The checker itself can fail: a planted upward import, lazy or relative, is reported."""
    for name in ("buzon/__init__.py", "buzon/smtp/__init__.py", "buzon/smtp/replies.py",
                 "buzon/app/__init__.py", "buzon/app/server.py", "buzon/storage/__init__.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "buzon/storage/maildir.py").write_text(code)
    table = {"buzon": set(), "app": {ANYTHING}, "smtp": {"storage"}, "storage": set()}
    assert [v for v in violations(tmp_path, table) if expected in v], violations(tmp_path, table)


def test_an_unplaced_package_is_reported(tmp_path: Path) -> None:
    (tmp_path / "buzon/newthing").mkdir(parents=True)
    (tmp_path / "buzon/__init__.py").write_text("")
    (tmp_path / "buzon/newthing/__init__.py").write_text("")
    assert violations(tmp_path, {"buzon": set()}) == [
        "newthing: not placed in the table of docs/architecture.md"
    ]


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in (SRC / "buzon").rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}
