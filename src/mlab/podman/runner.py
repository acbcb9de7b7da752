"""The one way MLab runs podman: runc runtime, project-local containers.conf, clear errors.

Every podman call in MLab (image build, `mlab up`, tests) goes through :func:`podman`, so
the runtime flag and configuration are set in one place. Measured on this platform's hosts:
podman works only with ``--runtime runc`` and a containers.conf with ``default_ulimits = []``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from mlab.errors import DeployError, ToolMissingError

MIN_VERSION = (4, 3)
"""Oldest podman MLab supports: Debian 12's 4.3.1 (kube play of Deployments and PVCs)."""

NETWORK_BACKEND = "netavark"
"""The only podman network backend MLab isolates with (see :func:`check_network_backend`)."""
HELPER_DIRS = ("/usr/local/libexec/podman", "/usr/local/lib/podman", "/usr/libexec/podman",
               "/usr/lib/podman")
"""podman's default ``helper_binaries_dir`` (containers.conf(5)): where netavark and
aardvark-dns are looked up."""
BACKEND_FIX = "run `bash scripts/setup.sh` or `apt-get install netavark aardvark-dns`"


KEEP_IPV6_ENV = "MLAB_TEST_PODMAN_KEEP_IPV6"
"""Test switch: set to ``1``, podman runs with ``containers-keep-ipv6.conf`` (containers keep
IPv6) and the podman engine leaves IPv6 on the site's networks, so a test can see ``mlab
verify`` fail on the IPv6 edges (docs/security.md). Never for a real site."""


def keep_ipv6() -> bool:
    """True when the :data:`KEEP_IPV6_ENV` test switch is on."""
    return os.environ.get(KEEP_IPV6_ENV) == "1"


def containers_conf() -> Path:
    """Path of the project-local containers.conf shipped in the package (with the
    :data:`KEEP_IPV6_ENV` test switch on: the one without the IPv6 sysctls)."""
    name = "containers-keep-ipv6.conf" if keep_ipv6() else "containers.conf"
    return Path(str(resources.files("mlab").joinpath(name)))


def podman_env() -> dict[str, str]:
    """The environment for a podman child: ours with ``CONTAINERS_CONF`` set."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(containers_conf()))
    return env


def podman_binary() -> str:
    """Return the podman executable path.

    Raises:
        ToolMissingError: podman is not installed.
    """
    path = shutil.which("podman")
    if not path:
        raise ToolMissingError(
            "podman is not installed", hint="install it: apt-get install podman runc"
        )
    return path


def podman_command(args: Sequence[str]) -> list[str]:
    """The full argv for ``podman --runtime runc ARGS``."""
    return [podman_binary(), "--runtime", "runc", *args]


def podman(
    args: Sequence[str],
    *,
    check: bool = True,
    input: str | bytes | None = None,
    timeout: float | None = 600,
    capture: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``podman --runtime runc ARGS`` and return the completed process (text mode).

    Args:
        args: podman arguments, e.g. ``["pod", "ps", "--format", "json"]``.
        check: raise on a non-zero exit status.
        input: standard input (text).
        timeout: seconds before the call is abandoned; None: no limit.
        capture: capture stdout and stderr (else inherit them).

    Raises:
        ToolMissingError: podman is not installed.
        DeployError: the command failed (with ``check``), naming the podman sub-command and
            the last line of its error output.
    """
    argv = podman_command(args)
    try:
        proc = subprocess.run(
            argv,
            input=input.decode() if isinstance(input, bytes) else input,
            text=True,
            capture_output=capture,
            env=podman_env(),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DeployError(f"podman {' '.join(args[:2])} did not finish in {timeout} s") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or "").strip().splitlines()
        last = err[-1] if err else f"exit status {proc.returncode}"
        raise DeployError(f"podman {' '.join(args[:2])} failed: {last}")
    return proc


def podman_version() -> tuple[int, int, int]:
    """The installed podman version as (major, minor, patch).

    Raises:
        ToolMissingError: podman is missing or older than :data:`MIN_VERSION`.
    """
    out = podman(["version", "--format", "{{.Client.Version}}"]).stdout.strip()
    parts = [int(p) for p in out.split("-")[0].split(".")[:3] if p.isdigit()]
    while len(parts) < 3:
        parts.append(0)
    version = (parts[0], parts[1], parts[2])
    if version[:2] < MIN_VERSION:
        raise ToolMissingError(
            f"podman {out} is too old (MLab needs {MIN_VERSION[0]}.{MIN_VERSION[1]} or newer)",
            hint="install a newer podman: apt-get install podman runc",
        )
    return version


def backend_problem(backend: str, aardvark: str | None) -> str | None:
    """Why podman's network backend cannot isolate a site, or None when it can (pure).

    Under CNI (Debian's podman without netavark), ``--internal`` networks get
    ``isGateway: false`` (the host has no route to them: every published HomePod port is
    dead) and ``dns_enabled: false`` (the Airlock resolves nothing); measured on Debian 12,
    see docs/local.md. aardvark-dns is netavark's DNS server.

    Args:
        backend: ``podman info``'s ``Host.NetworkBackend`` (``netavark``, ``cni``) or the
            error text podman printed when it could not start.
        aardvark: path of the aardvark-dns binary, or None when it is missing.

    Returns:
        One line naming the problem and the fix, or None.
    """
    if 'could not find "netavark"' in backend:
        return f"podman's network backend netavark is not installed ({BACKEND_FIX})"
    if backend != NETWORK_BACKEND:
        return (f"podman uses the {backend or 'unknown'} network backend; MLab isolates only "
                f"with {NETWORK_BACKEND} ({BACKEND_FIX}; MLab's containers.conf selects it)")
    if not aardvark:
        return f"aardvark-dns (netavark's DNS server) is not installed ({BACKEND_FIX})"
    return None


def find_helper(name: str) -> str | None:
    """Path of a podman helper binary (``netavark``, ``aardvark-dns``) in :data:`HELPER_DIRS`."""
    for base in HELPER_DIRS:
        path = Path(base) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def check_network_backend(extra_args: Sequence[str] = ()) -> None:
    """Refuse a podman whose network backend MLab cannot isolate with.

    Args:
        extra_args: global podman options before ``info`` (tests pass ``--root``/``--runroot``
            of a storage of their own).

    Raises:
        ToolMissingError: the backend is not netavark, or netavark or aardvark-dns is
            missing; one line naming the fix.
    """
    proc = podman([*extra_args, "info", "--format", "{{.Host.NetworkBackend}}"], check=False)
    backend = proc.stdout.strip() if proc.returncode == 0 else (proc.stderr or "").strip()
    problem = backend_problem(backend, find_helper("aardvark-dns"))
    if problem:
        raise ToolMissingError(problem)
