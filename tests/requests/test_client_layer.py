"""One HTTP layer for every code-service client (mlab.codeservice.client.ServiceClient):
`mlab repo`'s client and the requests client (a ServiceClient with the requests API's paths)
fail in the same one-line words against the real code service, and send the password only
in the Authorization header."""

from __future__ import annotations

import socket

import pytest

from mlab.codeservice.client import ServiceClient, container_port_fallback
from mlab.errors import EXIT_USAGE, MlabError, TemporaryError
from mlab.requests.client import RequestsClient
from mlab.requests.model import InvalidRequest, NotFound



def _pw(service, user: str) -> str:  # type: ignore[no-untyped-def]
    return str(service.env(user)["MLAB_PASSWORD"])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_both_clients_are_one_layer(service) -> None:  # type: ignore[no-untyped-def]
    repo = ServiceClient(service.url, "admin", _pw(service, "admin"))
    req = RequestsClient(service.url, "alice", _pw(service, "alice"))
    assert isinstance(req, ServiceClient)
    assert isinstance(repo.request("GET", "/api/repos"), list)
    assert isinstance(req.list(), list)
    assert _pw(service, "alice") not in repr(req) and _pw(service, "admin") not in repr(repo)


def test_wrong_password_is_the_same_line_for_both(service) -> None:  # type: ignore[no-untyped-def]
    lines = []
    for client in (ServiceClient(service.url, "alice", "not-it"),
                   RequestsClient(service.url, "alice", "not-it")):
        with pytest.raises(MlabError) as err:
            client.request("GET", "/api/requests")
        lines.append(err.value.one_line())
        assert "not-it" not in err.value.one_line()
    assert lines[0] == lines[1] == (
        f"{service.url}: user 'alice': wrong user name or password "
        "(set MLAB_USER and MLAB_PASSWORD (or MLAB_PASSWORD_FILE))")


def test_refusals_name_the_url_status_and_keep_the_typed_errors(service) -> None:  # type: ignore[no-untyped-def]
    req = RequestsClient(service.url, "alice", _pw(service, "alice"))
    with pytest.raises(NotFound) as err:
        req.get(999999)
    assert err.value.one_line().startswith(f"{service.url}/api/requests/999999: ")
    assert err.value.one_line().endswith("(HTTP 404)")
    with pytest.raises(InvalidRequest) as bad:
        req.submit({"kind": "export"})
    assert bad.value.exit_code == EXIT_USAGE and "(HTTP 400)" in bad.value.one_line()
    # The same answer through the plain client: an MlabError with the same line.
    plain = ServiceClient(service.url, "alice", _pw(service, "alice"))
    with pytest.raises(MlabError) as same:
        plain.request("GET", "/api/requests/999999")
    assert type(same.value) is MlabError and same.value.one_line() == err.value.one_line()


def test_unreachable_is_temporary_and_falls_back(service, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    dead = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(TemporaryError) as err:
        ServiceClient(dead, "alice", "x").request("GET", "/api/repos")
    assert err.value.one_line().startswith(f"{dead}: cannot reach the code service: ConnectError")
    assert err.value.one_line().endswith(
        "(check --server / MLAB_SERVER and that the code service runs)")
    # A refused connection moves on to the next address (nothing was sent yet).
    client = ServiceClient(dead, "admin", _pw(service, "admin"), fallbacks=(service.url,))
    assert isinstance(client.request("GET", "/api/repos"), list)
    assert client.server == service.url and client.fallbacks == ()
    monkeypatch.setenv("MLAB_CODE_HOST", "code.mlab.local")
    assert container_port_fallback("http://code.mlab.local") == ("http://code.mlab.local:8080",)
    assert container_port_fallback("http://10.0.0.1") == ()
