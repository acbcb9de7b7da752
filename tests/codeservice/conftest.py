"""Fixtures of the code-service tests (helpers live in ``cs_support``).

``service`` starts ``mlab code-service serve`` once per test module with users alice and bob
and ``allowLocalUpstreams``, so local bare repositories stand in for GitHub.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cs_support import Service, start_service, stop_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One running code service per test module."""
    tmp = tmp_path_factory.mktemp("codeservice")
    with pytest.MonkeyPatch.context() as env:  # for this module's tests only
        env.setenv("MLAB_TEST_HOME", str(tmp))
        svc = start_service(tmp)
        yield svc
        stop_service(svc)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A scratch directory for clones."""
    return tmp_path
