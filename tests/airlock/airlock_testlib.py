"""Helpers for the Airlock tests: tiny wheels, sdists and .debs made on the spot, offline pip.

A module with a unique name (not conftest) so test modules and the benchmark can import it.
Nothing is cached between runs: every caller passes fresh folders.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path



def make_wheel(
    folder: Path,
    name: str,
    version: str,
    requires: Sequence[str] = (),
    requires_python: str | None = None,
    module_body: str = "",
) -> Path:
    """Write a minimal valid py3-none-any wheel (PEP 427) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        meta.append(f"Requires-Python: {requires_python}")
    meta += [f"Requires-Dist: {r}" for r in requires]
    files = {
        f"{dist}/__init__.py": module_body or f"VERSION = {version!r}\n",
        f"{info}/METADATA": "\n".join(meta) + "\n\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: mlab-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    out = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return out


def make_sdist(folder: Path, name: str, version: str) -> Path:
    """Write a minimal setuptools sdist (no wheel exists for it) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    dist = name.replace("-", "_")
    base = f"{dist}-{version}"
    files = {
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n\n'
        f'[project]\nname = "{name}"\nversion = "{version}"\n',
        f"{dist}/__init__.py": f"VERSION = {version!r}\n",
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
    }
    out = folder / f"{base}.tar.gz"
    with tarfile.open(out, "w:gz") as tf:
        for path, text in files.items():
            data = text.encode()
            ti = tarfile.TarInfo(f"{base}/{path}")
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return out


def build_deb(folder: Path, name: str, version: str = "1.0", depends: str | None = None) -> Path:
    """Build a tiny architecture-independent .deb with dpkg-deb (a script in /usr/bin)."""
    root = Path(tempfile.mkdtemp(prefix=f"{name}-build-"))
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    tool = root / "usr" / "bin" / name
    tool.write_text(f"#!/bin/sh\necho {name} {version}\n")
    tool.chmod(0o755)
    control = f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n"
    if depends:
        control += f"Depends: {depends}\n"
    (root / "DEBIAN" / "control").write_text(control)
    out = folder / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(root), str(out)], check=True, capture_output=True)
    shutil.rmtree(root)
    return out


def pip_install_target(index: Path, target: Path, *specs: str) -> subprocess.CompletedProcess[str]:
    """``pip install --target`` offline from ``index`` (a simple/ folder); pip config ignored."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "install", "--no-cache-dir",
         "--index-url", index.as_uri(), "--target", str(target), *specs],
        capture_output=True, text=True, env=env, check=False,
    )
