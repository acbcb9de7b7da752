"""podman's network backend: MLab refuses one it cannot isolate with (issue 10, point 1).

The pure decision is table-driven; the real podman is tried against a storage of the test's
own (``CONTAINERS_STORAGE_CONF`` with a graphroot under tmp) where ``cni`` was recorded as
podman does on a machine that first ran without netavark, so the machine's real storage
(shared with other sessions) is never touched.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import mlab
from site_kit import LOCAL_SITE

from mlab.podman.runner import BACKEND_FIX, backend_problem, check_network_backend, containers_conf

AARDVARK = "/usr/lib/podman/aardvark-dns"


@pytest.mark.parametrize(
    ("backend", "aardvark", "expected"),
    [
        ("netavark", AARDVARK, None),
        ("cni", AARDVARK, "podman uses the cni network backend"),
        ("", AARDVARK, "podman uses the unknown network backend"),
        ("netavark", None, "aardvark-dns (netavark's DNS server) is not installed"),
        ('Error: could not find "netavark" in one of [/x].  To resolve this error, set ...',
         AARDVARK, "podman's network backend netavark is not installed"),
    ],
    ids=["netavark-ok", "cni", "unknown", "no-aardvark", "no-netavark"],
)
def test_backend_problem(backend: str, aardvark: str | None, expected: str | None) -> None:
    problem = backend_problem(backend, aardvark)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(expected)
        assert BACKEND_FIX in problem and "\n" not in problem


def _own_storage(tmp_path: Path, recorded: str) -> dict[str, str]:
    """Environment for a podman with its own graphroot in which ``recorded`` was chosen."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "defaultNetworkBackend").write_text(recorded)
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{root}"\n'
                    f'runroot = "{tmp_path / "run"}"\n')
    return {"CONTAINERS_STORAGE_CONF": str(conf)}


@pytest.mark.e2e
def test_mlab_containers_conf_overrides_a_recorded_cni(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine where podman already chose CNI: MLab's containers.conf still gets netavark
    (the recorded choice is read only when the configuration leaves the backend empty)."""
    for key, value in _own_storage(tmp_path, "cni").items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CONTAINERS_CONF", raising=False)
    check_network_backend()  # MLab's own containers.conf: no error
    # The same storage with a configuration that leaves the backend empty: podman uses the
    # recorded cni, and MLab refuses it.
    bare = tmp_path / "bare.conf"
    bare.write_text("[containers]\ndefault_ulimits = []\n")
    monkeypatch.setenv("CONTAINERS_CONF", str(bare))
    from mlab.errors import ToolMissingError

    with pytest.raises(ToolMissingError, match="podman uses the cni network backend"):
        check_network_backend()


@pytest.mark.e2e
def test_up_refuses_cni_in_one_line_before_starting_anything(tmp_path: Path) -> None:
    bare = tmp_path / "bare.conf"
    bare.write_text(containers_conf().read_text().replace('network_backend = "netavark"', ""))
    env = {**_own_storage(tmp_path, "cni"), "CONTAINERS_CONF": str(bare),
           "MLAB_STATE_DIR": str(tmp_path / "state")}
    proc = mlab("up", "--site", str(LOCAL_SITE), env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("mlab: error:")]
    assert len(errors) == 1 and "podman uses the cni network backend" in errors[0], proc.stderr
    assert "apt-get install netavark aardvark-dns" in errors[0]
    assert "Traceback" not in proc.stderr
    # Nothing was made: no state (passwords are created at render time, after the check).
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").rglob("*.json"))
