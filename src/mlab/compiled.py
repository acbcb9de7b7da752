"""Compiled builds of MLab's own hot code, used only while they match their source.

scripts/setup.d/10-compiled-emitter.sh (mypyc) and 11-compiled-loader.sh (C over libyaml)
build a module into the virtualenv stamped with the sha256 of the source it was made from
(``SOURCE_SHA256``). The rule, stated once here: a missing, unloadable or stale build is
never used; the interpreted code gives the same result, only slower (issue 18).
"""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path
from types import ModuleType


def stamped_module(name: str, source: Path) -> ModuleType | None:
    """The module ``name`` when it is installed and was built from the bytes of ``source``.

    Args:
        name: the compiled module's import name, e.g. ``"mlab_emitc"``.
        source: the file it is built from.

    Returns:
        The module, or None when it cannot be imported, ``source`` cannot be read, or its
        ``SOURCE_SHA256`` is not the sha256 of ``source``.
    """
    try:
        module = importlib.import_module(name)
        data = source.read_bytes()
    except (ImportError, OSError):
        return None
    if getattr(module, "SOURCE_SHA256", None) != hashlib.sha256(data).hexdigest():
        return None
    return module
