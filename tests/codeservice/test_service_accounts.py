"""Issue 13 item 2: the Airlock's and the export publisher's accounts have no git access.

The real service (``mlab code-service serve``) with password files for ``airlock`` and
``mlab-publisher`` next to alice's and bob's, and the real ``git`` binary.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cs_support import Service, git, make_upstream, start_service, stop_service

SERVICE_PASSWORDS = {"airlock": "airlock-secret", "mlab-publisher": "publisher-secret"}


@pytest.fixture(scope="module")
def accounts_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = tmp_path_factory.mktemp("svcaccounts")
    with pytest.MonkeyPatch.context() as env:  # for this module's tests only
        env.setenv("MLAB_TEST_HOME", str(tmp))
        for name, pw in SERVICE_PASSWORDS.items():
            (tmp / "users" / name).mkdir(parents=True)
            (tmp / "users" / name / "password").write_text(pw + "\n")
        svc = start_service(tmp)
        yield svc
        stop_service(svc)


def _url(svc: Service, user: str, repo: str) -> str:
    return f"http://{user}:{quote(SERVICE_PASSWORDS[user], safe='')}@127.0.0.1:{svc.port}/{repo}"


@pytest.mark.parametrize("account", sorted(SERVICE_PASSWORDS))
def test_service_account_cannot_clone(accounts_service: Service, account: str,
                                      tmp_path: Path) -> None:
    svc = accounts_service
    bare = make_upstream(tmp_path / "up", "proj")
    name = f"org/proj-{account}"
    svc.approve(f"file://{bare}", name)
    git("clone", "-q", svc.clone_url(name), str(tmp_path / "alice"))  # a user can
    proc = git("clone", "-q", _url(svc, account, name), str(tmp_path / "svc"), check=False)
    assert proc.returncode != 0
    assert "403" in proc.stderr, proc.stderr
    assert not (tmp_path / "svc").exists()
    # The account logs in (it is no wrong password) and keeps the requests API.
    r = httpx.get(f"{svc.url}/api/requests", auth=(account, SERVICE_PASSWORDS[account]),
                  trust_env=False)
    assert r.status_code == 200, r.text
