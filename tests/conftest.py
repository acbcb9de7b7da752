"""Test-suite policy shared by every test.

- ``e2e`` marks tests that run real podman containers; they may skip on a developer's
  machine that lacks podman, but with ``MLAB_REQUIRE_E2E=1`` (set by ``.ci/run``) a skipped
  e2e test fails the run, because in CI a skip means an install step is missing.
- Nothing here does I/O at import time.
"""

from __future__ import annotations

import os

import pytest

_skipped_e2e: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember every e2e test that skipped."""
    if report.skipped and "e2e" in report.keywords:
        _skipped_e2e.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when an e2e test skipped and MLAB_REQUIRE_E2E=1."""
    if _skipped_e2e and os.environ.get("MLAB_REQUIRE_E2E") == "1":
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    """Name the skipped e2e tests, so a missing install step is visible."""
    if _skipped_e2e and os.environ.get("MLAB_REQUIRE_E2E") == "1":
        terminalreporter.write_line(
            f"FAILED: {len(_skipped_e2e)} e2e test(s) skipped with MLAB_REQUIRE_E2E=1 "
            "(an install step is missing):", red=True
        )
        for nodeid in _skipped_e2e:
            terminalreporter.write_line(f"  {nodeid}", red=True)
