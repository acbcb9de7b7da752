"""The command table in mlab.cli.main matches what each command-group module registers."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest
import typer

from mlab.cli.main import GROUPS, _modules_for


def _registered(module_name: str) -> set[str]:
    app = typer.Typer()
    importlib.import_module(module_name).register(app)
    names = {c.name for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups}
    return names


@pytest.mark.parametrize("module", sorted(GROUPS))
def test_table_lists_what_the_module_registers(module: str) -> None:
    assert _registered(module) == set(GROUPS[module])


def test_each_command_in_one_module() -> None:
    names = [n for commands in GROUPS.values() for n in commands]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["render", "-s", "x"], ["mlab.cli.site_cmd"]),
        (["--debug", "stage", "pip", "x"], ["mlab.cli.stage_cmd"]),
        (["--help"], list(GROUPS)),
        ([], list(GROUPS)),
        (["no-such-command"], list(GROUPS)),
    ],
    ids=["command", "after-root-option", "help", "empty", "unknown"],
)
def test_modules_for(argv: list[str], expected: list[str]) -> None:
    assert _modules_for(argv) == expected


def test_render_does_not_import_other_groups(tmp_path) -> None:
    code = (
        "import sys\nfrom mlab.cli import main\n"
        "try:\n    main.main(['render', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith('mlab.cli.')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == (
        "['mlab.cli.main', 'mlab.cli.options', 'mlab.cli.site_cmd', 'mlab.cli.workers']"
    )  # options: shared, workers: render's worker processes; neither is a group


def test_top_level_help_lists_every_command() -> None:
    proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", "--help"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    for commands in GROUPS.values():
        for name in commands:
            assert name in proc.stdout
