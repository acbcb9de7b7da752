"""mlab.strict_yaml reads what yaml.safe_load reads, and refuses a key given twice."""

from __future__ import annotations

import pytest
import yaml

from mlab.strict_yaml import load_strict

SAME = [
    "a: 1\nb: [x, 'y', \"z\", 2.5, true, no, ~, 0o17, 017, 0x1f, 1_000]\n",
    "when: 2020-01-01\nat: 2020-01-01 10:00:00Z\nbin: !!binary aGk=\nforced: !!str 12\n",
    "base: &b {x: 1, y: [1, 2]}\nuse: *b\nmerged: {<<: *b, y: 3}\n",
    "- [a, b]\n- {x: y}\n- - nested\n",
    "1: int key\n2.5: float key\nnull: null key\n",
    "text: |\n  line one\n  line two\nfolded: >\n  a\n  b\n",
    "{}\n",
    "",
    "just a string\n",
]


@pytest.mark.parametrize("text", SAME, ids=range(len(SAME)))
def test_same_as_safe_load(text: str) -> None:
    assert load_strict(text) == yaml.safe_load(text)


def test_alias_keeps_identity_and_recursion() -> None:
    data = load_strict("a: &s [1, 2]\nb: *s\nc: &r [0, *r]\n")
    assert data["a"] is data["b"]
    assert data["c"][1] is data["c"]


@pytest.mark.parametrize(
    ("text", "key", "line", "column"),
    [
        ("name: x\nusers: []\nusers: []\n", "'users'", 3, 1),
        ("a:\n  - b: 1\n    b: 2\n", "'b'", 3, 5),
        ("{1: a, 1: b}\n", "1", 1, 8),
        ("base: &b {x: 1}\nm: {<<: *b, y: 1, y: 2}\n", "'y'", 2, 19),
    ],
    ids=["top", "nested", "int-key", "beside-merge"],
)
def test_duplicate_key_refused_with_mark(text: str, key: str, line: int, column: int) -> None:
    with pytest.raises(yaml.YAMLError) as info:
        load_strict(text)
    assert info.value.problem == f"key {key} is given twice"
    assert (info.value.problem_mark.line + 1, info.value.problem_mark.column + 1) == (line, column)


def test_merge_may_override() -> None:
    assert load_strict("b: &b {x: 1}\nm: {<<: *b, x: 2}\n")["m"] == {"x": 2}


def test_unhashable_key_is_a_yaml_error() -> None:
    with pytest.raises(yaml.YAMLError, match="unhashable"):
        load_strict("? [complex, key]\n: value\n")


def test_syntax_error_has_mark() -> None:
    with pytest.raises(yaml.YAMLError) as info:
        load_strict("a: [\n")
    assert info.value.problem_mark.line + 1 == 2
