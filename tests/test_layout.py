"""The package's own shape: no module takes another module's private names, so each private
module's underscore names can change without a search through the others."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "atomicfile"
MODULES = sorted(PACKAGE.glob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _reaches(path: Path) -> list[str]:
    """`from ._x import _y` and `_x._y` (where `_x` is a sibling module) in `path`."""
    tree = ast.parse(path.read_text(), str(path))
    siblings = {p.stem for p in MODULES}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            for alias in node.names:
                if _private(alias.name):
                    where = f"{path.name}:{node.lineno}"
                    found.append(f"{where} from .{node.module} import {alias.name}")
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in siblings
            and node.value.id != path.stem
            and _private(node.attr)
        ):
            found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_module_takes_another_modules_private_names(path: Path) -> None:
    assert _reaches(path) == []
