"""The site file reference (docs/site.md) generated from the pydantic model.

Invariant: every key of the site file appears once, with its type, default and description
taken from :mod:`mlab.site`, so the docs cannot drift from the code (tests compare the
committed docs/site.md with this output).
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from mlab.site import Site

BEGIN = "<!-- BEGIN GENERATED: site reference (mlab.site_docs) -->"
END = "<!-- END GENERATED -->"


def _models(annotation: Any) -> list[type[BaseModel]]:
    """Model classes inside a type annotation (list[User] -> [User])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        out += _models(arg)
    return out


_CHECKED = {"cidr": "CIDR", "ip": "IP address", "label": "DNS-1123 label",
            "quantity": "quantity"}


def _checked(metadata: Any, base: str) -> str:
    """The name of a checked string type (CIDR, IP...) from pydantic validator metadata."""
    for meta in metadata:
        name = getattr(getattr(meta, "func", None), "__name__", "").lstrip("_")
        if name in _CHECKED:
            return _CHECKED[name]
    return base


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _checked(args[1:], _type_name(args[0]))
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args if a is not type(None)) + (
            " or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map {_type_name(args[0])} to {_type_name(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{annotation.__name__.lower()})"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    else:
        value = field.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        return f"`{json.dumps(value)}`" if value else "see below"
    return f"`{json.dumps(value)}`"


def site_reference() -> str:
    """Markdown: one table per model, starting at :class:`Site`, in first-use order."""
    order: list[type[BaseModel]] = []
    queue: list[type[BaseModel]] = [Site]
    while queue:
        model = queue.pop(0)
        if model in order:
            continue
        order.append(model)
        for field in model.model_fields.values():
            queue += [m for m in _models(field.annotation) if m not in order]
    parts = []
    for model in order:
        doc = (model.__doc__ or "").strip().splitlines()[0]
        parts.append(f"### {model.__name__}\n\n{doc}\n\n| key | type | default | meaning |\n"
                     "| --- | --- | --- | --- |\n")
        for name, field in model.model_fields.items():
            key = field.alias or name
            desc = (field.description or "").replace("|", "\\|").replace("\n", " ")
            parts.append(f"| `{key}` | {_checked(field.metadata, _type_name(field.annotation))} | {_default(field)} | {desc} |\n")
        parts.append("\n")
    return "".join(parts).rstrip() + "\n"


def replace_generated(text: str) -> str:
    """``text`` with the part between :data:`BEGIN` and :data:`END` regenerated.

    Raises:
        ValueError: the markers are missing.
    """
    start = text.index(BEGIN) + len(BEGIN)
    end = text.index(END)
    return text[:start] + "\n" + site_reference() + text[end:]
