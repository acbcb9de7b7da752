"""Site-file mistakes that would otherwise surface only when a pod starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runner import mlab

CASES = [
    ("name: x\ntimezone: Mars/Base\n", "timezone: 'Mars/Base' is not in the IANA time zone database"),
    ("name: x\ntimezone: 'Asia/Shanghai; rm'\n", "is not a time zone name"),
    ("name: x\nusers: []\nusers: []\n", "line 3, column 1: key 'users' is given twice"),
    ("name: x\nusers:\n  - name: a\n    uid: 1001\n    uid: 1002\n", "key 'uid' is given twice"),
]


@pytest.mark.parametrize(("text", "message"), CASES, ids=["unknown-tz", "bad-tz", "dup-top", "dup-nested"])
def test_site_check_rejects(tmp_path: Path, text: str, message: str) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(text, encoding="utf-8")
    proc = mlab("site", "check", "--site", str(site))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_known_timezone_accepted(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("name: x\ntimezone: Asia/Shanghai\n", encoding="utf-8")
    proc = mlab("site", "check", "--site", str(site))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{site}: ok (site x, namespace mlab, 0 user(s))\n"


def test_one_zone_check_agrees_with_the_listing() -> None:
    """The site's time zone is checked by opening its one file (not the 600 of
    ``available_timezones()``); on this machine's zoneinfo files both accept the same names:
    every listed zone, and none of the other files (right/, posix/, posixrules, tables)."""
    import os
    import zoneinfo

    from mlab.site import _listed_timezone

    listed = zoneinfo.available_timezones()
    assert listed, "this test needs the zoneinfo files (Debian's tzdata)"
    assert all(_listed_timezone(name) for name in listed)
    others: set[str] = set()
    for root in zoneinfo.TZPATH:
        for top, _, files in os.walk(root, followlinks=True):
            others |= {os.path.relpath(os.path.join(top, f), root) for f in files}
    others -= listed
    assert {"posixrules", "right/UTC", "posix/Asia/Shanghai"} <= others
    assert not [name for name in others if _listed_timezone(name)]
