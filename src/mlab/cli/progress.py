"""Progress of long commands on standard error: one line per step with its elapsed time.

The engines report progress as short messages through a ``say(message)`` callback
(``"image: bootstrapping Debian (mmdebstrap)"``, ``"image: mmdebstrap: I: extracting..."``,
``"volume mlab-x-home-alice"``, ``"waiting for 3 port(s)"``). :class:`Steps` turns them into
a rich progress display: a message whose *step* (the words before the first ``:`` after an
optional ``image:`` prefix, or the first two words) differs from the current one finishes the
current line (a tick and its seconds) and opens a new one with a spinner and a clock; a
message of the same step only updates the current line's text (mmdebstrap's log lines).

Quiet (prints nothing) when standard error is not a terminal or with ``-q``: data goes to
stdout, and logs of scripted runs stay clean. Results and errors are printed by the commands
themselves, never through this class.
"""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

QUIET_HELP = ("Do not show progress on standard error (it is also off when stderr is not a "
              "terminal).")


def step_of(message: str) -> str:
    """The step a progress message belongs to (pure): ``"image: mmdebstrap: I: x"`` ->
    ``"image: mmdebstrap"``; ``"volume mlab-t-home"`` -> ``"volume mlab-t-home"``;
    ``"waiting for 3 port(s)"`` -> ``"waiting for"``."""
    prefix = ""
    rest = message
    if rest.startswith("image: "):
        prefix, rest = "image: ", rest[len("image: "):]
    if ":" in rest:
        return prefix + rest.split(":", 1)[0]
    return prefix + " ".join(rest.split()[:2])


def progress_console(quiet: bool = False) -> Console:
    """The console progress is drawn on: stderr, quiet unless it is a terminal."""
    return Console(stderr=True, quiet=quiet or not sys.stderr.isatty())


class Steps:
    """A context manager giving a ``say(message)`` callback that draws steps on ``console``.

    Args:
        title: prefix of every line (``mlab up``).
        console: where to draw (:func:`progress_console`); a quiet console draws nothing.
    """

    def __init__(self, title: str, console: Console) -> None:
        self.title = title
        self.console = console
        self._progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}", markup=False),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=console.quiet,
        )
        self._task: TaskID | None = None
        self._step = ""
        self.steps: list[str] = []
        """The steps seen, in order (for tests and summaries)."""

    def __enter__(self) -> Steps:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._finish()
        self._progress.stop()

    def _finish(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[self._task]
            self._progress.update(self._task, total=1, completed=1,
                                  description=task.description)
            self._progress.stop_task(self._task)
            self._task = None

    def say(self, message: str) -> None:
        """Report ``message``: a new line for a new step, else update the current line."""
        step = step_of(message)
        text = f"{self.title}: {message}"
        if step == self._step and self._task is not None:
            self._progress.update(self._task, description=text[:160])
            return
        self._finish()
        self._step = step
        self.steps.append(step)
        self._task = self._progress.add_task(text[:160], total=None)

    __call__ = say
