"""A renewed certificate is served without a restart (mlab.cli.serving): real TLS handshakes
against a real uvicorn server (``run_servers``) and an asyncio TLS server
(``keep_tls_fresh``), the files swapped the way a Kubernetes Secret volume swaps them
(a new folder, then one rename of the link)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509

from mlab.certs import issue, make_ca, subject
from mlab.cli.serving import keep_tls_fresh, run_servers


def _pair(cn: str) -> tuple[bytes, bytes]:
    ca_cert, ca_key = make_ca(subject(f"{cn}-ca"), 2)
    return issue(ca_cert, ca_key, subject(cn), 2, server=True, names=["127.0.0.1"])


class SecretVolume:
    """``tls.crt`` and ``tls.key`` behind a ``..data`` link, as the kubelet writes them."""

    def __init__(self, root: Path) -> None:
        self.root, self.n = root, 0
        self.cert, self.key = root / "tls.crt", root / "tls.key"

    def write(self, cert: bytes, key: bytes) -> None:
        self.n += 1
        folder = self.root / f"..v{self.n}"
        folder.mkdir()
        (folder / "tls.crt").write_bytes(cert)
        (folder / "tls.key").write_bytes(key)
        link = self.root / "..data_tmp"
        link.symlink_to(folder.name)
        os.replace(link, self.root / "..data")
        for name in ("tls.crt", "tls.key"):
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")


def _served_cn(port: int) -> str:
    """The CN of the certificate 127.0.0.1:``port`` shows in a new handshake."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def _until(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "still not after 10 s"
        time.sleep(0.02)


async def _app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def test_uvicorn_serves_the_renewed_certificate_and_keeps_the_old_on_a_bad_pair(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    vol = SecretVolume(tmp_path)
    vol.write(*_pair("first"))
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(_app, log_config=None, lifespan="off",
                                           ssl_certfile=str(vol.cert), ssl_keyfile=str(vol.key)))
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            run_servers((server, sock), tls_recheck=0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        _until(lambda: server.started)
        assert _served_cn(port) == "first"

        second_cert, second_key = _pair("second")
        vol.write(second_cert, second_key)
        _until(lambda: _served_cn(port) == "second")

        # Another certificate's key: does not load; "second" is still served.
        third_cert, _ = _pair("third")
        with caplog.at_level(logging.WARNING, logger="mlab.serving"):
            vol.write(third_cert, second_key)
            _until(lambda: "does not load" in caplog.text)
        assert _served_cn(port) == "second"

        fourth = _pair("fourth")
        vol.write(*fourth)
        _until(lambda: _served_cn(port) == "fourth")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive() and not errors, errors


def test_keep_tls_fresh_loads_only_on_a_change(tmp_path: Path) -> None:
    """No load while the files stay; a missing pair (the link gone) is skipped, not fatal;
    the pair that comes back is loaded once."""
    vol = SecretVolume(tmp_path)
    vol.write(*_pair("only"))
    loads: list[str] = []

    class Recorder(ssl.SSLContext):
        def load_cert_chain(self, certfile, keyfile=None, password=None):  # type: ignore[no-untyped-def, override]
            loads.append(str(certfile))
            super().load_cert_chain(certfile, keyfile, password)

    ctx = Recorder(ssl.PROTOCOL_TLS_SERVER)

    async def main() -> None:
        task = asyncio.create_task(keep_tls_fresh(ctx, str(vol.cert), str(vol.key), every=0.01))
        await asyncio.sleep(0.2)
        assert loads == []
        (tmp_path / "..data").unlink()
        await asyncio.sleep(0.1)
        assert not task.done() and loads == []
        vol.write(*_pair("back"))
        await asyncio.sleep(0.2)
        assert loads == [str(vol.cert)]
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
