"""The image recipe (pure): hashes that name cached images, the MLab wheel, tags, config."""

from __future__ import annotations

import hashlib
import base64
import json
import shutil
import subprocess
import zipfile
from io import BytesIO
from pathlib import Path

import pytest

from mlab.cli.main import main
from mlab.errors import UsageError
from mlab.image import recipe
from mlab.image.build import normalize_tag


@pytest.fixture
def image_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "image"
    shutil.copytree(recipe.image_dir(), dst)
    return dst


def test_base_hash_is_stable_and_ignores_caches(image_copy: Path) -> None:
    h = recipe.base_hash(image_copy, deps=["a>=1"])
    assert h == recipe.base_hash(image_copy, deps=["a>=1"])
    (image_copy / "rootfs" / "__pycache__").mkdir()
    (image_copy / "rootfs" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert recipe.base_hash(image_copy, deps=["a>=1"]) == h


@pytest.mark.parametrize("change", ["provision", "packages", "overlay", "exec-bit", "deps",
                                    "dpkg-rules"])
def test_base_hash_changes_with_every_input(image_copy: Path, change: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    before = recipe.base_hash(image_copy, deps=["a>=1"])
    deps = ["a>=1"]
    entry = image_copy / "rootfs" / "usr" / "local" / "sbin" / "mlab-entrypoint"
    if change == "provision":
        (image_copy / "provision.sh").write_text((image_copy / "provision.sh").read_text() + "\n# x\n")
    elif change == "packages":
        (image_copy / "packages.txt").write_text((image_copy / "packages.txt").read_text() + "htop\n")
    elif change == "overlay":
        entry.write_text(entry.read_text() + "\n")
    elif change == "exec-bit":
        entry.chmod(0o644)
    elif change == "dpkg-rules":
        monkeypatch.setattr(recipe, "DPKG_PATH_RULES", recipe.DPKG_PATH_RULES[:-1])
    else:
        deps = ["a>=2"]
    assert recipe.base_hash(image_copy, deps=deps) != before


def test_packages_carry_what_other_parts_need() -> None:
    pkgs = set(recipe.packages())
    needed = {"python3", "python3-pip", "python3-venv", "python3-dev", "build-essential", "git",
              "openssh-server", "openssh-sftp-server", "sudo", "curl", "wget", "ca-certificates",
              "dpkg-dev", "apt-utils", "iproute2", "tini", "supervisor", "xfce4",
              "tigervnc-standalone-server", "novnc", "websockify", "xrdp", "fonts-noto-cjk",
              "locales"}
    assert needed <= pkgs


def test_wheel_is_deterministic_and_complete(tmp_path: Path) -> None:
    w1 = recipe.make_wheel(ver="1.2.3", deps=["PyYAML>=6"])
    w2 = recipe.make_wheel(ver="1.2.3", deps=["PyYAML>=6"])
    assert w1 == w2 and w1.name == "mlab-1.2.3-py3-none-any.whl"
    zf = zipfile.ZipFile(BytesIO(w1.data))
    names = set(zf.namelist())
    assert {"mlab/__init__.py", "mlab/cli/main.py", "mlab/image/provision.sh",
            "mlab/image/rootfs/usr/local/sbin/mlab-entrypoint",
            "mlab-1.2.3.dist-info/RECORD"} <= names
    assert not any("__pycache__" in n for n in names)
    assert "mlab = mlab.cli.main:main" in zf.read("mlab-1.2.3.dist-info/entry_points.txt").decode()
    assert "Requires-Dist: PyYAML>=6" in zf.read("mlab-1.2.3.dist-info/METADATA").decode()
    # RECORD (PEP 376/427): urlsafe-base64 sha256 without padding, and sizes.
    for line in zf.read("mlab-1.2.3.dist-info/RECORD").decode().splitlines():
        name, digest, size = line.split(",")
        if digest:
            data = zf.read(name)
            expect = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert digest == f"sha256={expect}" and int(size) == len(data)
    info = zf.getinfo("mlab/image/rootfs/usr/local/sbin/mlab-entrypoint")
    assert (info.external_attr >> 16) & 0o111


def test_app_hash_follows_base_and_source() -> None:
    w = recipe.make_wheel(ver="1.0", deps=[])
    other = recipe.Wheel(name=w.name, data=w.data + b"x")
    assert recipe.app_hash("a", w) != recipe.app_hash("b", w)
    assert recipe.app_hash("a", w) != recipe.app_hash("a", other)


def test_import_changes_set_entrypoint_env_and_ports() -> None:
    changes = recipe.import_changes("abc")
    assert f"ENTRYPOINT {json.dumps(recipe.ENTRYPOINT)}" in changes
    assert any(c.startswith("ENV PATH=/usr/local/sbin:/usr/local/bin") for c in changes)
    assert {f"EXPOSE {p}/tcp" for p in (5900, 3389, 7030, 22)} <= set(changes)
    assert "LABEL mlab.recipe-hash=abc" in changes


@pytest.mark.parametrize(("tag", "ref"), [
    ("dev", "localhost/mlab/homepod:dev"),
    ("v1.2-rc_3", "localhost/mlab/homepod:v1.2-rc_3"),
    ("registry.example/mlab/homepod:7", "registry.example/mlab/homepod:7"),
], ids=["plain", "punctuation", "full-ref"])
def test_normalize_tag(tag: str, ref: str) -> None:
    assert normalize_tag(tag) == ref


def test_normalize_tag_rejects_bad_tags() -> None:
    with pytest.raises(UsageError, match="--tag"):
        normalize_tag("bad tag!")


def test_image_build_needs_local(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["image", "build"])
    assert exc.value.code == 2
    assert "--local" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["provision.sh", "rootfs/usr/local/sbin/mlab-entrypoint",
                                    "rootfs/usr/local/lib/mlab/start-xvnc",
                                    "rootfs/usr/local/lib/mlab/start-desktop",
                                    "rootfs/usr/local/lib/mlab/desktop-ready"])
def test_scripts_parse(script: str) -> None:
    subprocess.run(["bash", "-n", str(recipe.image_dir() / script)], check=True)


def test_image_build_steps_options_fail_before_building(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["image", "build", "--local", "--steps", "a.json", "--requests-from", "http://x"])
    assert exc.value.code == 2
    assert "give one of them" in capsys.readouterr().err
    bad = tmp_path / "approved.json"
    bad.write_text('{"packages": [{"id": 1}]}')
    with pytest.raises(SystemExit) as exc:
        main(["image", "build", "--local", "--steps", str(bad)])
    assert exc.value.code == 2
    assert "packages[0] lacks id, script" in capsys.readouterr().err
