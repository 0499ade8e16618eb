"""The engine knows no pipeline: nothing under streams/ imports processors/ (or any pipeline's package).

Read from the source with the standard ast module, so an import inside a function counts too. A pipeline is
found at run time by name (entry points), by ``module:attribute`` or by a file, never by an import.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("processors",)


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def test_the_engine_imports_no_pipeline() -> None:
    offending = [f"{p.relative_to(ROOT)}:{line}: import {name}"
                 for p in sorted((ROOT / "streams").rglob("*.py"))
                 for line, name in _imports(p) if name.split(".")[0] in FORBIDDEN]
    assert not offending, "the engine imports a pipeline:\n" + "\n".join(offending)


def test_the_check_sees_an_import_inside_a_function(tmp_path: Path) -> None:
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from processors.case import evolve\n    import processors.join\n")
    assert [n for _, n in _imports(f)] == ["processors.case", "processors.join"]
