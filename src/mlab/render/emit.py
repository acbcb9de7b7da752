"""The YAML emitter's core: block-style lines of plain dicts, lists and scalars.

Typed so that mypyc can compile it (``scripts/setup.d/10-compiled-emitter.sh`` builds it
into the virtualenv as the module ``mlab_emitc``, stamped with this file's sha256);
:mod:`mlab.render.dump` uses the compiled module when its stamp matches this file and this
module otherwise. Both give the same bytes; compiled, a 10,000-user site's 2.8 million
lines take about half the time (issue 18: the writer was the largest part of
``mlab render``). Nothing here imports the rest of MLab, so the module compiles alone.

Rules (see :mod:`mlab.render.dump` for the format): a string is plain only when PyYAML's
YAML 1.1 resolver reads it back as that string, else JSON-style double-quoted, or a
literal block when it spans lines; keys keep their insertion order; kubectl's indentation.
"""

from __future__ import annotations

import json
import re

import yaml

_PLAIN = re.compile(r"^[A-Za-z0-9_./][A-Za-z0-9_./@+=:-]*(?<!:)( [A-Za-z0-9_./@+=()-]+)*$")
_RESOLVER = yaml.resolver.Resolver()
_STR_TAG = "tag:yaml.org,2002:str"
_PRINTABLE = re.compile(
    r"^[\x20-\x7e\u00a0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff\n]*$"
)
"""YAML 1.1 printable characters, minus the BOM and U+2028/U+2029 (YAML line breaks)."""
_CACHE: dict[str, str] = {}
_CACHE_MAX = 65536


def scalar_str(value: str) -> str:
    """A one-line string as a YAML flow scalar (plain when unambiguous, else double-quoted).

    Memoized (up to 65,536 strings, then the memo starts again): a big site repeats the
    same keys and values.
    """
    done = _CACHE.get(value)
    if done is not None:
        return done
    if value and _PLAIN.fullmatch(value) and (
        _RESOLVER.resolve(yaml.ScalarNode, value, (True, False)) == _STR_TAG
    ):
        text = value
    else:
        text = quote(value)
    if len(_CACHE) >= _CACHE_MAX:
        # Start again rather than stop caching: a big site's per-user strings (names,
        # claims) come in runs, one user after the other, so the fresh ones must fit.
        _CACHE.clear()
    _CACHE[value] = text
    return text


def quote(value: str) -> str:
    """``value`` double-quoted (JSON escapes, plus ``\\u`` for what YAML forbids raw)."""
    text: str = json.dumps(value, ensure_ascii=False)
    if _PRINTABLE.fullmatch(value):
        return text
    # Escape what YAML does not allow unescaped (DEL, C1 controls, surrogates, BOM...).
    return "".join(
        ch if _PRINTABLE.fullmatch(ch) else (
            f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"
        )
        for ch in text
    )


def scalar(value: object) -> str:
    """Any scalar (str, bool, None, int, float) as YAML.

    Raises:
        TypeError: another type.
    """
    if isinstance(value, str):
        return scalar_str(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value == float("inf"):
            return ".inf"
        if value == float("-inf"):
            return "-.inf"
        return repr(value)
    raise TypeError(f"dump_yaml: cannot write a {type(value).__name__}")


def literal(value: str, indent: str) -> str | None:
    """A literal block scalar for a multi-line string, or None if one cannot carry it."""
    if "\n" not in value or not _PRINTABLE.fullmatch(value) or value[:1] in (" ", "\n"):
        return None
    if value.endswith("\n"):
        if value.endswith("\n\n"):
            return None
        head = "|"
        body = value[:-1]
    else:
        head = "|-"
        body = value
    lines = body.split("\n")
    for line in lines:
        if line.endswith(" ") or line.startswith(" \t"):
            return None
    parts = [head]
    for line in lines:
        parts.append("\n" + indent + line if line else "\n")
    return "".join(parts)


def _multiline(value: str, indent: str) -> str:
    block = literal(value, indent)
    return block if block is not None else quote(value)


def emit(value: object, indent: str, out: list[str]) -> None:
    """Append the block-style lines of a mapping or a list at ``indent`` to ``out``.

    Raises:
        TypeError: a value that is not a dict, list, str, bool, None, int or float.
    """
    if isinstance(value, dict):
        emit_map(value, indent, indent, out)
    elif isinstance(value, list):
        emit_seq(value, indent, out)
    else:
        raise TypeError(f"dump_yaml: cannot write a {type(value).__name__} as a block")


def emit_map(value: dict, indent: str, first: str, out: list[str]) -> None:  # type: ignore[type-arg]
    """A mapping's entries at ``indent``; the first starts with ``first`` (``- `` in a list).

    Hot path (a 10,000-user site writes 2.4 million entries): one string built per line.
    """
    sub = indent + "  "
    prefix = first
    for key, item in value.items():
        k = scalar_str(key) if isinstance(key, str) else scalar(key)
        if isinstance(item, str):
            if "\n" in item:
                out.append(f"{prefix}{k}: {_multiline(item, sub)}")
            else:
                out.append(f"{prefix}{k}: {scalar_str(item)}")
        elif isinstance(item, dict):
            if item:
                out.append(f"{prefix}{k}:")
                emit_map(item, sub, sub, out)
            else:
                out.append(f"{prefix}{k}: {{}}")
        elif isinstance(item, list):
            if item:
                out.append(f"{prefix}{k}:")
                # kubectl style: a list under a key sits at the key's indent.
                emit_seq(item, indent, out)
            else:
                out.append(f"{prefix}{k}: []")
        else:
            out.append(f"{prefix}{k}: {scalar(item)}")
        prefix = indent


def emit_seq(value: list, indent: str, out: list[str]) -> None:  # type: ignore[type-arg]
    """A list's items at ``indent``."""
    first = indent + "- "
    sub = indent + "  "
    for item in value:
        if isinstance(item, dict):
            if item:
                emit_map(item, sub, first, out)
            else:
                out.append(f"{indent}- {{}}")
        elif isinstance(item, list):
            if item:
                # a list in a list is indented one step
                out.append(f"{indent}-")
                emit_seq(item, sub, out)
            else:
                out.append(f"{indent}- []")
        elif isinstance(item, str) and "\n" in item:
            out.append(f"{indent}- {_multiline(item, sub)}")
        else:
            out.append(f"{first}{scalar(item)}")
