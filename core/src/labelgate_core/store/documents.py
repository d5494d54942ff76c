"""Helpers shared by store adapters: dotted paths and in-memory application of updates and filters."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .port import Doc, Filter

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def check_field(name: str) -> str:
    if not _FIELD.match(name):
        raise ValueError(f"invalid field name {name!r}")
    return name


def get_path(doc: Mapping[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def apply_update(
    doc: Doc, set: Mapping[str, Any] | None, inc: Mapping[str, float] | None
) -> Doc:
    for path, value in (set or {}).items():
        set_path(doc, check_field(path), value)
    for path, amount in (inc or {}).items():
        current = get_path(doc, check_field(path)) or 0
        set_path(doc, path, current + amount)
    return doc


def upsert_seed(filter: Filter) -> Doc:
    """The document an upsert starts from: the filter's equality conditions."""
    doc: Doc = {}
    for path, cond in filter.items():
        if not (isinstance(cond, Mapping) and any(str(k).startswith("$") for k in cond)):
            set_path(doc, check_field(path), cond)
    return doc
