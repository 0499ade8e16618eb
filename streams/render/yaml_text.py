"""Writing YAML as text: the rendered files carry comments and a fixed layout, which a YAML dumper has not.

Only scalars need care: a value that YAML would read as something else (``"6"``, ``"yes"``, ``"1e3"``,
``"10:20"``) is written double-quoted, as JSON (a JSON string is a valid YAML double-quoted scalar).
"""
from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterable, Mapping

_PLAIN = re.compile(r"[A-Za-z0-9_/.][A-Za-z0-9_./:,@+=${}-]*")
_NOT_A_STRING = re.compile(  # what YAML 1.1 (PyYAML, Kubernetes' parser) resolves to a number or a time
    r"[-+]?(0[box]?[0-9a-fA-F_]*|[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?|\.[0-9_]+([eE][-+]?[0-9]+)?"
    r"|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?)")
_WORDS = {"y", "n", "yes", "no", "true", "false", "on", "off", "null", "~", ".inf", ".nan"}


def scalar(value: str | int) -> str:
    """``value`` as a YAML scalar that reads back as exactly this (an int stays an int, a str a str)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"not a scalar for a deploy file: {value!r}")
    if isinstance(value, int):
        return str(value)
    if (_PLAIN.fullmatch(value) and not _NOT_A_STRING.fullmatch(value) and value.lower() not in _WORDS
            and not value.endswith(":") and ": " not in value):
        return value
    return json.dumps(value)


def flow(items: Iterable[str]) -> str:
    """A list on one line, every item quoted: ``["triage", "worker", "ingest"]``."""
    return json.dumps(list(items))


def mapping(values: Mapping[str, str | int], indent: int) -> list[str]:
    pad = " " * indent
    return [f"{pad}{scalar(k)}: {scalar(v)}" for k, v in values.items()]


def comment(text: str, indent: int = 0, width: int = 0) -> list[str]:
    """``text`` as comment lines, one per line of it (a bare ``#`` for an empty one); with ``width``, each line
    is wrapped to at most that many characters."""
    pad = " " * indent
    lines = text.splitlines()
    if width:
        lines = [part for para in _paragraphs(lines)
                 for part in ([para] if para.startswith(" ") or not para else textwrap.wrap(para, width - indent - 2))]
    return [f"{pad}# {line}".rstrip() for line in lines]


def _paragraphs(lines: list[str]) -> list[str]:
    """Consecutive lines joined into one; an empty or indented line (a command to copy) stands alone."""
    out: list[str] = []
    joining = False
    for line in lines:
        if not line or line.startswith(" "):
            out.append(line)
            joining = False
        elif joining:
            out[-1] += " " + line
        else:
            out.append(line)
            joining = True
    return out


def header(command: str, pipeline: str) -> list[str]:
    """The first lines of every rendered file: where it comes from, and that it is not edited by hand."""
    return [f"# Rendered by `{command}` from the declaration of the pipeline {pipeline!r}.",
            f"# Do not edit by hand: change the declaration and run `{command}` again.", "#"]
