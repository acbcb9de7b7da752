"""Project-level promises: the README's commands, CI running them, and the CLI's exit codes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from cli_runner import mlab

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block, "README.md must open with a bash block holding the two commands"
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_two_commands() -> None:
    commands = _readme_commands()
    assert len(commands) == 2
    assert "mlab up" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = _readme_commands()[1].split("&&")[-1].strip()
    setup = _readme_commands()[1].split("&&")[0].strip()
    assert setup in ci
    assert test_command in ci.splitlines(), f"{test_command!r} must be a line of .ci/run"
    assert "MLAB_REQUIRE_E2E=1" in ci


def test_cli_help_lists_command_groups() -> None:
    from mlab.cli.main import GROUPS

    proc = mlab("--help")
    assert proc.returncode == 0
    assert proc.stdout.lstrip().startswith("Usage: ") and "COMMAND [ARGS]..." in proc.stdout
    listed = {m.group(1) for m in re.finditer(r"^│ ([a-z][a-z-]*) ", proc.stdout, re.M)}
    assert listed == {c for commands in GROUPS.values() for c in commands}, proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["no-such-command"], "No such command 'no-such-command'."),
     (["--no-such-option"], "No such option: --no-such-option")],
    ids=["unknown-command", "unknown-option"],
)
def test_cli_usage_errors_exit_2(args: list[str], message: str) -> None:
    proc = mlab(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


# Every program MLab or its tests run, and where it lives when it is not on PATH. netavark and
# aardvark-dns are not dependencies of Debian's podman: a machine that had them installed by
# hand ran CI green while a fresh one fell back to CNI (issue 10).
TOOLS = ("podman", "/usr/lib/podman/netavark", "/usr/lib/podman/aardvark-dns", "runc", "nft",
         "mmdebstrap", "git", "sshfs", "xfreerdp", "Xvfb", "chromium", "ssh", "/usr/sbin/sshd",
         "apt-ftparchive", "dpkg-scanpackages", "xwd")


def _listed_packages() -> set[str]:
    text = "\n".join((ROOT / "scripts" / name).read_text(encoding="utf-8")
                     for name in ("apt-packages-image.txt", "apt-packages.txt",
                                  "apt-packages-tests.txt"))
    return {word for line in text.splitlines() for word in line.split("#", 1)[0].split()}


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_comes_from_a_package_setup_installs(tool: str) -> None:
    """CI proves the install steps: each tool is owned by a package of
    scripts/apt-packages*.txt (image, platform, tests), not by something installed by hand."""
    import shutil

    path = tool if tool.startswith("/") else shutil.which(tool)
    assert path and Path(path).exists(), f"{tool} is missing: bash scripts/setup.sh installs it"
    real = str(Path(path).resolve())
    owners = set()
    for candidate in {path, real}:
        proc = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True,
                              check=False)
        for line in proc.stdout.splitlines():
            owners |= {o.strip().split(":")[0] for o in line.split(": ", 1)[0].split(",")}
    assert owners, f"{tool} ({real}) belongs to no Debian package: installed by hand?"
    assert owners & _listed_packages(), (
        f"{tool} comes from {sorted(owners)}, none of which scripts/apt-packages*.txt lists")


def test_test_module_names_are_unique() -> None:
    """pytest imports test modules by basename (rootdir mode, no packages): two files with
    one name in different folders stop the whole run at collection."""
    tests = Path(__file__).resolve().parent
    names = [p.name for p in tests.rglob("*.py") if p.name != "conftest.py"]
    dupes = sorted({n for n in names if names.count(n) > 1})
    assert not dupes, f"test file names used twice: {dupes}"
