"""Tasks of the partial-join and loop graph (pipeline.toml beside this file)."""
from __future__ import annotations

from typing import Any


def left(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    return {"n": input["n"]}


def right(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    return {"n2": input["n"] * 2}


def late(input: dict[str, Any], deps: dict[str, Any]) -> dict[str, Any]:
    return {"late": True}


def merge(input: dict[str, Any], deps: dict[str, Any], ctx: Any) -> dict[str, Any]:
    return {"total": deps["left"]["n"] + deps["right"]["n2"], "had_late": deps["late"] is not None,
            "missing": list(ctx.missing)}


def refine(input: dict[str, Any], deps: dict[str, Any], ctx: Any) -> dict[str, Any]:
    before = deps.get("refine") or {"score": 0, "rounds": []}
    return {"score": before["score"] + 1, "rounds": before["rounds"] + [ctx.round]}


def good_enough(input: dict[str, Any], deps: dict[str, Any]) -> bool:
    return deps["refine"]["score"] >= input["target"]
