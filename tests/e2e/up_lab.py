"""One podman site of `mlab up` for an e2e module: its site file, state directory, the CLI
through the shared runner (tests/cli_runner.py), and the start-up every such module repeats
(leftovers down, ``mlab up``, the passwords; ``mlab down --volumes`` at the end)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from cli_runner import Run, mlab, mlab_site

CLEARED = ("MLAB_SERVER", "MLAB_CODE_URL", "MLAB_CODE_HOST", "MLAB_USER", "MLAB_PASSWORD",
           "MLAB_PASSWORD_FILE")
"""Variables of the developer's shell that would point the CLI elsewhere: left out."""


def site_doc(name: str, image: str, bind: str, users: list[dict[str, Any]],
             **sections: Any) -> dict[str, Any]:
    """A site file's document: ``name`` with ``image`` (``repo:tag``, never pulled), bound to
    ``bind`` with the loopback range as office, ``users`` and the other ``sections``."""
    repo, tag = image.rsplit(":", 1)
    return {
        "apiVersion": "mlab.io/v1",
        "name": name,
        "image": {"repository": repo, "tag": tag, "pullPolicy": "Never"},
        "access": {"bindAddress": bind, "officeCIDRs": ["127.0.0.0/8"]},
        "users": users,
        **sections,
    }


class UpLab:
    """A test site: its file under ``root``, its own ``MLAB_STATE_DIR``, its passwords.

    Args:
        root: the module's temp directory.
        name: the site name.
        doc: the site document (:func:`site_doc`).
        clear: more variables to leave out of the CLI's environment.
    """

    def __init__(self, root: Path, name: str, doc: dict[str, Any],
                 clear: tuple[str, ...] = ()) -> None:
        self.root = root
        self.name = name
        self.file = root / f"{name}.yaml"
        self.file.write_text(yaml.safe_dump(doc))
        self.env = {"MLAB_STATE_DIR": str(root / "state"), "COLUMNS": "200"}
        self.drop = CLEARED + clear
        self.passwords: dict[str, str] = {}
        self.up_log = ""

    def box(self, deployment: str, container: str) -> str:
        """The podman container of ``deployment`` (``homepod-alice``, ``airlock``)."""
        return f"mlab-{self.name}-{deployment}-{container}"

    def mlab(self, *args: str, site: bool = True, env: dict[str, str] | None = None,
             check: bool = True, cwd: Path | None = None) -> Run:
        """``mlab ARGS`` (with ``--site`` unless ``site`` is False) as a process; with
        ``check`` an exit code other than 0 fails with the tails of its output."""
        every = {**self.env, **(env or {})}
        if site:
            return mlab_site(self.file, *args, env=every, drop=self.drop, cwd=cwd, check=check)
        proc = mlab(*args, env=every, drop=self.drop, cwd=cwd, timeout=600)
        if check and proc.returncode != 0:
            raise AssertionError(f"mlab {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        return proc

    def code_server(self) -> str:
        """The code service's published URL (``http://host:port``, from ``mlab status``)."""
        code = next(c for c in json.loads(self.mlab("status", "-o", "json").stdout)
                    if c["name"] == "code-service")
        endpoint = code["endpoints"][0]
        return f"http://{endpoint['host']}:{endpoint['port']}"


@contextmanager
def running(lab: UpLab) -> Iterator[UpLab]:
    """The site up (leftovers of an interrupted run removed first), its passwords read;
    torn down with its volumes at the end, also when the body fails."""
    lab.mlab("down", "--volumes", check=False)
    try:
        up = lab.mlab("up")
        lab.up_log = up.stdout + up.stderr
        rows = json.loads(lab.mlab("passwords", "-o", "json").stdout)
        lab.passwords = {row["user"]: row["password"] for row in rows}
        yield lab
    finally:
        lab.mlab("down", "--volumes", check=False)
