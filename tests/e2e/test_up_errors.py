"""`mlab up` refuses cleanly without a usable podman: one line naming what to install.

No containers run here. A missing podman is a PATH without it; a too-old podman is a
stand-in script reporting 4.2.0, because an old podman cannot be installed next to the
real one (the only fake in these tests, at the process boundary).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_runner import Run, mlab

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "examples" / "local.yaml"


def _mlab(args: list[str], path: str, state: Path) -> Run:
    return mlab(*args, env={"PATH": path, "MLAB_STATE_DIR": str(state)}, timeout=120)


@pytest.mark.parametrize("command", [["up"], ["down"], ["down", "--volumes"]])
def test_podman_missing_names_what_to_install(tmp_path: Path, command: list[str]) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = _mlab([*command, "--site", str(SITE)], str(empty), tmp_path / "state")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "mlab: error: podman is not installed (install it: apt-get install podman runc)"]
    assert not (tmp_path / "state" / "local" / "podman").exists()


def test_podman_too_old_names_the_version(tmp_path: Path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "podman"
    script.write_text("#!/bin/sh\necho 4.2.0\n")
    script.chmod(0o755)
    proc = _mlab(["up", "--site", str(SITE)], f"{fake}:/usr/bin:/bin", tmp_path / "state")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "podman 4.2.0 is too old (MLab needs 4.3 or newer)" in lines[0]
    assert "apt-get install podman" in lines[0]


def test_bad_output_format_is_a_usage_error(tmp_path: Path) -> None:
    proc = _mlab(["status", "--site", str(SITE), "-o", "yaml"], os.environ["PATH"],
                 tmp_path / "state")
    assert proc.returncode == 2
    assert "--output 'yaml': choose table or json" in proc.stderr


def test_status_of_a_site_that_is_not_up(tmp_path: Path) -> None:
    proc = _mlab(["status", "--site", str(SITE), "-o", "json"], os.environ["PATH"],
                 tmp_path / "state")
    assert proc.returncode == 0 and proc.stdout.strip() == "[]"
    proc = _mlab(["verify", "--site", str(SITE)], os.environ["PATH"], tmp_path / "state")
    assert proc.returncode == 1
    assert "site local is not up (run `mlab up` first)" in proc.stderr


@pytest.mark.e2e
def test_down_volumes_forgets_the_passwords(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """After `mlab down --volumes` the next `up` is a first start and shows new passwords
    (issue 10: passwords.json was kept, so the user never saw the new ones)."""
    import secrets

    from mlab.secrets import load_or_create_passwords, passwords_path
    from mlab.site import load_site

    # A site name of its own: `down` removes every podman object of the site's name.
    own = tmp_path / "site.yaml"
    own.write_text(SITE.read_text().replace("name: local", f"name: t10pw{secrets.token_hex(3)}",
                                            1))
    state = tmp_path / "state"
    site = load_site(own)
    assert site.name.startswith("t10pw")
    monkeypatch.setenv("MLAB_STATE_DIR", str(state))
    load_or_create_passwords(site)
    pw = passwords_path(site)
    assert pw.is_file()
    kept = _mlab(["down", "--site", str(own)], os.environ["PATH"], state)
    assert kept.returncode == 0, kept.stderr
    assert pw.is_file(), "plain down keeps the passwords (the homes stay)"
    gone = _mlab(["down", "--volumes", "--site", str(own)], os.environ["PATH"], state)
    assert gone.returncode == 0, gone.stderr
    assert not pw.exists()
