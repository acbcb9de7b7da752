"""The seed document's own temporary-install commands, verbatim, on a `mlab up` site.

The seed (docs/airlock.md, "The seed's commands") tells users::

    gemfield@airlock:/opt/public/airlock/pip$ pip download <pip-package>
    username@homepod:/opt/public/airlock/pip$ pip install *
    gemfield@airlock:/opt/public/airlock/apt$ apt-get download <apt-package>
    gemfield@airlock:/opt/public/airlock/apt$ apt-get install --download-only <apt-package>
    username@homepod:/opt/public/airlock/apt$ sudo dpkg -i <apt-package>

One site (``t21seed``, bind address 127.0.21.1, its own MLAB_STATE_DIR) with user alice runs
under the podman engine; commands run with ``podman exec`` as the Airlock user and as alice,
in the folders the seed names. The HomePod has no route out (only the code service).
The pip pair runs on a share where ``mlab stage pip`` has run too (its index is in
``pip-index/``, apart from the seed's folder). ``pip install *`` goes to alice's ``~/.local`` or, when the image gives users a virtual
environment, into it: the test imports the module with the user's own ``python3``.
``apt-get install --download-only`` leaves the packages in the Airlock's apt cache, which no
HomePod sees: ``sudo dpkg -i`` then fails and prints one line naming what to run instead,
and following that line works.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cli_runner import Run, mlab_site

from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1500)]

SITE = "t21seed"
BIND = "127.0.21.1"
AIRLOCK = f"mlab-{SITE}-airlock-airlock"
HOMEPOD = f"mlab-{SITE}-homepod-alice-homepod"


class SeedSite:
    def __init__(self, root: Path, image: str) -> None:
        self.file = root / f"{SITE}.yaml"
        self.env = {**os.environ, "MLAB_STATE_DIR": str(root / "state"), "COLUMNS": "200"}
        repo, tag = image.rsplit(":", 1)
        self.file.write_text(yaml.safe_dump({
            "apiVersion": "mlab.io/v1", "name": SITE,
            "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
            "access": {"bindAddress": BIND, "officeCIDRs": ["127.0.0.0/8"]},
            "users": [{"name": "alice", "uid": 1001, "service": {"ports": {
                "vnc": 15901, "rdp": 13389, "novnc": 17031, "ssh": 12201}}}],
            "airlock": {"service": {"ports": {"vnc": 15900, "novnc": 17030, "ssh": 10022}}},
            "security": {"report": "mailto:holes@example.com"},
        }))

    def mlab(self, *args: str, check: bool = True) -> Run:
        return mlab_site(self.file, *args, env=self.env, timeout=900, check=check)


@pytest.fixture(scope="module")
def site(homepod_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeedSite]:
    # A tag of our own: other sessions building other recipes prune hash tags of
    # localhost/mlab/homepod (mlab.image.build.prune_old_recipes), never this one.
    image = f"localhost/mlab/{SITE}:{homepod_image.rsplit(':', 1)[1]}"
    podman(["tag", homepod_image, image])
    s = SeedSite(tmp_path_factory.mktemp(SITE), image)
    s.mlab("down", "--volumes", check=False)
    s.mlab("up")
    yield s
    s.mlab("down", "--volumes", check=False)
    podman(["untag", image, image], check=False)


def run(container: str, user: str, cwd: str, command: str,
        timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``command`` in a login shell of ``user`` in ``cwd`` (as the seed's prompts show)."""
    return podman(["exec", "-u", user, "-w", cwd, container, "bash", "-lc", command],
                  check=False, timeout=timeout)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc.stdout + proc.stderr


