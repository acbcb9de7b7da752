"""The one way the tests run ``mlab``: :func:`mlab`.

As a real process (``python -m mlab.cli.main``, the default), or in this process through
``main()`` when given pytest's ``capsys`` (faster; the exit code is the one ``SystemExit``
carries). Either way the result is a :class:`Run`, which reads like a finished process
(``.returncode``, ``.stdout``, ``.stderr``) and unpacks as ``code, out, err``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple


class Run(NamedTuple):
    """What one ``mlab`` command did."""

    returncode: int
    stdout: str
    stderr: str


def mlab(*args: str, capsys: Any = None, env: Mapping[str, str] | None = None,
         drop: tuple[str, ...] = (), cwd: Path | None = None, input: str | None = None,
         timeout: float = 300, check: bool = False) -> Run:
    """Run ``mlab ARGS``.

    Args:
        args: the command line after ``mlab``.
        capsys: pytest's ``capsys``: run in this process and take its captured output
            (``env``, ``cwd`` and ``input`` are then not allowed: use ``monkeypatch``).
        env: variables added to (or replacing) this process's environment.
        drop: prefixes of inherited variables to leave out first (``("MLAB_",)``: a
            user's shell that has only the MLab settings ``env`` gives).
        cwd: the working directory of the process.
        input: the process's stdin (default: none, so nothing waits for a terminal).
        timeout: seconds before the process is killed (``subprocess.TimeoutExpired``).
        check: raise ``AssertionError`` with stderr when the exit code is not 0.

    Returns:
        The exit code and the captured stdout and stderr.
    """
    if capsys is not None:
        if env is not None or cwd is not None or input is not None or drop:
            raise TypeError("in-process mlab() takes no env, cwd or input: use monkeypatch")
        from mlab.cli.main import main

        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        result = Run(code, out, err)
    else:
        base = {k: v for k, v in os.environ.items() if not (drop and k.startswith(drop))}
        proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", *args],
                              env={**base, **(env or {})}, cwd=cwd, capture_output=True,
                              text=True, timeout=timeout, check=False, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL)
        result = Run(proc.returncode, proc.stdout, proc.stderr)
    if check and result.returncode != 0:
        raise AssertionError(f"mlab {' '.join(args)}: exit {result.returncode}\n{result.stderr}")
    return result


def mlab_site(site_file: Path, *args: str, env: Mapping[str, str] | None = None,
              drop: tuple[str, ...] = (), cwd: Path | None = None, timeout: float = 600,
              check: bool = True) -> Run:
    """``mlab ARGS --site SITE_FILE`` as a process (:func:`mlab`), the way the e2e modules
    drive their own site; with ``check`` an exit code other than 0 fails with the tails of
    stdout and stderr."""
    proc = mlab(*args, "--site", str(site_file), env=env, drop=drop, cwd=cwd, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"mlab {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc
