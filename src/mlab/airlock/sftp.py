"""SFTP on the Airlock: an audited ``sftp-server`` subsystem and the sshd settings for it.

The Airlock's sshd serves the share over SFTP (Dolphin ``sftp://``, WinSCP, sshfs). To
audit uploads, sshd runs ``mlab airlock sftp-server`` as its sftp subsystem
(:data:`SUBSYSTEM_LINE`); it runs OpenSSH's own ``sftp-server`` with logging to stderr
(``-e -l INFO``) and a umask of 022 (``-u 0022``: uploads are readable by HomePod users,
who have other uids), passes the SFTP stream through untouched (the child inherits stdin
and stdout), and for every ``close "PATH" bytes read R written W`` line with W > 0 appends
an ``sftp-upload`` audit record with the file's size and SHA-256.

An SFTP-only account chrooted to the share (:func:`chroot_config`) must use sshd's
``internal-sftp`` (no programs exist inside the chroot); its uploads are logged by sshd
(``-l INFO``, syslog/journal), not in the audit log. sshd requires every component of
the chroot path to be root-owned and not group- or world-writable, so the account
writes into an ``upload`` folder inside it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from mlab.airlock import audit
from mlab.airlock.fsutil import sha256_file

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
SUBSYSTEM_LINE = "Subsystem sftp /usr/local/bin/mlab airlock sftp-server"
"""The ``sshd_config`` line that makes sshd use the audited subsystem (replaces Debian's)."""

_CLOSE = re.compile(r'close "(?P<path>.*)" bytes read (?P<read>\d+) written (?P<written>\d+)')


def parse_close(line: str) -> tuple[str, int] | None:
    """(path, bytes written) from an sftp-server ``close`` log line, else None (pure)."""
    m = _CLOSE.search(line)
    if not m:
        return None
    return m.group("path"), int(m.group("written"))


def audit_upload(share: Path, path: str, cwd: Path) -> None:
    """Append an ``sftp-upload`` record for ``path`` (relative paths are from ``cwd``)."""
    full = (cwd / path) if not os.path.isabs(path) else Path(path)
    try:
        size = full.stat().st_size
        digest = sha256_file(full)
    except OSError:  # removed or renamed before we looked: still record the upload
        size, digest = None, None
    audit.record(share, "sftp-upload", str(full), size=size, sha256=digest)


def serve(share: Path, server: str = SFTP_SERVER) -> int:
    """Run ``server`` as the SFTP subsystem and audit uploads; return its exit status."""
    argv = [server, "-e", "-l", "INFO", "-u", "0022"]
    cwd = Path.cwd()
    with subprocess.Popen(argv, stdin=sys.stdin.fileno(), stdout=sys.stdout.fileno(),
                          stderr=subprocess.PIPE, text=True, errors="replace") as proc:
        assert proc.stderr is not None
        for line in proc.stderr:
            closed = parse_close(line)
            if closed and closed[1] > 0:
                try:
                    audit_upload(Path(share), closed[0], cwd)
                except Exception as exc:  # noqa: BLE001 - never break the user's session
                    print(f"mlab sftp audit: {exc}", file=sys.stderr)
        return proc.wait()


def chroot_config(user: str, share: str = "/opt/public/airlock") -> str:
    """``sshd_config`` lines for an SFTP-only account chrooted to ``share`` (pure).

    The share root must be root-owned and not group-writable; the account writes in
    ``<share>/upload`` (owned by it).
    """
    return (
        f"Match User {user}\n"
        f"    ChrootDirectory {share}\n"
        "    ForceCommand internal-sftp -l INFO -u 0022\n"
        "    AllowTcpForwarding no\n"
        "    X11Forwarding no\n"
        "    PermitTTY no\n"
    )
