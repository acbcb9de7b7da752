"""dump_yaml writes YAML that PyYAML reads back to exactly the same objects."""

from __future__ import annotations

import random

import pytest
import yaml

from mlab.render import dump_yaml

TRICKY = [
    "", " ", "yes", "no", "on", "off", "y", "n", "true", "False", "null", "~", "NULL",
    "1", "0400", "0x1f", "1e3", "1.5", ".inf", "-.inf", ".nan", "1:20", "1_000",
    "2001-12-14", "2001-12-14t21:59:43.10-05:00", "6Gi", "500m", "-", "- a", "-a", "a: b",
    "a:b", "a:", ":a", "a #b", "#a", "a#b", "'", '"', "\\", "@a", "`a", "!a", "&a", "*a",
    "%a", "|", ">", "?", "? a", "[a]", "{a}", "a,b", "a\nb", "a\n", "a\n\n", "\na", " a",
    "a ", "a\tb", "\t", "\x7f", "\x85", "\u2028", "\ufeff", "\ud7ff", "ünïcode", "日本語",
    "http://x/y?z=1&w=2", "10.96.0.200", "10.0.0.0/8", "app.kubernetes.io/name",
    "a\r\nb", "line one\n  indented\nlast\n", "=", "<<", "0o17", "0b101", "+1", "1.", "-1",
    "ssh-ed25519 AAAA user@host", "😀",
]


def test_tricky_strings_round_trip() -> None:
    obj = {"data": {f"k{i}": s for i, s in enumerate(TRICKY)}, "list": TRICKY,
           "keys": {s: i for i, s in enumerate(TRICKY) if s}}
    text = dump_yaml([obj])
    assert list(yaml.safe_load_all(text)) == [obj]


def test_nested_shapes_round_trip() -> None:
    obj = {"a": [], "b": {}, "c": [[1, [2, []]], [{}], [{"x": [{"y": {}}]}]],
           "d": [{"e": 1, "f": [1, 2], "g": {"h": None}}, "s", 3, True, False, None],
           "n": -5, "f": 1.25, "t": True}
    assert list(yaml.safe_load_all(dump_yaml([obj, {}, obj]))) == [obj, {}, obj]


def test_random_strings_round_trip() -> None:
    rng = random.Random(1234)
    alphabet = "ab01 :#-'\"\n\t\\{}[],&*!|>%@`?=~.\u00e9\u4e2d"
    values = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(3000)]
    obj = {"v": values, "m": {f"k{i}": v for i, v in enumerate(values)}}
    assert list(yaml.safe_load_all(dump_yaml([obj]))) == [obj]


def test_comment_and_header() -> None:
    obj = {"kind": "NetworkPolicy",
           "metadata": {"name": "x", "annotations": {"mlab.io/edge": "homepod --> code-service :8080"}}}
    text = dump_yaml([obj], header="line 1\nline 2")
    assert text.startswith("# line 1\n# line 2\n---\n# homepod --> code-service :8080\nkind:")


def test_rejects_unknown_types() -> None:
    with pytest.raises(TypeError):
        dump_yaml([{"a": object()}])


def test_compiled_emitter_is_built_and_fresh() -> None:
    """setup.sh builds the mypyc emitter from today's emit.py, and dump_yaml uses it."""
    from mlab.render import dump

    core = dump.compiled_core()
    assert core is not None, "run scripts/setup.d/10-compiled-emitter.sh (stale or missing)"
    assert dump._core is core
    assert core.__file__.endswith(".so")


def test_compiled_and_pure_emitters_write_the_same_bytes() -> None:
    """The compiled core and the interpreted emit.py agree on every golden site's objects."""
    from pathlib import Path

    from mlab.render import dump, emit, render_site
    from mlab.secrets import password_keys
    from mlab.site import load_site

    core = dump.compiled_core()
    assert core is not None
    examples = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
    objs: list[object] = [{"data": {f"k{i}": s for i, s in enumerate(TRICKY)}, "list": TRICKY,
                           "keys": {s: i for i, s in enumerate(TRICKY) if s},
                           "n": [[1, [2, []]], [{}], -5, 1.25, float("inf"), None, True]}]
    for path in examples:
        site = load_site(path)
        rendered = render_site(site, {k: f"p-{k}" for k in password_keys(site)})
        objs += rendered.objects()
    assert len(objs) > 50
    for obj in objs:
        compiled: list[str] = []
        pure: list[str] = []
        core.emit(obj, "", compiled)
        emit.emit(obj, "", pure)
        assert compiled == pure
