"""The code service over HTTPS (`mlab code-service serve --tls-cert --tls-key`, issue 17).

A CA and a server certificate for 127.0.0.1 are made with the real ``openssl``; real git
clones over HTTPS when it trusts the CA (``GIT_SSL_CAINFO``) and refuses without it; plain
HTTP to the TLS port gets no answer, so no Basic password is ever accepted in clear there.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from cs_support import PASSWORDS, Service, git, git_env, make_upstream, start_service, stop_service


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=120)


def make_ca_and_cert(root: Path) -> tuple[Path, Path, Path]:
    """``(ca.crt, server.crt, server.key)``: a CA and a certificate for IP 127.0.0.1."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
             "/CN=MLab test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=root)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=root)
    (root / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt",
             cwd=root)
    return root / "ca.crt", root / "server.crt", root / "server.key"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Path]]:
    tmp = tmp_path_factory.mktemp("tls")
    with pytest.MonkeyPatch.context() as env:  # for this module's tests only
        env.setenv("MLAB_TEST_HOME", str(tmp))
        ca, cert, key = make_ca_and_cert(tmp)
        svc = start_service(tmp, extra_args=("--tls-cert", str(cert), "--tls-key", str(key)))
        yield svc, ca
        stop_service(svc)


def test_git_clones_over_https_with_the_ca_only(tls: tuple[Service, Path],
                                                tmp_path: Path) -> None:
    svc, ca = tls
    assert svc.url.startswith("https://")
    upstream = make_upstream(tmp_path, "up")
    import ssl

    with httpx.Client(base_url=svc.url, verify=ssl.create_default_context(cafile=str(ca)),
                      trust_env=False, timeout=120,
                      auth=("admin", svc.admin_password)) as c:
        r = c.post("/api/repos", json={"url": f"file://{upstream}", "name": "demo/up"})
    assert r.status_code == 201, r.text
    url = f"https://alice:{quote(PASSWORDS['alice'], safe='')}@127.0.0.1:{svc.port}/demo/up"
    env = {**git_env(tmp_path), "GIT_SSL_CAINFO": str(ca)}
    git("clone", "-q", url, str(tmp_path / "ok"), env=env)
    assert (tmp_path / "ok" / "file0.txt").read_text() == "content 0\n"
    refused = git("clone", "-q", url, str(tmp_path / "no"), env=git_env(tmp_path), check=False)
    assert refused.returncode != 0 and "certificate" in refused.stderr.lower(), refused.stderr


def test_plain_http_to_the_tls_port_gets_no_http_answer(tls: tuple[Service, Path]) -> None:
    svc, _ca = tls
    with socket.create_connection(("127.0.0.1", svc.port), timeout=10) as s:
        s.sendall(b"GET /api/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: Basic "
                  b"YWxpY2U6YWxpY2Utc2VjcmV0\r\n\r\n")
        s.settimeout(10)
        try:
            answer = s.recv(4096)
        except OSError:
            answer = b""
    assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"alice" not in answer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_tls_port_beside_plain_http_for_pods(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``--tls-port`` (what a site with ``tls`` renders): HTTPS on its own port for the
    office, plain HTTP on ``--port`` for pods; one service behind both (a repository
    approved over one is cloned over the other), and git over plain HTTP to the TLS port is
    never asked for a password."""
    monkeypatch.setenv("MLAB_TEST_HOME", str(tmp_path))
    ca, cert, key = make_ca_and_cert(tmp_path)
    tls_port = _free_port()
    svc = start_service(tmp_path, extra_args=("--tls-cert", str(cert), "--tls-key", str(key),
                                              "--tls-port", str(tls_port)))
    try:
        assert svc.url.startswith("http://"), svc.url
        log = next(tmp_path.glob("service-*.log")).read_text()
        assert f"listening on https://127.0.0.1:{tls_port}" in log, log
        upstream = make_upstream(tmp_path, "up")
        r = httpx.post(f"{svc.url}/api/repos", json={"url": f"file://{upstream}",
                                                     "name": "demo/up"},
                       auth=("admin", svc.admin_password), timeout=120, trust_env=False)
        assert r.status_code == 201, r.text
        secret = quote(PASSWORDS["alice"], safe="")
        env = {**git_env(tmp_path), "GIT_SSL_CAINFO": str(ca)}
        git("clone", "-q", f"https://alice:{secret}@127.0.0.1:{tls_port}/demo/up",
            str(tmp_path / "https"), env=env)
        git("clone", "-q", f"http://alice:{secret}@127.0.0.1:{svc.port}/demo/up",
            str(tmp_path / "http"), env=git_env(tmp_path))
        assert (tmp_path / "https" / "file0.txt").read_text() == "content 0\n"
        # git over plain HTTP to the TLS port: the TLS server answers no HTTP, so git never
        # gets a 401 and never sends (or asks for) a password.
        asked = tmp_path / "asked"
        helper = tmp_path / "askpass.sh"
        helper.write_text(f"#!/bin/sh\necho asked >> {asked}\necho x\n")
        helper.chmod(0o755)
        plain = git("clone", "-q", f"http://127.0.0.1:{tls_port}/demo/up",
                    str(tmp_path / "plain"), env={**git_env(tmp_path), "GIT_ASKPASS": str(helper),
                                                  "GIT_TERMINAL_PROMPT": "0"}, check=False)
        assert plain.returncode != 0, plain.stdout
        assert not asked.exists(), "git was asked for a password over plain HTTP"
    finally:
        stop_service(svc)
