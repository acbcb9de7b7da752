"""Fixtures: the real code service (with the requests routes) on a free loopback port.

The service is the code service's own app (``create_app``) served by uvicorn in a thread,
with accounts stored as the service stores them (argon2); nothing is faked.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PASSWORDS = {"alice": "alice-pw-1", "carol": "carol-pw-1", "bob": "bob-pw-1",
             "dave": "dave-pw-1", "admin": "admin-pw-1", "airlock": "airlock-pw-1",
             "mlab-publisher": "publisher-pw-1"}


@dataclass
class Service:
    """A running code service: its URL, data directory and the notification log."""

    url: str
    data: Path
    notify_log: Path

    def env(self, user: str) -> dict[str, str]:
        """Environment variables for ``mlab request`` as ``user``."""
        return {"MLAB_SERVER": self.url, "MLAB_USER": user, "MLAB_PASSWORD": PASSWORDS[user]}

    def client(self, user: str):  # type: ignore[no-untyped-def]
        """A requests client logged in as ``user``."""
        from mlab.requests.client import RequestsClient

        return RequestsClient(self.url, user, PASSWORDS[user])


def _site(notify_log: Path, two_person: list[str], extra: dict[str, Any] | None = None) -> Any:
    from mlab.site import parse_site

    return parse_site({
        "name": "reqtest",
        "users": [{"name": n} for n in ("alice", "carol", "bob", "dave")],
        "codeService": {
            "reviewers": ["bob", "dave"],
            "twoPersonApproval": two_person,
            "notifyCommand": [sys.executable, "-c",
                              "import sys; open(sys.argv[1], 'a').write(sys.stdin.read() + '\\n')",
                              str(notify_log)],
        },
    } | (extra or {}))


def start_service(tmp: Path, two_person: list[str],
                  site_extra: dict[str, Any] | None = None) -> Iterator[Service]:
    """Start the service; yield it; stop it."""
    import uvicorn

    from mlab.codeservice.app import ServiceConfig, create_app, prepare_data_dir
    from mlab.requests.api import request_routes

    data = tmp / "data"
    notify_log = tmp / "notify.jsonl"
    site = _site(notify_log, two_person, site_extra)
    config = ServiceConfig(data_dir=data, site=site, background_sync=False)
    store = prepare_data_dir(config)
    for name, password in PASSWORDS.items():
        store.set_password(name, password, is_admin=name == "admin")
    app = create_app(config, store)
    if not any(getattr(r, "path", "") == "/api/requests" for r in app.routes):
        # The code service mounts these routes itself; mount them here if it does not.
        config = ServiceConfig(data_dir=data, site=site, background_sync=False,
                               extra_routes=request_routes(site, data))
        app = create_app(config, store)
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the code service did not start")
        time.sleep(0.02)
    try:
        yield Service(f"http://127.0.0.1:{port}", data, notify_log)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The code service with reviewers bob and dave, one approver for every kind.

    Shared by the session (argon2 makes accounts slow to create): tests make their own
    requests and never assume the store is empty.
    """
    yield from start_service(tmp_path_factory.mktemp("reqsvc"), [])


@pytest.fixture(scope="session")
def service_two_person(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The code service where exports need two approvers."""
    yield from start_service(tmp_path_factory.mktemp("reqsvc2"), ["export"])


@pytest.fixture(scope="module")
def delivering(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    """A code service delivering exports (``MLAB_EXPORTS_DIR``, as the rendered pod has it)
    whose site lets only group ``ml`` (alice) and dave request exports; and that directory."""

    tmp = tmp_path_factory.mktemp("delivery")
    exports = tmp / "exports"
    exports.mkdir()
    extra = {
        "users": [{"name": "alice", "groups": ["ml"]}, {"name": "carol"}, {"name": "bob"},
                  {"name": "dave"}],
        "egress": {"exportRequesters": ["group:ml", "dave"]},
    }
    with pytest.MonkeyPatch.context() as env:  # the service process inherits it; no test does
        env.setenv("MLAB_EXPORTS_DIR", str(exports))
        gen = start_service(tmp, [], extra)
        service = next(gen)
    yield service, exports
    next(gen, None)
