"""Shared end-to-end fixtures: the HomePod image and helpers to run containers of it.

- ``homepod_image`` (session): the image reference, built by
  :func:`mlab.image.build.ensure_image` or reused when the recipe and source are unchanged
  (the first session on a fresh machine spends about two minutes here).
- :func:`run_container`: ``podman run -d`` with a unique name (each area passes its own
  prefix), ports published on 127.0.0.1 at host ports podman picks (no races between
  parallel sessions), returning a :class:`Container` whose ``port(5900)`` gives the host
  port; remove it with ``.remove()`` (or use the ``containers`` fixture, which does).
- :func:`wait_for_port`: poll a TCP port until it accepts a connection.
- :func:`unique_name`: ``prefix`` plus a random suffix, for containers, volumes, networks.

Other test modules get the helpers through fixtures (conftest modules are not imported by
name): ``e2e`` (session) is a namespace with ``run_container``, ``wait_for_port``,
``unique_name`` and ``Container``; ``containers`` is a per-test list whose containers are
removed afterwards. Nothing here runs podman at import time.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from access_clients import looks_like_desktop

from mlab.podman.runner import podman
from mlab.render.common import SESSION_CAPABILITIES


def unique_name(prefix: str) -> str:
    """``prefix`` + 8 random hex digits, e.g. ``mlabtest-img-3f2a9c1d``."""
    return f"{prefix}{secrets.token_hex(4)}"


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> float:
    """Wait until ``host:port`` accepts a TCP connection; return the seconds waited.

    Raises:
        TimeoutError: still refused after ``timeout`` seconds.
    """
    start = time.monotonic()
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return time.monotonic() - start
        except OSError:
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{host}:{port} not accepting connections after {timeout} s") from None
            time.sleep(0.1)


@dataclass
class Container:
    """A running test container (``podman run -d``) and its published ports."""

    name: str
    ports: dict[int, int] = field(default_factory=dict)
    """Container port -> host port on 127.0.0.1."""

    def port(self, container_port: int) -> int:
        """The host port (on 127.0.0.1) published for ``container_port``."""
        return self.ports[container_port]

    def exec(self, *argv: str, user: str | None = None, check: bool = True,
             input: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``podman exec [-u USER] NAME ARGV``."""
        args = ["exec", "-i"] if input is not None else ["exec"]
        if user:
            args += ["-u", user]
        return podman([*args, self.name, *argv], check=check, input=input, timeout=timeout)

    def logs(self) -> str:
        """The container's output so far (stdout and stderr)."""
        proc = podman(["logs", self.name], check=False)
        return proc.stdout + proc.stderr

    def remove(self) -> None:
        """Stop (SIGTERM, then kill after 10 s) and remove the container; idempotent."""
        podman(["rm", "-f", "-t", "10", self.name], check=False)


def run_container(
    image: str,
    prefix: str,
    *,
    env: Mapping[str, str] | None = None,
    ports: Sequence[int] = (),
    volumes: Sequence[str] = (),
    args: Sequence[str] = (),
    extra: Sequence[str] = (),
    name: str | None = None,
    capabilities: Sequence[str] | None = SESSION_CAPABILITIES,
) -> Container:
    """Start ``image`` detached with a unique name; publish ``ports`` on 127.0.0.1.

    Args:
        image: image reference (e.g. the ``homepod_image`` fixture).
        prefix: the caller's podman name prefix (``mlabtest-<area>-``).
        env: environment variables (``-e K=V``).
        ports: container ports to publish at host ports podman chooses.
        volumes: ``-v`` arguments (``name:/path[:ro]``).
        args: command arguments after the image (empty: the image's services).
        extra: more ``podman run`` options.
        name: exact container name (default: ``unique_name(prefix)``).
        capabilities: the container keeps only these (``--cap-drop all``); the default is
            the rendered HomePod/Airlock set, so every journey runs as on a site
            (docs/security.md); None keeps podman's defaults.

    Raises:
        mlab.errors.DeployError: podman run failed.
    """
    cname = name or unique_name(prefix)
    argv = ["run", "-d", "--name", cname]
    for key, value in (env or {}).items():
        argv += ["-e", f"{key}={value}"]
    for p in ports:
        argv += ["-p", f"127.0.0.1::{p}"]
    for v in volumes:
        argv += ["-v", v]
    if capabilities is not None:
        argv += ["--cap-drop", "all"]
        argv += [f"--cap-add={c}" for c in capabilities]
    argv += [*extra, image, *args]
    podman(argv)
    container = Container(name=cname)
    for p in ports:
        out = podman(["port", cname, f"{p}/tcp"]).stdout.strip().splitlines()[0]
        container.ports[p] = int(out.rsplit(":", 1)[1])
    return container


@pytest.fixture(scope="session")
def homepod_image() -> str:
    """The HomePod image reference (``localhost/mlab/homepod:<hash>``), built or reused."""
    if shutil.which("podman") is None or shutil.which("mmdebstrap") is None:
        pytest.skip("podman and mmdebstrap are needed (bash scripts/setup.sh)")
    from mlab.image.build import ensure_image

    return ensure_image()


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    """A list to append started containers to; each is removed after the test."""
    started: list[Container] = []
    yield started
    for c in started:
        c.remove()


def wait_until_ready(container: Container, timeout: float = 60.0) -> float:
    """Wait until the HomePod's desktop is ready (a window manager runs on display :1,
    ``/usr/local/lib/mlab/desktop-ready``); return the seconds waited.

    Raises:
        TimeoutError: not ready after ``timeout`` seconds (the message has the log tail).
    """
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if container.exec("/usr/local/lib/mlab/desktop-ready", check=False).returncode == 0:
            return time.monotonic() - start
        time.sleep(0.2)
    tail = "\n".join(container.logs().splitlines()[-20:])
    raise TimeoutError(f"{container.name}: desktop not ready after {timeout} s:\n{tail}")


@pytest.fixture(scope="session")
def e2e() -> SimpleNamespace:
    """The helpers of this module: ``e2e.run_container(...)``, ``e2e.wait_for_port(...)``,
    ``e2e.wait_until_ready(container)``, ``e2e.looks_like_desktop(png)``,
    ``e2e.unique_name(prefix)``, ``e2e.Container``, ``e2e.capabilities`` (the rendered
    HomePod capability set)."""
    return SimpleNamespace(run_container=run_container, wait_for_port=wait_for_port,
                           wait_until_ready=wait_until_ready,
                           looks_like_desktop=looks_like_desktop,
                           unique_name=unique_name, Container=Container,
                           capabilities=SESSION_CAPABILITIES)
