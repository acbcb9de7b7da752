"""The site reference in docs/site.md is generated from the model and up to date; every
field of the model is described."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from mlab.site import Site
from mlab.site_docs import replace_generated

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "site.md"


def _walk(model: type[BaseModel], seen: set[type]) -> list[str]:
    import typing

    missing = []
    if model in seen:
        return missing
    seen.add(model)
    for name, field in model.model_fields.items():
        if not (field.description or "").strip():
            missing.append(f"{model.__name__}.{name}")
        stack = [field.annotation]
        while stack:
            ann = stack.pop()
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                missing += _walk(ann, seen)
            stack += list(typing.get_args(ann))
    return missing


def test_every_field_described() -> None:
    assert _walk(Site, set()) == []


def test_docs_reference_up_to_date(update_golden: bool) -> None:
    text = DOC.read_text(encoding="utf-8")
    fresh = replace_generated(text)
    if update_golden:
        DOC.write_text(fresh, encoding="utf-8")
        return
    assert text == fresh, "docs/site.md is stale: run MLAB_UPDATE_GOLDEN=1 pytest tests/unit/test_site_docs.py"
