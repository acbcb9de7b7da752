"""The seed document's own temporary-install commands, verbatim, on the node.

The same commands as tests/e2e/test_seed_commands.py runs under podman, typed by the users
into interactive SSH shells of the Airlock and alice's HomePod at their Services (the
reviewed posture gives SSH a shell only), in the folders the seed names::

    airlock:/opt/public/airlock/pip$ pip download six
    homepod:/opt/public/airlock/pip$ pip install *
    airlock:/opt/public/airlock/apt$ apt-get download <apt-package>
    homepod:/opt/public/airlock/apt$ sudo dpkg -i <apt-package>

alice's HomePod reaches neither PyPI nor Debian: what it installs comes from the share.
The pip pair runs after ``mlab stage pip``: MLab's index lives in ``pip-index/``, so the
shell's ``*`` in the seed's folder sees only the users' wheels (it used to see ``files`` and
``simple`` too, which pip read as project names; docs/airlock.md, "The seed's commands").
"""

from __future__ import annotations

import pytest
from nodekit import Node
from test_node_journeys import Lab, _airlock_lists_ready
from test_node_journeys import lab as lab  # noqa: F401  (the module fixture, applied once)

pytestmark = [pytest.mark.e2e, pytest.mark.node]


def test_pip_download_then_pip_install_star(lab: Lab) -> None:
    # alice's HomePod on the current image: a running one keeps the image it started with
    # (an older checkout's `localhost/mlab/homepod:latest`, whose /etc/pip.conf may name
    # another folder). The site names the same reference, so `--restart-user` restarts it.
    moved = lab.node.mlab("apply", "--site", str(lab.site), "--restart-user", "alice",
                          "--timeout", "600")
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert "restarted homepod-alice on " in moved.stderr, moved.stderr[-2000:]
    fetched = lab.shell("airlock", "airlock",
                        "mlab stage pip iniconfig >/dev/null 2>&1 && echo INDEX $(ls /opt/public/airlock/pip-index) && "
                        "cd /opt/public/airlock/pip && pip download six && pip download tomli-w "
                        "&& echo FETCHED", timeout=300)
    lines = fetched.splitlines()
    assert "FETCHED" in lines and "INDEX files simple" in lines, fetched[-3000:]
    out = lab.shell("homepod-alice", "alice",
                    # An earlier journey may have installed tomli-w in alice's home already.
                    "pip uninstall -y tomli-w >/dev/null 2>&1; "
                    "cd /opt/public/airlock/pip && echo LS $(ls) && "
                    "pip install * >/dev/null 2>&1 && echo PIP-OK; "
                    "cd && pip install iniconfig >/dev/null 2>&1 && "
                    "python3 -c 'import six, tomli_w, iniconfig; print(\"SEED\", tomli_w.__file__)'",
                    timeout=300)
    assert "PIP-OK" in out.splitlines(), out[-3000:]
    listed = next((ln.split()[1:] for ln in out.splitlines() if ln.startswith("LS ")), [])
    assert listed and all(f.endswith(".whl") for f in listed), out[-3000:]
    where = next((ln.split()[-1] for ln in out.splitlines() if ln.startswith("SEED ")), "")
    assert where.startswith("/home/alice/"), out[-3000:]


def test_apt_get_download_then_dpkg_i(lab: Lab, node: Node) -> None:
    _airlock_lists_ready(node)
    # jq with the two libraries the image lacks: the seed's `apt-get download <pkg>` per name.
    fetched = lab.shell("airlock", "airlock",
                        "cd /opt/public/airlock/apt && apt-get download jq libjq1 libonig5 "
                        "&& echo FETCHED", timeout=300)
    assert "FETCHED" in fetched.splitlines(), fetched[-3000:]
    out = lab.shell("homepod-alice", "alice",
                    "cd /opt/public/airlock/apt && "
                    "sudo -n dpkg -i jq_*.deb libjq1_*.deb libonig5_*.deb >/dev/null 2>&1 "
                    "&& echo DPKG-OK; "
                    "echo '{\"a\": 7}' | jq .a", timeout=300)
    assert "DPKG-OK" in out.splitlines(), out[-3000:]
    assert out.splitlines()[-1] == "7", out[-3000:]
