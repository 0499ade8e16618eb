"""Functions named as ``module:function``: found beside the declaring file first, then on ``sys.path``.

A reference that cannot be used is a sentence for the checks (``Resolved.problem``), never an exception: the
user sees every problem of a declaration at once, before anything runs.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable


@dataclass(frozen=True)
class Resolved:
    fn: Callable[..., Any] | None
    problem: str | None = None


def resolve(ref: Any, base: Path | None) -> Resolved:
    """A callable as is; ``"module:function"`` imported (from ``base`` first, then ``sys.path``)."""
    if callable(ref):
        return Resolved(ref)
    if not isinstance(ref, str) or ref.count(":") != 1 or not all(p.strip() for p in ref.split(":")):
        return Resolved(None, f"{ref!r} is not module:function")
    module_name, _, attr = (p.strip() for p in ref.partition(":"))
    try:
        module = _import(module_name, base)
    except ModuleNotFoundError as exc:
        where = f"beside the file ({base}) or on sys.path" if base is not None else "on sys.path"
        missing = f"no module named {exc.name!r}" if exc.name else str(exc)
        return Resolved(None, f"{ref!r} cannot be imported: {missing} {where}")
    except Exception as exc:  # noqa: BLE001 - a module that fails at import is the user's problem to see
        return Resolved(None, f"{ref!r} cannot be imported: module {module_name!r} raised "
                              f"{type(exc).__name__}: {exc}")
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            return Resolved(None, f"{ref!r} cannot be imported: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        return Resolved(None, f"{ref!r} is a {type(obj).__name__}, not a function")
    return Resolved(obj)


def arity(fn: Callable[..., Any], allowed: tuple[int, ...]) -> int | None:
    """How many positional arguments of ``allowed`` ``fn`` takes (the largest it accepts), or None."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return max(allowed)  # a builtin without a signature: trust it
    for n in sorted(allowed, reverse=True):
        try:
            sig.bind(*([None] * n))
            return n
        except TypeError:
            continue
    return None


def _import(name: str, base: Path | None) -> ModuleType:
    top = name.split(".")[0]
    if base is not None and ((base / f"{top}.py").is_file() or (base / top / "__init__.py").is_file()):
        if str(base) not in sys.path:
            sys.path.insert(0, str(base))  # its own imports of modules beside it work too
        if "." not in name and (base / f"{name}.py").is_file():
            return _load_file(name, base / f"{name}.py")
    return importlib.import_module(name)


def _load_file(name: str, path: Path) -> ModuleType:
    """The module at ``path``, even when a module of that name was loaded from elsewhere (two declarations in
    two folders may each have a ``steps.py``)."""
    path = path.resolve()
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() == path:
        return loaded
    key = name if loaded is None else f"_triage_graph_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(key, None)
        raise
    return module
