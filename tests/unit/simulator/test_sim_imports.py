"""simulator/ has no import cycle: each module gets what it uses passed in."""

from __future__ import annotations

import ast
from pathlib import Path

import simulator

PACKAGE = Path(simulator.__file__).parent


def _imports(path: Path) -> set[str]:
    """The sibling modules a module imports (anywhere in it, TYPE_CHECKING too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found - {"__init__"}


def test_no_module_of_the_simulator_imports_itself_back():
    modules = {p.stem: _imports(p) for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    modules = {name: {m for m in deps if m in modules} for name, deps in modules.items()}

    def cycle_from(start, node, seen):
        for dep in modules[node]:
            if dep == start:
                return [start, node]
            if dep not in seen:
                seen.add(dep)
                found = cycle_from(start, dep, seen)
                if found:
                    return found
        return None

    cycles = {name: cycle_from(name, name, {name}) for name in modules}
    assert {name: c for name, c in cycles.items() if c} == {}
