"""The share layout as shell assignments, for the image's entrypoint to ``eval``.

The entrypoint (``rootfs/usr/local/sbin/mlab-entrypoint``) is a shell script; it takes the
share's folders and the pip index URL from here so that :mod:`mlab.topology` states them
once (``python -m mlab.image.layout_env``).
"""

from __future__ import annotations

import shlex
import sys

from mlab.topology import PIP_INDEX_URL, SHARE_FOLDERS, SHARE_PATH


def shell_assignments() -> str:
    """``share=...``, ``share_folders=...`` and ``pip_index_url=...`` lines, shell-quoted (pure).

    Returns:
        Three ``name=value`` lines, e.g. ``pip_index_url=file:///opt/public/airlock/pip-index/simple``.
    """
    values = {"share": SHARE_PATH, "share_folders": " ".join(SHARE_FOLDERS), "pip_index_url": PIP_INDEX_URL}
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


if __name__ == "__main__":
    sys.stdout.write(shell_assignments())
