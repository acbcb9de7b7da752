"""Options of the rendering tests.

Golden files (tests/golden/) are rewritten only when asked explicitly: run
``MLAB_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_golden.py`` (or pass
``--update-golden`` when running ``pytest tests/unit``, which loads this conftest early
enough to register the option). Nothing here does I/O at import time.
"""

from __future__ import annotations

import os

import pytest
from site_kit import LOCAL_SITE, render_fixed

from mlab.render import Rendered
from mlab.site import Site, load_site


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register ``--update-golden``."""
    parser.addoption(
        "--update-golden", action="store_true", default=False,
        help="Rewrite tests/golden/ from the current renderer instead of comparing.",
    )


@pytest.fixture()
def update_golden(request: pytest.FixtureRequest) -> bool:
    """True when golden files should be rewritten (flag or MLAB_UPDATE_GOLDEN=1)."""
    try:
        flag = bool(request.config.getoption("--update-golden"))
    except ValueError:
        flag = False
    return flag or os.environ.get("MLAB_UPDATE_GOLDEN") == "1"


@pytest.fixture()
def local_rendered() -> tuple[Site, Rendered]:
    """examples/local.yaml and its rendering with fixed passwords (tests/site_kit.py)."""
    site = load_site(LOCAL_SITE)
    return site, render_fixed(site)
