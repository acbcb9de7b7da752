"""Read one YAML document fast and strictly: libyaml's parser, no key given twice.

Why: the site file of a 10,000-user cluster is 2.4 MB of YAML; PyYAML's pure-Python loader
took about 10 s of CPU on it, its C loader (``yaml.CSafeLoader``) about 4 s, most of it in
the generic Python constructor and the garbage collector (issue 18). This module keeps
PyYAML's semantics (YAML 1.1 safe tags and implicit types, merge keys, anchors) and error
marks, and builds the common nodes (plain strings, mappings with string keys, sequences)
in one tight recursive walk; every other node goes through PyYAML's SafeConstructor.

Invariants:
- ``load_strict(text)`` returns what ``yaml.safe_load(text)`` returns, for any document
  whose mappings have no key given twice;
- a key given twice in one mapping raises :class:`yaml.constructor.ConstructorError` with
  the second key's mark (line and column, 0-based) and the problem
  ``key 'name' is given twice`` (YAML 1.2 requires unique keys; PyYAML silently keeps the
  last one, which would hide a mistake such as two ``users:`` lists).
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from mlab.compiled import stamped_module

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"

_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""libyaml's parser when PyYAML was built with it (Debian's and PyPI's wheels are)."""


def _duplicate(key: Any, key_node: yaml.Node) -> ConstructorError:
    return ConstructorError(None, None, f"key {key!r} is given twice", key_node.start_mark)


class StrictLoader(_Base):  # type: ignore[misc,valid-type]
    """PyYAML's safe loader (C parser when available) that refuses a key given twice."""

    # The constructor state PyYAML's BaseConstructor keeps (typed here: the base is dynamic).
    state_generators: list[Any]
    constructed_objects: dict[Any, Any]
    recursive_objects: dict[Any, Any]

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        if not self.yaml_path_resolvers:
            # libyaml's parser asks for the tag of every node (450,000 times in a
            # 10,000-user site file, mostly the same keys and values). Without path
            # resolvers (none is registered for the safe loader) a tag depends only on
            # (kind, value, implicit), so the C-level lru_cache answers repeats without
            # running any Python: 0.1-0.15 s of the 10,000-user load (issue 18). The
            # parser looks ``resolve`` up on the instance, so this shadows the method.
            self.__dict__["resolve"] = functools.lru_cache(maxsize=None)(self.resolve)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """SafeConstructor's mapping, after checking that no key is given twice.

        Merge keys (``<<: *base``) are not counted: a key of the mapping itself may
        override a merged one, as YAML's merge key type specifies.
        """
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            if type(key_node) is ScalarNode and key_node.tag == _STR:
                key: Any = key_node.value
            else:
                key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
                try:
                    hash(key)
                except TypeError:
                    continue  # SafeConstructor refuses it: "found unhashable key"
            if key in seen:
                raise _duplicate(key, key_node)
            seen.add(key)
        return SafeConstructor.construct_mapping(self, node, deep=deep)

    def fast_document(self, node: yaml.Node) -> Any:
        """Construct ``node``'s tree; plain nodes directly, the rest through PyYAML."""
        memo: dict[int, Any] = {}
        construct = self.construct_object

        def walk(node: yaml.Node) -> Any:
            kind = type(node)
            if kind is ScalarNode:
                return node.value if node.tag == _STR else construct(node, deep=True)
            done = memo.get(id(node))
            if done is not None:
                return done
            if kind is MappingNode and node.tag == _MAP:
                out: dict[Any, Any] = {}
                memo[id(node)] = out
                for key_node, value_node in node.value:
                    if type(key_node) is not ScalarNode or key_node.tag != _STR:
                        # merge keys, non-string keys: PyYAML's own rules for this mapping
                        del memo[id(node)]
                        value = construct(node, deep=True)
                        memo[id(node)] = value
                        return value
                    key = key_node.value
                    if key in out:
                        raise _duplicate(key, key_node)
                    out[key] = walk(value_node)
                return out
            if kind is SequenceNode and node.tag == _SEQ:
                items: list[Any] = []
                memo[id(node)] = items
                items.extend(walk(child) for child in node.value)
                return items
            return construct(node, deep=True)

        try:
            data = walk(node)
            # PyYAML's constructor may leave generators for nodes built through it.
            while self.state_generators:
                generators = self.state_generators
                self.state_generators = []
                for generator in generators:
                    for _ in generator:
                        pass
            return data
        finally:
            self.constructed_objects = {}
            self.recursive_objects = {}


