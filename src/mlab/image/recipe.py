"""The image recipe as data: its files, the hashes that name the images, the wheel of MLab.

Pure code (reads files, no podman, no network). Invariant: a hash changes exactly when an
input that shapes the image changes, so a cached image is reused only when the recipe that
made it is the same:

- the *base hash* covers the provisioning script, the package list, the rootfs overlay
  (paths, executable bits, contents), MLab's runtime dependency list (pyproject.toml), the
  Debian suite and mirrors, and dpkg's path rules;
- the *app hash* covers the base hash and the bytes of the MLab wheel (its source).
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import mlab

RECIPE_VERSION = "mlab-image-v1"
"""Bump to force a rebuild of every cached base image (a change this module cannot see)."""

SUITE = "bookworm"
MIRRORS = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
DPKG_PATH_RULES = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/locale/*/LC_MESSAGES/*.mo",
    "path-include=/usr/share/locale/en*/LC_MESSAGES/*.mo",
    "path-include=/usr/share/locale/zh*/LC_MESSAGES/*.mo",
)
"""dpkg's ``path-exclude``/``path-include`` rules of the local base (dpkg(1), in this order:
the last matching rule wins): no manual pages, info or documentation (licences stay), and
message translations only for the languages whose locales provision.sh generates (en_US,
zh_CN). About 180 MB less to unpack, tar and import (issue 18). They stay in the image's
/etc/dpkg/dpkg.cfg.d/99mmdebstrap, so packages installed later follow the same rules."""
REPOSITORY = "localhost/mlab/homepod"
BASE_REPOSITORY = "localhost/mlab/homepod-base"
PORTS = (5900, 3389, 7030, 22)
ENTRYPOINT = ["/usr/bin/tini", "-g", "--", "/usr/local/sbin/mlab-entrypoint"]
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "en_US.UTF-8",
}
_SKIP = re.compile(r"(^|/)(__pycache__|\.mypy_cache|\.pytest_cache)(/|$)|\.py[co]$|~$")


def package_dir() -> Path:
    """The directory of the ``mlab`` package being run (the source tree when editable)."""
    return Path(mlab.__file__).resolve().parent


def image_dir() -> Path:
    """``mlab/image``: provision.sh, packages.txt, rootfs/, Containerfile."""
    return package_dir() / "image"


def _files(root: Path) -> list[Path]:
    """Regular files under ``root``, sorted, without caches and byte code."""
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not _SKIP.search(rel):
            out.append(path)
    return out


def packages(image: Path | None = None) -> list[str]:
    """The Debian package names of packages.txt, in file order ('#' starts a comment)."""
    text = ((image or image_dir()) / "packages.txt").read_text()
    return [word for line in text.splitlines() for word in line.split("#", 1)[0].split()]


def dependencies() -> list[str]:
    """MLab's runtime requirements (PEP 508 strings): from pyproject.toml next to the source
    tree when there is one (a checkout), else from the installed package's metadata."""
    pyproject = package_dir().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        data = tomllib.loads(pyproject.read_text())
        if data.get("project", {}).get("name") == "mlab":
            return sorted(data["project"].get("dependencies", []))
    reqs = metadata.requires("mlab") or []
    return sorted(r for r in reqs if "extra ==" not in r)


def version() -> str:
    """MLab's version (pyproject.toml in a checkout, else the installed metadata)."""
    pyproject = package_dir().parent.parent / "pyproject.toml"
    if pyproject.is_file():
        data = tomllib.loads(pyproject.read_text())
        if data.get("project", {}).get("name") == "mlab":
            return str(data["project"]["version"])
    return metadata.version("mlab")