def test_pip_download_then_pip_install_star(site: SeedSite) -> None:
    # MLab's own staging first: its index must not get in the way of the seed's `*`.
    ok(run(AIRLOCK, "airlock", "/home/airlock", "mlab stage pip iniconfig"))
    assert ok(run(AIRLOCK, "airlock", "/opt/public/airlock/pip-index", "ls")).split() == ["files", "simple"]
    # six as the brief says; tomli-w too, which the image surely lacks (six may be there).
    ok(run(AIRLOCK, "airlock", "/opt/public/airlock/pip", "pip download six"))
    ok(run(AIRLOCK, "airlock", "/opt/public/airlock/pip", "pip download tomli-w"))
    files = ok(run(HOMEPOD, "alice", "/opt/public/airlock/pip", "ls")).split()
    assert any(f.startswith("six-") for f in files) and any(f.startswith("tomli_w-") for f in files)
    assert all(f.endswith(".whl") for f in files), files  # only what the user downloaded
    ok(run(HOMEPOD, "alice", "/opt/public/airlock/pip", "pip install *"))
    ok(run(HOMEPOD, "alice", "/home/alice", "pip install iniconfig"))  # and the staged index
    out = ok(run(HOMEPOD, "alice", "/home/alice",
                 "python3 -c 'import six, tomli_w, iniconfig; print(tomli_w.__file__)'"))
    assert "/home/alice/" in out  # ~/.local, or the user's own virtual environment


def _wait_for_apt_lists(timeout: float = 180) -> None:
    """The Airlock fetches Debian's lists at start (supervisord program apt-lists)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = podman(["logs", AIRLOCK], check=False)
        text = logs.stdout + logs.stderr
        if "apt package lists refreshed" in text:
            return
        assert "could not refresh the apt package lists" not in text, text[-2000:]
        time.sleep(3)
    raise AssertionError("the Airlock did not refresh its apt lists in time")


def test_apt_get_download_then_dpkg_i(site: SeedSite) -> None:
    _wait_for_apt_lists()
    # jq with the two libraries the image lacks: the seed's `apt-get download <pkg>` per name.
    for pkg in ("jq", "libjq1", "libonig5"):
        ok(run(AIRLOCK, "airlock", "/opt/public/airlock/apt", f"apt-get download {pkg}"))
    ok(run(HOMEPOD, "alice", "/opt/public/airlock/apt",
           "sudo dpkg -i jq_*.deb libjq1_*.deb libonig5_*.deb"))
    assert ok(run(HOMEPOD, "alice", "/home/alice", "echo '{\"a\": 7}' | jq .a")).strip() == "7"


def test_apt_get_download_only_leaves_deps_behind_and_says_what_to_run(site: SeedSite) -> None:
    _wait_for_apt_lists()
    # The seed's second form downloads into the Airlock's /var/cache/apt/archives (root's).
    ok(run(AIRLOCK, "airlock", "/opt/public/airlock/apt",
           "sudo apt-get install --download-only -y htop"))
    cached = ok(run(AIRLOCK, "airlock", "/", "ls /var/cache/apt/archives"))
    assert "htop_" in cached and "libnl-3-200_" in cached
    # In the HomePod nothing of it is visible: dpkg fails and one line says what to run.
    failed = run(HOMEPOD, "alice", "/opt/public/airlock/apt", "sudo dpkg -i htop")
    assert failed.returncode != 0
    hints = [ln for ln in failed.stderr.splitlines() if ln.startswith("mlab: ")]
    assert len(hints) == 1, failed.stderr
    assert "mlab stage apt htop" in hints[0]
    assert "sudo apt-get update && sudo apt-get install -y htop" in hints[0]
    # Following the line works.
    ok(run(AIRLOCK, "airlock", "/home/airlock", "mlab stage apt htop"))
    ok(run(HOMEPOD, "alice", "/home/alice", "sudo apt-get update && sudo apt-get install -y htop"))
    assert "htop" in ok(run(HOMEPOD, "alice", "/home/alice", "htop --version"))


def test_verify_names_where_to_report(site: SeedSite) -> None:
    proc = site.mlab("verify")
    assert "report it to mailto:holes@example.com (SECURITY.md)" in proc.stderr