COMPILED_MODULE = "mlab_yamlc"
"""The C build of the common case (``strict_yaml_c.c``, scripts/setup.d/11-compiled-loader.sh)."""


def compiled_loader() -> ModuleType | None:
    """The compiled loader when it is installed and built from this very ``strict_yaml_c.c``
    (:func:`mlab.compiled.stamped_module`); else None (the loader below gives the same
    objects, only slower)."""
    return stamped_module(COMPILED_MODULE, Path(__file__).with_name("strict_yaml_c.c"))


_compiled = compiled_loader()


class _PlainScalars(SafeConstructor, Resolver):  # type: ignore[misc]
    """PyYAML's resolver and safe constructor, for the plain scalars the C loader asks for."""

    def value(self, text: str) -> Any:
        """What ``StrictLoader`` makes of the untagged plain scalar ``text``."""
        tag = self.resolve(ScalarNode, text, (True, False))
        if tag == _STR:
            return text
        return self.construct_object(ScalarNode(tag, text), deep=True)


def _special_first_bytes() -> bytes:
    """256 flags: 1 where a plain scalar starting with that byte may resolve to a type other
    than str (the first characters PyYAML's implicit resolvers are registered for; every
    non-ASCII byte, to be safe; all of them if a resolver has no first character)."""
    keys = Resolver.yaml_implicit_resolvers
    if None in keys:
        return bytes([1]) * 256
    return bytes(1 if b >= 128 or chr(b) in keys else 0 for b in range(256))


_SPECIAL = _special_first_bytes()


def _fast_load(text: str) -> tuple[bool, Any]:
    """(True, the document) from the compiled loader, or (False, None) when it is missing or
    leaves ``text`` to :class:`StrictLoader` (anything but the common case, and every
    error: see ``strict_yaml_c.c``)."""
    if _compiled is None:
        return False, None
    scalars = _PlainScalars()
    plain: Callable[[str], Any] = functools.lru_cache(maxsize=None)(scalars.value)
    try:
        return True, _compiled.load(text.encode("utf-8"), plain, _SPECIAL)
    except _compiled.Unsupported:
        return False, None
    except UnicodeEncodeError:  # lone surrogates: libyaml's reader refuses them with a mark
        return False, None


def load_strict(text: str) -> Any:
    """Parse one YAML document with PyYAML's safe rules, refusing duplicate keys.

    The common case (no anchors, tags or non-string keys) is read by the compiled loader
    when it is built (``strict_yaml_c.c``: about 4x faster on a 10,000-user site, issue
    18); everything else, and every error, by :class:`StrictLoader`, so errors always carry
    their line and column. The garbage collector is paused while the tree is built: the
    objects made here are all kept, and its passes over them made loading a big file
    several times slower.

    Args:
        text: the YAML text (one document).

    Returns:
        Plain Python objects (dict, list, str, int, float, bool, None, datetime...);
        None for an empty document.

    Raises:
        yaml.YAMLError: a syntax error or a key given twice, with ``problem_mark``.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        done, data = _fast_load(text)
        return data if done else _load_with_nodes(text)
    finally:
        if enabled:
            gc.enable()


def _load_with_nodes(text: str) -> Any:
    """:func:`load_strict` through PyYAML's node objects (every case, with error marks)."""
    loader = StrictLoader(text)
    try:
        node = loader.get_single_node()
        return None if node is None else loader.fast_document(node)
    finally:
        loader.dispose()
