"""The layers of the code base import only downwards (see app/__init__.py): the core
imports no store, use case, web or agent; stores no use case, web or agent; use cases no
web or agent; tables/ nothing of agents/; bench/ nothing of tests/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "app/models.py": ("app.stores", "app.usecases", "app.web", "agents", "tables"),
    "app/settings.py": ("app.stores", "app.usecases", "app.web", "agents", "tables"),
    "app/errors.py": ("app.stores", "app.usecases", "app.web", "agents", "tables"),
    "app/auth.py": ("app.stores", "app.usecases", "app.web", "agents", "tables"),
    "app/stores": ("app.usecases", "app.web", "app.cli", "agents", "tables"),
    "app/usecases": ("app.web", "app.cli", "agents", "tables"),
    "app/web": ("agents", "tables"),
    "tables": ("agents",),
    "bench": ("tests",),
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_imports_go_down_the_layers(where: str) -> None:
    files = [ROOT / where] if where.endswith(".py") else sorted((ROOT / where).rglob("*.py"))
    assert files
    wrong = [f"{f.relative_to(ROOT)} imports {name}"
             for f in files for name in sorted(imported(f))
             if any(name == p or name.startswith(p + ".") for p in FORBIDDEN[where])]
    assert not wrong, wrong
