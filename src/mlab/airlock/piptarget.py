"""The interpreter and platform ``mlab stage pip`` stages wheels for (PEP 508 markers, pip's
target options)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.markers import default_environment

from mlab.errors import UsageError


@dataclass(frozen=True)
class Target:
    """The interpreter and platform wheels are staged for.

    Attributes:
        python_version: ``"3.11"``-style version; None: the interpreter running mlab.
        platforms: pip platform tags (``manylinux_2_36_x86_64``...); empty: this machine's.
        implementation: pip implementation tag (``cp``).
        abi: pip ABI tag (``cp311``); None: pip's default for the version.
    """

    python_version: str | None = None
    platforms: tuple[str, ...] = ()
    implementation: str = "cp"
    abi: str | None = None

    @property
    def foreign(self) -> bool:
        """True when the target is not the local interpreter (only wheels can be staged)."""
        return bool(self.python_version or self.platforms or self.abi)

    def marker_environment(self) -> dict[str, str]:
        """PEP 508 marker variables for the target (the local ones, overridden)."""
        env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
        if self.python_version:
            parts = self.python_version.split(".")
            if len(parts) < 2 or not all(p.isdigit() for p in parts):
                raise UsageError(
                    f"--python-version {self.python_version!r} is not a version",
                    hint="use MAJOR.MINOR, e.g. 3.11",
                )
            env["python_version"] = ".".join(parts[:2])
            env["python_full_version"] = ".".join((parts + ["0"])[:3])
        if self.platforms:
            env.update(_platform_markers(self.platforms[0]))
        return env

    def pip_args(self) -> list[str]:
        """pip options selecting this target (empty for the local interpreter)."""
        if not self.foreign:
            return []
        args = ["--only-binary=:all:", "--implementation", self.implementation]
        if self.python_version:
            args += ["--python-version", self.python_version]
        for plat in self.platforms:
            args += ["--platform", plat]
        if self.abi:
            args += ["--abi", self.abi]
        return args


def _platform_markers(tag: str) -> dict[str, str]:
    """``sys_platform``/``platform_system``/``platform_machine`` for a platform tag."""
    if tag.startswith(("manylinux", "musllinux", "linux")):
        machine = re.sub(r"^(manylinux|musllinux)_\d+_\d+_|^manylinux\d+_|^linux_", "", tag)
        return {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": machine}
    if tag.startswith("win"):
        machine = {"win_amd64": "AMD64", "win32": "x86", "win_arm64": "ARM64"}.get(tag, "AMD64")
        return {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": machine}
    if tag.startswith("macosx"):
        return {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": tag.rsplit("_", 1)[-1]}
    return {}
