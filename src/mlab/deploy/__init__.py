"""Side effects of deploying: writing rendered files (and, in :mod:`kubernetes`, applying them).

Rendering with the stored passwords is :mod:`mlab.stored_render`.

Invariant: ``write_rendered`` either leaves the output directory with a complete, consistent
set of files or does not touch it (everything is rendered in memory first; each file is
written to a temp file and renamed; a new directory appears only complete, by rename).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlab.atomic import write_atomic
from mlab.errors import MlabError
from mlab.render import FILES, SECRETS_FILE

Content = str | Sequence[bytes | memoryview]
"""A file's text, or its UTF-8 pieces in order (:func:`mlab.render.render_encoded`)."""


def _write_file(path: Path, text: Content, mode: int) -> None:
    # Atomic (temp file and rename) but not fsync'd: every byte is derived from the site file
    # and the stored passwords, so a crash costs a re-run, and the 70 MB of a 10,000-user
    # site no longer wait for the disk (seconds under disk load; issue 18).
    write_atomic(path, text, mode, fsync=False)


def write_rendered(texts: Mapping[str, Content], out_dir: Path) -> list[Path]:
    """Write rendered files into ``out_dir``.

    Args:
        texts: file name to YAML text, or to its UTF-8 pieces in order (the four
            manifests, optionally ``secrets.yaml``, which is written with mode 0600; the
            others 0644).
        out_dir: the directory; created (atomically, by renaming a complete temp directory)
            if missing. A stale ``secrets.yaml`` is removed when ``texts`` has none.

    Returns:
        The paths written.

    Raises:
        MlabError: the directory cannot be written (nothing is left half-written).
    """
    out_dir = Path(out_dir)
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise MlabError(f"{out_dir}: exists and is not a directory", hint="choose another --out-dir")
        if not out_dir.exists():
            out_dir.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
            try:
                for name, text in texts.items():
                    _write_file(tmp / name, text, 0o600 if name == SECRETS_FILE else 0o644)
                os.chmod(tmp, 0o755)
                os.rename(tmp, out_dir)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        else:
            for name, text in texts.items():
                _write_file(out_dir / name, text, 0o600 if name == SECRETS_FILE else 0o644)
            if SECRETS_FILE not in texts:
                (out_dir / SECRETS_FILE).unlink(missing_ok=True)
    except OSError as exc:
        raise MlabError(f"{out_dir}: cannot write the rendered files: {exc.strerror}") from None
    return [out_dir / name for name in texts]


__all__ = ["FILES", "write_rendered"]
