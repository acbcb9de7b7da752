"""An exception no command turned into an MlabError still reaches the user as one line."""

from __future__ import annotations

import subprocess
import zipfile

import pytest

from mlab.cli import main as cli_main


def _raising(exc: BaseException):
    def app(**_: object) -> None:
        raise exc
    return lambda _args: app


@pytest.mark.parametrize(("exc", "expected"), [
    (subprocess.CalledProcessError(128, ["git", "push", "origin"], stderr="fatal: no route\n"),
     "mlab: error: `git push origin` exited 128: fatal: no route (run again with --debug"),
    (subprocess.TimeoutExpired(["sftp", "host"], 30), "mlab: error: `sftp host` did not finish in 30 s"),
    (zipfile.BadZipFile("File is not a zip file"),
     "mlab: error: not a valid zip archive (a wheel must be one): File is not a zip file"),
    (FileNotFoundError(2, "No such file or directory", "/x/site.yaml"),
     "mlab: error: /x/site.yaml: No such file or directory"),
    (RuntimeError("boom"), "mlab: error: RuntimeError: boom (run again with --debug"),
])
def test_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                             exc: BaseException, expected: str) -> None:
    monkeypatch.setattr(cli_main, "build_app", _raising(exc))
    monkeypatch.delenv("MLAB_DEBUG", raising=False)
    with pytest.raises(SystemExit) as ended:
        cli_main.main(["status"])
    assert ended.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(expected), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_main, "build_app", _raising(RuntimeError("boom")))
    monkeypatch.setenv("MLAB_DEBUG", "1")
    with pytest.raises(RuntimeError):
        cli_main.main(["status"])
