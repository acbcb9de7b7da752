"""Options that mean one thing in every command.

- ``--site``/``-s PATH``: the site file. Resolved the same way everywhere: the flag, else
  ``$MLAB_SITE``, else the command's default (named in its help; some commands have none
  and require it). Relative paths are relative to the working directory.
- ``-o``/``--output FORMAT``: an output format (``table``, ``json``, ``text``) and nothing else,
  checked by :func:`output_format` (one message for every command).
- ``--out-dir DIR`` and ``--out-file PATH``: where a command writes files. Until the next
  release the old spelling ``-o PATH`` still works in those commands, with a one-line
  deprecation warning on stderr (:func:`out_path`).
"""

from __future__ import annotations

from typing import Any, TypeVar

import typer

from mlab.errors import UsageError

SITE_ENV = "MLAB_SITE"

T = TypeVar("T")


def site_option(default: Any, help: str) -> Any:
    """The ``--site``/``-s`` option with ``default`` (``...``: required) and ``help``."""
    return typer.Option(default, "--site", "-s", envvar=SITE_ENV, show_envvar=True, help=help)


def old_output_path_option() -> Any:
    """The hidden ``-o``/``--output PATH`` of a command whose path option is now
    ``--out-dir`` or ``--out-file`` (kept for one release; see :func:`out_path`)."""
    return typer.Option(None, "-o", "--output", hidden=True,
                        help="Deprecated spelling of --out-dir / --out-file.")


def out_path(new: T | None, old: T | None, flag: str) -> T | None:
    """The path given by ``flag`` (``new``) or by the deprecated ``-o`` (``old``).

    Args:
        new: the value of ``--out-dir``/``--out-file``, None when not given.
        old: the value of the hidden ``-o``/``--output``, None when not given; when given,
            one warning line goes to stderr.
        flag: the new option's name, for the messages.

    Returns:
        The path to use, or None when neither was given.

    Raises:
        UsageError: both were given.
    """
    if old is None:
        return new
    if new is not None:
        raise UsageError(f"-o and {flag} both given", hint=f"give only {flag}")
    typer.echo(f"mlab: warning: -o/--output PATH is deprecated (-o is the output format); "
               f"use {flag}", err=True)
    return old


def output_format(value: str, choices: tuple[str, ...] = ("table", "json"),
                  flag: str = "--output") -> str:
    """``value`` of an output-format option, checked against ``choices``.

    Args:
        value: what the user gave (``-o``/``--output``, or ``flag``).
        choices: the formats the command prints, e.g. ``("table", "json")``.
        flag: the option's name, for the message.

    Returns:
        ``value``.

    Raises:
        UsageError: ``value`` is not one of ``choices`` ("--output 'yaml': choose table or
            json").
    """
    if value not in choices:
        raise UsageError(f"{flag} {value!r}: choose {' or '.join(choices)}")
    return value
