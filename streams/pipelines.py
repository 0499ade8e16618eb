"""Finding a pipeline by what a user types: a shipped name, ``module:attribute``, or a path to a TOML file.

Shipped pipelines are entry points of the group ``triage.pipelines`` (this project's ``pyproject.toml`` names
its own), so the engine finds them without importing them by name and another installed package can add one.
"""
from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from streams.errors import PipelineError
from streams.pipeline import Pipeline

GROUP = "triage.pipelines"
DEFAULT = "support"
ENV = "TRIAGE_PIPELINE"
_loaded: dict[str, Pipeline] = {}


def shipped() -> dict[str, str]:
    """``{name: "module:attribute"}`` of every installed pipeline."""
    return {ep.name: ep.value for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name)}


def load(spec: str | None = None) -> Pipeline:
    """The pipeline ``spec`` names (default: support), checked. PipelineError says why one cannot be had."""
    spec = (spec or DEFAULT).strip() or DEFAULT
    if spec not in _loaded:
        _loaded[spec] = _resolve(spec).check()
    return _loaded[spec]


def _resolve(spec: str) -> Pipeline:
    if spec.endswith(".toml") or Path(spec).suffix == ".toml":
        from streams.graph.toml_form import load_file  # the graph form is optional to the engine's start-up
        return _as_pipeline(load_file(Path(spec)), spec)
    named = shipped()
    if spec in named:
        return _as_pipeline(_attribute(named[spec], spec), spec)
    if ":" in spec:
        return _as_pipeline(_attribute(spec, spec), spec)
    raise PipelineError(f"no pipeline {spec!r}: shipped pipelines are {', '.join(named) or 'none'}; "
                        f"or give module:attribute, or a path to a .toml file")


def _attribute(target: str, spec: str) -> Any:
    module, _, attr = target.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `--pipeline my_steps:PIPELINE` means the module beside the user
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise PipelineError(f"pipeline {spec!r}: cannot import module {module!r} ({exc})") from exc
    for part in attr.split(".") if attr else ():
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PipelineError(f"pipeline {spec!r}: module {module!r} has no attribute {attr!r}") from None
    return obj


def _as_pipeline(obj: Any, spec: str) -> Pipeline:
    """A Pipeline as is; a graph compiled; a callable called (a factory)."""
    compile_ = getattr(obj, "compile", None)
    if callable(compile_) and not isinstance(obj, Pipeline):
        obj = compile_()
    elif callable(obj) and not isinstance(obj, Pipeline):
        obj = obj()
    if not isinstance(obj, Pipeline):
        raise PipelineError(f"pipeline {spec!r} names a {type(obj).__name__}, not a pipeline")
    return obj


def active() -> Pipeline:
    """The pipeline this process works on: ``TRIAGE_PIPELINE`` (what ``--pipeline`` sets), else support."""
    return load(os.environ.get(ENV))
