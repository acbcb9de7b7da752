"""`mlab render` in parts and in worker processes: the same bytes as rendering in one go.

The parts of homepod.yaml and secrets.yaml are cut every ``CHUNK_USERS`` users; here that
is set to 2 so the example sites (a few users each) are cut at many places, and the
workers are real forked processes (``MIN_COST`` 0 so even a small site uses them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import mlab.render as render
from mlab.cli import workers
from mlab.render import TextPart, render_site, render_texts, run_serially, text_parts
from mlab.secrets import password_keys
from mlab.site import load_site

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "CHUNK_USERS", 2)
    monkeypatch.setattr(workers, "MIN_COST", 0)


def _passwords(site) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {key: f"golden-{key}-not-a-secret" for key in password_keys(site)}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("with_secrets", [True, False])
def test_parts_in_workers_give_the_same_bytes(path: Path, with_secrets: bool,
                                              small_chunks: None) -> None:
    site = load_site(path)
    passwords = _passwords(site)
    expected = render_site(site, passwords).texts(with_secrets=with_secrets)
    parts = text_parts(site, passwords, with_secrets)
    if len(site.users) > 2:
        assert len([p for p in parts if p.file == "homepod.yaml"]) > 2  # really cut
    serial = render_texts(site, passwords, with_secrets)
    forked = render_texts(site, passwords, with_secrets,
                          run=lambda ps: workers.run_in_workers(ps, workers=2))
    assert serial == expected
    assert forked == expected
    assert list(forked) == list(expected)  # the files in the same order
    encoded = render.render_encoded(site, lambda ps: workers.encode_in_workers(ps, workers=2),
                                    passwords, with_secrets)
    assert list(encoded) == list(expected)
    assert {name: b"".join(pieces) for name, pieces in encoded.items()} == {
        name: text.encode("utf-8") for name, text in expected.items()}


def test_site_ca_certificates_in_parts(tmp_path: Path, small_chunks: None) -> None:
    from site_kit import local_site

    from mlab.tls import load_or_create

    site = local_site(tls={"mode": "site-ca"}, portal={"enabled": True,
                                                      "url": "https://127.0.0.1:8443"},
                      users=[{"name": f"u{i}", "uid": 2000 + i} for i in range(5)])
    tls = load_or_create(site, tmp_path)
    passwords = _passwords(site)
    expected = render_site(site, passwords, tls).texts(with_secrets=True)
    forked = render_texts(site, passwords, with_secrets=True, tls=tls,
                          run=lambda ps: workers.run_in_workers(ps, workers=2))
    assert forked == expected
    assert expected["secrets.yaml"].count("kubernetes.io/tls") >= 5


def test_no_secrets_file_when_there_are_none(small_chunks: None) -> None:
    site = load_site(EXAMPLES[0])
    assert "secrets.yaml" not in render_texts(site, None, with_secrets=True)
    assert render_texts(site, None, with_secrets=True) == render_site(site).texts(True)


def test_missing_password_is_the_same_error(small_chunks: None) -> None:
    site = load_site(EXAMPLES[0])
    passwords = _passwords(site)
    del passwords["admin"]
    with pytest.raises(KeyError, match="admin"):
        render_site(site, passwords)
    with pytest.raises(KeyError, match="admin"):
        render_texts(site, passwords, True, run=lambda ps: workers.run_in_workers(ps, workers=2))
    user = site.users[0].name
    passwords = _passwords(site)
    del passwords[user]
    with pytest.raises(KeyError, match=user):
        render_texts(site, passwords, True, run=lambda ps: workers.run_in_workers(ps, workers=2))


def test_a_part_failing_in_a_worker_raises_here(small_chunks: None, tmp_path: Path) -> None:
    """The error of a part made in a worker reaches the caller as the part's own error
    (the part is made again in this process), and the other parts' texts are kept."""
    import os

    tries = tmp_path / "tries"

    def boom() -> str:
        with tries.open("a") as f:
            f.write(f"{os.getpid()}\n")
        raise ValueError("users[3].name: bad")

    parts = [TextPart("a", 10, lambda: "one"), TextPart("a", 10, boom),
             TextPart("a", 10, lambda: "three")]
    assert workers.share([p.cost for p in parts], 2) == [[0, 2], [1]]  # boom: the worker's
    with pytest.raises(ValueError, match=r"users\[3\]\.name: bad"):
        workers.run_in_workers(parts, workers=2)
    pids = tries.read_text().split()
    assert len(pids) == 2 and pids[0] != str(os.getpid()) and pids[1] == str(os.getpid())
    good = [TextPart("a", 10, lambda: "one"), TextPart("b", 10, lambda: "two")]
    assert workers.run_in_workers(good, workers=2) == run_serially(good) == ["one", "two"]


def test_parts_are_shared_by_cost() -> None:
    assert workers.share([100, 1, 1, 50, 50, 0], 2) == [[0, 1, 5], [2, 3, 4]]  # 101 and 101
    assert workers.share([5, 5, 5, 5], 4) == [[0], [1], [2], [3]]
    assert workers.share([], 3) == [[], [], []]


def test_small_work_stays_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Below MIN_COST no process is forked; above it a worker makes its share."""
    import os

    pid = str(os.getpid())
    parts = [TextPart("a", 1, lambda: str(os.getpid())), TextPart("a", 1, lambda: str(os.getpid()))]
    assert workers.run_in_workers(parts, workers=2) == [pid, pid]
    monkeypatch.setattr(workers, "MIN_COST", 0)
    here, there = workers.run_in_workers(parts, workers=2)
    assert here == pid and there != pid


def test_whole_command_with_workers_writes_the_serial_bytes(tmp_path: Path) -> None:
    """`mlab render --out-dir` as a user runs it, on a site big enough for workers (above
    MIN_COST), writes exactly what rendering in one process gives, stdout included."""
    import json
    import os
    import subprocess
    import sys

    import yaml

    from mlab.stored_render import render_texts_with_passwords

    users = workers.MIN_COST + 500
    data = yaml.safe_load((ROOT / "examples" / "local.yaml").read_text(encoding="utf-8"))
    data["users"] = [{"name": f"u{i:05d}", "uid": 3000 + i, "groups": ["ml"]}
                     for i in range(users)]
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    env = {**os.environ, "MLAB_STATE_DIR": str(tmp_path / "state")}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mlab.cli.main", "render", "--site", str(site_file)]
    proc = subprocess.run([*cmd, "--out-dir", str(out)], capture_output=True, text=True,
                          env=env, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    printed = subprocess.run([*cmd, "--with-secrets"], capture_output=True, text=True,
                             env=env, timeout=600, check=False)
    assert printed.returncode == 0, printed.stderr
    assert json.loads((tmp_path / "state" / data["name"] / "passwords.json").read_text())
    expected = render_texts_with_passwords(load_site(site_file), with_secrets=True,
                                           state_dir=tmp_path / "state")
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name, text in expected.items():
        assert (out / name).read_text(encoding="utf-8") == text, name
    assert printed.stdout == "".join(expected.values())
    assert expected["homepod.yaml"].count("kind: Deployment") == users