def base_hash(image: Path | None = None, deps: list[str] | None = None) -> str:
    """Hex sha256 of everything that shapes the base image (see the module docstring)."""
    root = image or image_dir()
    h = hashlib.sha256()
    h.update(f"{RECIPE_VERSION}\n{SUITE}\n".encode())
    for line in MIRRORS:
        h.update(f"mirror {line}\n".encode())
    for rule in DPKG_PATH_RULES:
        h.update(f"dpkg {rule}\n".encode())
    for req in deps if deps is not None else dependencies():
        h.update(f"req {req}\n".encode())
    for name in ("provision.sh", "packages.txt"):
        h.update(f"file {name}\n".encode() + (root / name).read_bytes())
    for path in _files(root / "rootfs"):
        mode = "x" if path.stat().st_mode & 0o111 else "-"
        rel = path.relative_to(root / "rootfs").as_posix()
        h.update(f"rootfs {mode} {rel} {path.stat().st_size}\n".encode() + path.read_bytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Wheel:
    """A built wheel: its file name (PEP 427) and bytes."""

    name: str
    data: bytes


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return f"sha256={digest.decode()}"


def make_wheel(pkg: Path | None = None, ver: str | None = None, deps: list[str] | None = None) -> Wheel:
    """Build a pure-Python wheel of the ``mlab`` package directory (PEP 427 / PEP 376 RECORD).

    Deterministic: the same sources give the same bytes (fixed timestamps, sorted entries),
    so its hash names the application layer. No setuptools needed: MLab is pure Python and
    ships its data files (scripts, rootfs) inside the package directory.

    Args:
        pkg: the ``mlab`` package directory. Default: :func:`package_dir`.
        ver: the version. Default: :func:`version`.
        deps: Requires-Dist lines. Default: :func:`dependencies`.
    """
    pkg = pkg or package_dir()
    ver = ver or version()
    deps = dependencies() if deps is None else deps
    dist = f"mlab-{ver}.dist-info"
    entries: list[tuple[str, bytes, int]] = []
    for path in _files(pkg):
        mode = 0o755 if path.stat().st_mode & 0o111 else 0o644
        entries.append((f"mlab/{path.relative_to(pkg).as_posix()}", path.read_bytes(), mode))
    meta = "Metadata-Version: 2.1\nName: mlab\nVersion: %s\n%s" % (
        ver, "".join(f"Requires-Dist: {d}\n" for d in deps))
    entries.append((f"{dist}/METADATA", meta.encode(), 0o644))
    entries.append((f"{dist}/WHEEL", b"Wheel-Version: 1.0\nGenerator: mlab\n"
                    b"Root-Is-Purelib: true\nTag: py3-none-any\n", 0o644))
    entries.append((f"{dist}/entry_points.txt",
                    b"[console_scripts]\nmlab = mlab.cli.main:main\n", 0o644))
    entries.append((f"{dist}/top_level.txt", b"mlab\n", 0o644))
    record = "".join(f"{n},{_record_hash(d)},{len(d)}\n" for n, d, _ in entries)
    record += f"{dist}/RECORD,,\n"
    entries.append((f"{dist}/RECORD", record.encode(), 0o644))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return Wheel(name=f"mlab-{ver}-py3-none-any.whl", data=buf.getvalue())


def app_hash(base: str, wheel: Wheel) -> str:
    """Hex sha256 naming the final image: the base hash and the wheel's bytes."""
    return hashlib.sha256(f"{base}\n{wheel.name}\n".encode() + wheel.data).hexdigest()


def import_changes(recipe_hash: str) -> list[str]:
    """The ``podman import --change`` instructions of the base image (its whole config:
    an imported image has no environment, entrypoint or ports otherwise)."""
    import json

    changes = [f"ENV {k}={v}" for k, v in ENV.items()]
    changes.append(f"ENTRYPOINT {json.dumps(ENTRYPOINT)}")
    changes += [f"EXPOSE {p}/tcp" for p in PORTS]
    changes.append("WORKDIR /")
    changes.append(f"LABEL mlab.recipe-hash={recipe_hash}")
    return changes


def app_containerfile(base_ref: str, wheel: Wheel, app: str, recipe: str) -> str:
    """The Containerfile of the thin layer that installs MLab's wheel into the base's venv
    (its dependencies are already there: --no-deps, and --no-index so nothing is fetched)."""
    return (
        f"FROM {base_ref}\n"
        f"COPY {wheel.name} /var/tmp/{wheel.name}\n"
        f"RUN /opt/mlab/venv/bin/pip install -q --no-deps --no-index --no-cache-dir "
        f"--disable-pip-version-check /var/tmp/{wheel.name} && rm /var/tmp/{wheel.name}\n"
        f"LABEL mlab.recipe-hash={recipe} mlab.app-hash={app}\n"
    )
