"""The compiled site loader (mlab_yamlc) gives exactly what the node loader gives, or defers.

``mlab.strict_yaml._fast_load`` must return (True, the same objects, the same types) or
(False, None); every error and every uncommon construct is left to the node loader, so bad
site files keep their one line with line and column (tests/unit/test_strict_yaml.py).
"""

from __future__ import annotations

import datetime
import math
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlab import strict_yaml
from mlab.strict_yaml import _fast_load, _load_with_nodes, load_strict

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))

# The common case: read by the compiled loader.
COMMON = [
    "a: 1\nb: [x, 'y', \"z\", 2.5, true, no, ~, 0o17, 017, 0x1f, 1_000, -1, +2, .5]\n",
    "a: on\nb: n\nc: NULL\nd: True\ne: FALSE\nnull_: null\nf: Yes\nyes_: y\n",
    "when: 2020-01-01\nat: 2020-01-01 10:00:00Z\nsexa: 1:30\nneg: -1:30:00\n",
    "inf: .inf\nninf: -.Inf\nnan: .NaN\nexp: 6.02e+23\nbad: 1e5\n",
    "- [a, b]\n- {x: y}\n- - nested\n",
    "text: |\n  line one\n  line two\nfolded: >\n  a\n  b\nkeep: |+\n  x\n\n",
    "{}\n",
    "[]\n",
    "",
    "# only a comment\n",
    "---\n",
    "--- a\n...\n",
    "just a string\n",
    "empty:\nalso: ''\nq: \"\"\n",
    "'quoted key': 1\n\"1\": 2\n'true': 3\nnumbers: ['1', \"2.5\", 'yes']\n",
    "unicode: \u00e9t\u00e9\n\u00e9: 1\ncjk: \u4e2d\u6587\nemoji: \"\\U0001F600\"\nnul: \"a\\0b\"\n",
    "memory: 6Gi\ncpu: 500m\nmode: 0400\nport: 08\nhex: 0xZ\nver: 1.2.3\n",
    "equals: '='\nexcl: '!'\namp: '&'\nstar: '*'\nlt: <x\n",
    "multi: a\n  b\n  c\nflow: {a: [1, {b: c}], d: e}\n",
    "%YAML 1.1\n---\nx: 1\n",
    "a:\n- 1\n- 2\nb:\n  - c: d\n    e: f\n",
    "\ufeffbom: 1\n",
]

# Constructs the compiled loader leaves to the node loader (same result all the same).
DEFERRED = [
    "base: &b {x: 1, y: [1, 2]}\nuse: *b\nmerged: {<<: *b, y: 3}\n",
    "bin: !!binary aGk=\nforced: !!str 12\n",
    "one: ! 12\n",
    "1: int key\n2.5: float key\nnull: null key\n",
    "yes: a bool key\n",
    "a: &s [1, 2]\nb: *s\n",
    "? [complex, key]\n: value\n",
    "x: 1\n---\ny: 2\n",
    "name: x\nusers: []\nusers: []\n",
    "a: [\n",
    "a: =\n",
    "a: b\n\tc: d\n",
]


def _typed(obj: Any) -> Any:
    """``obj`` with every value tagged by its type (``True == 1``, ``1 == 1.0`` in Python;
    NaN compares by its text)."""
    if isinstance(obj, dict):
        return ("dict", [(_typed(k), _typed(v)) for k, v in obj.items()])
    if isinstance(obj, list):
        return ("list", [_typed(v) for v in obj])
    if isinstance(obj, float) and math.isnan(obj):
        return ("float", "nan")
    return (type(obj).__name__, obj)


def _node_result(text: str) -> tuple[str, Any]:
    try:
        return "ok", _typed(_load_with_nodes(text))
    except yaml.YAMLError as exc:
        return "error", str(exc)


def test_compiled_loader_is_built_and_fresh() -> None:
    """setup.sh builds mlab_yamlc from today's strict_yaml_c.c, and load_strict uses it."""
    module = strict_yaml.compiled_loader()
    assert module is not None, "run scripts/setup.d/11-compiled-loader.sh (stale or missing)"
    assert strict_yaml._compiled is module
    assert module.__file__.endswith(".so")


@pytest.mark.parametrize("text", COMMON, ids=range(len(COMMON)))
def test_common_case_read_in_c_gives_the_same_objects(text: str) -> None:
    done, data = _fast_load(text)
    assert done, "the compiled loader deferred a common document"
    assert ("ok", _typed(data)) == _node_result(text)
    assert _typed(load_strict(text)) == _typed(yaml.safe_load(text))


@pytest.mark.parametrize("text", DEFERRED, ids=range(len(DEFERRED)))
def test_uncommon_and_bad_documents_are_left_to_the_node_loader(text: str) -> None:
    assert _fast_load(text) == (False, None)
    expected = _node_result(text)
    try:
        got = ("ok", _typed(load_strict(text)))
    except yaml.YAMLError as exc:
        got = ("error", str(exc))
    assert got == expected


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_sites_read_in_c(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    done, data = _fast_load(text)
    assert done
    assert ("ok", _typed(data)) == _node_result(text)


def test_random_documents_agree() -> None:
    """Random nestings of scalars PyYAML resolves in many ways: same objects or deferred."""
    rng = random.Random(18)
    atoms = ["1", "-2", "0x1F", "0o7", "07", "1_0", "1.5", ".inf", "-.nan", "1e3", "6.0e-1",
             "yes", "No", "ON", "off", "true", "~", "null", "", "2001-12-14", "1:20",
             "2001-12-14t21:59:43.10-05:00", "plain text", "'q'", '"d\\tq"', "a-b", "=",
             "<<", "-", ".", "0", "+.5", "x: y", "[a]", "{}", "\u00e9", "12:30:00"]

    def value(depth: int) -> str:
        pick = rng.random()
        if depth > 2 or pick < 0.5:
            return rng.choice(atoms)
        if pick < 0.75:
            return "[" + ", ".join(value(depth + 1) for _ in range(rng.randint(0, 3))) + "]"
        keys = rng.sample(atoms, rng.randint(0, 3))
        return "{" + ", ".join(f"{k}: {value(depth + 1)}" for k in keys) + "}"

    fast = 0
    for _ in range(400):
        text = f"root: {value(0)}\n"
        done, data = _fast_load(text)
        if done:
            fast += 1
            assert ("ok", _typed(data)) == _node_result(text), text
    assert fast > 100


def test_nesting_depth() -> None:
    """Deep nesting is read in C up to its limit (500), then left to the node loader."""
    assert _fast_load("[" * 200 + "]" * 200 + "\n") == (True, _load_with_nodes("[" * 200 + "]" * 200))
    assert _fast_load("[" * 600 + "]" * 600 + "\n") == (False, None)


def test_plain_scalars_keep_pyyaml_types() -> None:
    data = load_strict("d: 2020-01-02\nn: ~\ni: 0x10\nb: off\ns: 1:30\n")
    assert data == {"d": datetime.date(2020, 1, 2), "n": None, "i": 16, "b": False, "s": 90}
