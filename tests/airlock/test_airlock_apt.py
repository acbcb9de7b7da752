"""`mlab stage apt`: closure against a pristine status, flat repo with Release, clear refusals.

Fast tests use a local flat repository of tiny packages built here with dpkg-deb; one test
downloads a real package with a shared-library dependency (jq -> libjq1 -> libonig5) from
the Debian mirror, against a copy of this machine's dpkg status without those packages.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import subprocess
from pathlib import Path

import pytest

from mlab.airlock import apt
from airlock_testlib import build_deb
from mlab.errors import MlabError, UsageError


def make_source_repo(tmp: Path, debs: list[tuple]) -> Path:
    repo = tmp / "upstream"
    repo.mkdir()
    for spec in debs:
        build_deb(repo, *spec)
    apt.write_indexes(repo)
    sources = tmp / "sources.list"
    sources.write_text(f"deb [trusted=yes] file:{repo} ./\n")
    return sources


def trimmed_status(dest: Path, remove: set[str]) -> Path:
    """This machine's dpkg status without ``remove`` and whatever depends on them."""
    paras = [p for p in Path("/var/lib/dpkg/status").read_text().split("\n\n") if p.strip()]

    def name(p: str) -> str:
        return re.match(r"Package: (\S+)", p).group(1)

    def deps(p: str) -> set[str]:
        m = re.findall(r"^(?:Pre-)?Depends: (.*)$", p, re.M)
        return {re.split(r"[ :(]", d.strip())[0] for line in m for alt in line.split(",") for d in alt.split("|")}

    gone = set(remove)
    changed = True
    while changed:
        changed = False
        for p in paras:
            if name(p) not in gone and deps(p) & gone:
                gone.add(name(p))
                changed = True
    dest.write_text("\n\n".join(p for p in paras if name(p) not in gone) + "\n")
    return dest


def simulate_install(tmp: Path, share: Path, status: Path, pkg: str) -> subprocess.CompletedProcess[str]:
    """apt-get -s install PKG with the share's repo as the only source (as in a HomePod)."""
    work = tmp / "sim"
    for sub in ("state", "cache/archives/partial", "sources.list.d", "lists/partial"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    src = work / "sources.list"
    src.write_text(f"deb [trusted=yes] file:{share / 'apt'} ./\n")
    opts = apt.apt_options(work, status, src, work / "lists")
    update = subprocess.run(["apt-get", *opts, "update"], capture_output=True, text=True)
    assert update.returncode == 0, update.stdout + update.stderr
    assert "W:" not in update.stdout + update.stderr, update.stdout + update.stderr
    return subprocess.run(["apt-get", *opts, "-s", "install", pkg], capture_output=True, text=True)


@pytest.fixture
def empty_status(tmp_path) -> Path:
    return trimmed_status(tmp_path / "status", set())


def test_closure_and_repo_indexes(tmp_path, empty_status) -> None:
    sources = make_source_repo(tmp_path, [("mlt-app", "1.0", "mlt-lib (>= 1.0)"), ("mlt-lib", "1.2"), ("mlt-other", "1.0")])
    share = tmp_path / "share"
    res = apt.stage(share, ["mlt-app"], status=empty_status, sources=sources, lists=tmp_path / "lists")
    assert sorted(d.name for d in res.added) == ["mlt-app_1.0_all.deb", "mlt-lib_1.2_all.deb"]
    repo = share / "apt"
    packages = (repo / "Packages").read_bytes()
    assert gzip.decompress((repo / "Packages.gz").read_bytes()) == packages
    assert b"Package: mlt-lib" in packages and b"mlt-other" not in packages
    release = (repo / "Release").read_text()
    for name in ("Packages", "Packages.gz"):
        digest = hashlib.sha256((repo / name).read_bytes()).hexdigest()
        assert re.search(rf"^ {digest} +\d+ {re.escape(name)}$", release, re.M), name
    sim = simulate_install(tmp_path, share, empty_status, "mlt-app")
    assert sim.returncode == 0, sim.stdout + sim.stderr
    assert "Inst mlt-app" in sim.stdout and "Inst mlt-lib" in sim.stdout
    lines = (share / "audit.log").read_text().splitlines()
    assert len(lines) == 2 and all('"stage-apt"' in ln for ln in lines)


def test_closure_skips_what_the_image_has(tmp_path, empty_status) -> None:
    sources = make_source_repo(tmp_path, [("mlt-app", "1.0", "mlt-lib"), ("mlt-lib", "1.0")])
    status = tmp_path / "status-with-lib"
    status.write_text(empty_status.read_text() + "\nPackage: mlt-lib\nStatus: install ok installed\nVersion: 1.0\n"
                      "Architecture: all\nMaintainer: t <t@example.org>\nDescription: test\n")
    res = apt.stage(tmp_path / "share", ["mlt-app"], status=status, sources=sources, lists=tmp_path / "lists")
    assert [d.name for d in res.added] == ["mlt-app_1.0_all.deb"]


def test_missing_dependency_is_refused_by_name(tmp_path, empty_status) -> None:
    sources = make_source_repo(tmp_path, [("mlt-app", "1.0", "mlt-gone")])
    share = tmp_path / "share"
    with pytest.raises(MlabError, match="dependency mlt-gone of mlt-app cannot be found"):
        apt.stage(share, ["mlt-app"], status=empty_status, sources=sources, lists=tmp_path / "lists")
    assert not (share / "apt").exists()


def test_unknown_package_is_refused_by_name(tmp_path, empty_status) -> None:
    sources = make_source_repo(tmp_path, [("mlt-app", "1.0")])
    with pytest.raises(MlabError, match="apt package mlt-nope was not found"):
        apt.stage(tmp_path / "share", ["mlt-nope"], status=empty_status, sources=sources, lists=tmp_path / "lists")


@pytest.mark.parametrize("bad", ["Foo", "-o", "a b", "x;rm"], ids=["upper", "option", "space", "shell"])
def test_bad_names_are_usage_errors(bad) -> None:
    with pytest.raises(UsageError, match="not a Debian package name"):
        apt.check_names([bad])


def test_missing_status_names_the_option(tmp_path) -> None:
    with pytest.raises(UsageError, match="--status"):
        apt.stage(tmp_path, ["jq"], status=tmp_path / "nope")


def test_real_package_with_shared_library_from_debian(tmp_path) -> None:
    status = trimmed_status(tmp_path / "status", {"jq", "libjq1", "libonig5"})
    share = tmp_path / "share"
    res = apt.stage(share, ["jq"], status=status, lists=tmp_path / "lists")
    names = sorted(d.name.split("_")[0] for d in res.added)
    assert names == ["jq", "libjq1", "libonig5"]
    sim = simulate_install(tmp_path, share, status, "jq")
    assert sim.returncode == 0, sim.stdout + sim.stderr
    assert all(f"Inst {n} " in sim.stdout for n in names)


def test_install_plan_parses_simulation() -> None:
    text = (
        "Inst libonig5 (6.9.8-1 Debian:12.5/stable [amd64])\n"
        "Inst libjq1 [1.6-2.1] (1.6-2.1+deb12u3 Debian-Security:12/stable-security [amd64])\n"
        "Conf libonig5 (6.9.8-1 Debian:12.5/stable [amd64])\n"
        "Inst tzdata (2024a-0+deb12u1 Debian:12.5/stable [all])\n"
    )
    assert apt.install_plan(text) == ["libonig5=6.9.8-1", "libjq1=1.6-2.1+deb12u3", "tzdata=2024a-0+deb12u1"]
