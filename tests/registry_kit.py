"""A real image registry for the tests: Debian's ``docker-registry`` (the CNCF distribution
registry) on a free port of one address, its storage in a temporary folder.

Used by tests/e2e/test_image_registry.py (plain HTTP on loopback, podman engine) and
tests/node/test_node_registry.py (plain HTTP, and TLS from a CA made here, on the node's
address). With ``tls=True`` a new CA (``cryptography``, through :mod:`mlab.node.pki`, the
node's own certificate code) signs a server certificate for the address; the CA's PEM is
``Registry.ca_file``, meant for a site's ``image.caFile``: nothing is added to the machine's
trust store.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import yaml

from mlab.node import pki


@dataclass(frozen=True)
class Registry:
    """A running registry.

    Attributes:
        host: ``ADDRESS:PORT``, as a site's ``image.repository`` starts.
        ca_file: the CA that signed its certificate (PEM), or None for plain HTTP.
        log: the registry's output.
    """

    host: str
    ca_file: Path | None
    log: Path

    @property
    def url(self) -> str:
        """The registry's API root, ``http(s)://HOST:PORT/v2/``."""
        return f"{'https' if self.ca_file else 'http'}://{self.host}/v2/"


def make_tls(folder: Path, address: str) -> tuple[Path, Path, Path]:
    """A new CA and a server certificate for ``address`` (an IP) signed by it.

    Returns:
        (CA certificate, server certificate, server key), PEM files in ``folder``.
    """
    ca_cert, ca_key = pki.make_ca()
    ident = pki.Identity("registry", f"registry {address}", server=True, ips=(address,))
    cert, key = pki.make_cert(ident, ca_cert, ca_key)
    paths = folder / "ca.crt", folder / "registry.crt", folder / "registry.key"
    for path, data in zip(paths, (ca_cert, cert, key)):
        path.write_bytes(data)
    paths[0].chmod(0o644)
    return paths


def _free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(root: Path, address: str = "127.0.0.1", *, tls: bool = False,
            timeout: float = 30) -> Iterator[Registry]:
    """Run docker-registry on a free port of ``address`` until the ``with`` ends.

    Args:
        root: a folder (made if missing) for its configuration, storage, certificates and log.
        address: the IP address it listens on.
        tls: serve TLS with a certificate from a CA made here (``Registry.ca_file``).
        timeout: seconds to wait for ``/v2/`` to answer 200.

    Raises:
        AssertionError: docker-registry is missing, exits, or does not answer in time
            (with its log).
    """
    binary = shutil.which("docker-registry")
    assert binary, "docker-registry is needed (bash scripts/setup.sh --tests)"
    root.mkdir(parents=True, exist_ok=True)
    port = _free_port(address)
    http: dict[str, object] = {"addr": f"{address}:{port}"}
    ca_file = None
    if tls:
        ca_file, cert, key = make_tls(root, address)
        http["tls"] = {"certificate": str(cert), "key": str(key)}
    config = root / "config.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": http,
    }))
    reg = Registry(f"{address}:{port}", ca_file, root / "registry.log")
    with open(reg.log, "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else False
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(reg.url, timeout=2, trust_env=False, verify=verify).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, reg.log.read_text()
            time.sleep(0.2)
        yield reg
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
