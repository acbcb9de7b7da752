"""Fixtures for the Airlock unit tests (helpers live in airlock_testlib.py)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from airlock_testlib import make_sdist, make_wheel, pip_install_target


@pytest.fixture
def wheel_factory() -> Callable[..., Path]:
    """:func:`make_wheel`."""
    return make_wheel


@pytest.fixture
def sdist_factory() -> Callable[..., Path]:
    """:func:`make_sdist`."""
    return make_sdist


@pytest.fixture
def pip_target() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`pip_install_target`."""
    return pip_install_target
