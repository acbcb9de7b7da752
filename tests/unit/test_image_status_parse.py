"""Reading `apt-get -s upgrade` (mlab.image.status.parse_simulated_upgrade)."""

from __future__ import annotations

import pytest

from mlab.image.status import parse_simulated_upgrade

SAMPLE = """NOTE: This is only a simulation!
Reading package lists...
Calculating upgrade...
The following packages will be upgraded:
  libssl3 openssl tzdata
3 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.
Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])
Inst openssl [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])
Inst tzdata [2024b-0+deb12u1] (2025b-0+deb12u1 Debian:12.11/stable-updates [all])
Conf libssl3 (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])
"""


def test_parse_simulated_upgrade() -> None:
    updates = parse_simulated_upgrade(SAMPLE)
    assert [(u.package, u.installed, u.candidate, u.security) for u in updates] == [
        ("libssl3", "3.0.15-1~deb12u1", "3.0.17-1~deb12u2", True),
        ("openssl", "3.0.15-1~deb12u1", "3.0.17-1~deb12u2", True),
        ("tzdata", "2024b-0+deb12u1", "2025b-0+deb12u1", False),
    ]
    assert updates[2].suites == "Debian:12.11/stable-updates"


@pytest.mark.parametrize("text", ["", "0 upgraded, 0 newly installed\n", "Conf x (1 a [all])\n"],
                         ids=["empty", "nothing", "conf-only"])
def test_nothing_pending(text: str) -> None:
    assert parse_simulated_upgrade(text) == []
