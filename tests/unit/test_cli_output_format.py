"""The output-format rule (``-o``/``--output``) is stated once: ``cli.options.output_format``.

Every command that prints a table (or text) and JSON refuses another format with the same
line and exit code 2.
"""

from __future__ import annotations

import pytest
from cli_runner import mlab

from mlab.cli.options import output_format
from mlab.errors import UsageError


def test_output_format_accepts_the_choices_and_names_them_otherwise() -> None:
    assert output_format("json") == "json"
    assert output_format("text", ("text", "json")) == "text"
    with pytest.raises(UsageError) as err:
        output_format("yaml")
    assert str(err.value) == "--output 'yaml': choose table or json"
    with pytest.raises(UsageError) as err:
        output_format("table", ("text", "json"), "--log-format")
    assert str(err.value) == "--log-format 'table': choose text or json"


@pytest.mark.parametrize("argv", [
    ["status", "-o", "yaml"],
    ["passwords", "-o", "yaml"],
    ["node", "status", "-o", "yaml"],
    ["airlock", "log", "-o", "yaml", "--share", "/nonexistent"],
    ["cull", "-o", "yaml"],
])
def test_commands_refuse_an_unknown_format_in_one_line(argv: list[str], capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, err = mlab(*argv, capsys=capsys)
    assert code == 2, (code, out, err)
    assert "--output 'yaml': choose table or json" in err
    assert "Traceback" not in err
