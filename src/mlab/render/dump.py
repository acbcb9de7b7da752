"""Deterministic, fast YAML for rendered objects (plain dicts, lists, str, int, bool, None).

Invariant: ``yaml.safe_load_all(dump_yaml(objs))`` gives back exactly ``objs``, and the same
objects always give the same bytes (keys keep their insertion order, which the renderers
fix). Block style as kubectl prints it; a string is written plain only when PyYAML's own
YAML 1.1 resolver reads it back as that same string (so ``"yes"``, ``"1:20"``, ``"6"`` and
``"0400"`` are quoted), otherwise JSON-style double-quoted (a subset of YAML), or as a
literal block when it spans lines. A NetworkPolicy's ``mlab.io/edge`` annotation is also
written as a ``# ...`` comment line above its document.

Why not PyYAML's dumper: this emitter is several times faster on 1,000-user sites
(``benchmarks/bench_render.py`` measures the ratio in the same run) and writes comments.
The lines themselves come from :mod:`mlab.render.emit`, compiled by mypyc when built.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

from mlab.compiled import stamped_module
from mlab.render import emit as _pure
from mlab.render.common import ANNOTATION_EDGE

COMPILED_MODULE = "mlab_emitc"
"""The mypyc build of :mod:`mlab.render.emit` (scripts/setup.d/10-compiled-emitter.sh)."""


def compiled_core() -> ModuleType | None:
    """The compiled emitter when it is installed and built from this very ``emit.py``
    (:func:`mlab.compiled.stamped_module`); else None (the pure module gives the same
    bytes, only slower)."""
    return stamped_module(COMPILED_MODULE, Path(_pure.__file__))


_core: Any = compiled_core() or _pure


def dump_document(obj: dict[str, Any]) -> str:
    """One object as a YAML document body (no ``---``), ending in a newline."""
    out: list[str] = []
    edge = (obj.get("metadata") or {}).get("annotations", {}).get(ANNOTATION_EDGE)
    if edge:
        out.append(f"# {edge}")
    if not obj:
        out.append("{}")
    else:
        _core.emit(obj, "", out)
    out.append("")  # the final newline, without copying the joined text again
    return "\n".join(out)


def dump_yaml(objs: Iterable[dict[str, Any]], header: str | None = None) -> str:
    """Objects as multi-document YAML, each document introduced by ``---``.

    Args:
        objs: plain dicts (str keys; str, int, bool, None, float, dict and list values).
        header: optional comment text (one or more lines) written at the very top.

    Returns:
        The YAML text; empty input gives an empty string (or just the header).

    Raises:
        TypeError: a value of another type.
    """
    parts = []
    if header:
        parts.append("".join(f"# {line}".rstrip() + "\n" for line in header.splitlines()))
    for obj in objs:
        parts.append("---\n")
        parts.append(dump_document(obj))
    return "".join(parts)
