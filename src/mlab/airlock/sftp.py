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
import signal
import subprocess
import sys
from pathlib import Path

from mlab.airlock import audit
from mlab.airlock.fsutil import sha256_file
from mlab.topology import SHARE_FOLDERS

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
    ``<share>/upload`` (owned by it). ``AllowUsers`` adds to the image's own list (sshd
    accumulates the keyword's values).
    """
    return (
        f"AllowUsers {user}\n"
        f"Match User {user}\n"
        f"    ChrootDirectory {share}\n"
        "    ForceCommand internal-sftp -l INFO -u 0022\n"
        "    AllowTcpForwarding no\n"
        "    X11Forwarding no\n"
        "    PermitTTY no\n"
    )


_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def add_chroot_account(
    user: str,
    password_file: Path,
    share: Path = Path("/opt/public/airlock"),
    config_dir: Path = Path("/etc/ssh/sshd_config.d"),
    quarantine: Path | None = None,
) -> list[str]:
    """Create (or update) an SFTP-only account chrooted to ``share``; return what changed.

    With ``quarantine`` the account is chrooted there instead (outside the share, so
    HomePods never see its uploads) and writes in ``<quarantine>/upload``, which
    ``mlab airlock release`` checks and releases onto the share
    (:mod:`mlab.airlock.quarantine`); the share is left as it is.

    Run as root on the Airlock. Steps: the user (no home outside the chroot, no shell),
    its password from the first line of ``password_file`` (given to ``chpasswd`` on
    stdin, never logged), the share root made root-owned and not group/world-writable
    (sshd refuses the chroot otherwise) while ``audit.log`` and the top-level folders
    go to the share root's former owner (the Airlock user), ``<share>/upload`` owned by
    the account, the
    ``sshd_config.d`` snippet (checked with ``sshd -t``, removed again if invalid) and a
    reload of the running sshd (SIGHUP to ``/run/sshd.pid``).

    Raises:
        UsageError: a bad user name, or the password file is unreadable or too short.
        MlabError: not root, or sshd rejects the configuration.
    """
    from mlab.errors import MlabError, UsageError

    if not _USER.match(user) or user == "root":
        raise UsageError(f"NAME {user!r} is not a login name", hint="lower-case letters, digits, '-', '_'")
    if os.geteuid() != 0:
        raise MlabError("adding an SFTP account needs root", hint="run it with sudo on the Airlock")
    try:
        password = Path(password_file).read_text(encoding="utf-8").splitlines()[0].rstrip("\r")
    except (OSError, IndexError):
        raise UsageError(f"--password-file {password_file}: cannot read a password from it") from None
    if len(password) < 8 or ":" in password:
        raise UsageError("the password must have at least 8 characters and no ':'")
    changes: list[str] = []
    share = Path(share)
    if subprocess.run(["id", "-u", user], capture_output=True, check=False).returncode != 0:
        subprocess.run(["useradd", "-M", "-d", "/upload", "-s", "/usr/sbin/nologin", "-U", user], check=True)
        changes.append(f"created user {user}")
    subprocess.run(["chpasswd"], input=f"{user}:{password}\n", text=True, check=True, capture_output=True)
    if quarantine is not None:
        from mlab.airlock.quarantine import prepare

        uid = int(subprocess.run(["id", "-u", user], capture_output=True, text=True,
                                 check=True).stdout)
        gid = int(subprocess.run(["id", "-g", user], capture_output=True, text=True,
                                 check=True).stdout)
        changes += prepare(Path(quarantine), uid, gid)
        return changes + _write_config(user, Path(quarantine), config_dir)
    st = share.stat()
    if st.st_uid != 0 or st.st_gid != 0 or st.st_mode & 0o022:
        os.chown(share, 0, 0)
        os.chmod(share, 0o755)
        changes.append(f"{share} is now root:root 0755 (sshd requires it for a chroot)")
    changes += _keep_user_paths(share, st.st_uid, st.st_gid)
    upload = share / "upload"
    upload.mkdir(mode=0o755, exist_ok=True)
    owner_uid = subprocess.run(["id", "-u", user], capture_output=True, text=True,
                               check=True).stdout.strip()
    owner_gid = subprocess.run(["id", "-g", user], capture_output=True, text=True,
                               check=True).stdout.strip()
    os.chown(upload, int(owner_uid), int(owner_gid))
    os.chmod(upload, 0o755)
    return changes + _write_config(user, share, config_dir)


def _write_config(user: str, chroot: Path, config_dir: Path) -> list[str]:
    """Write the account's ``sshd_config.d`` snippet, check it with ``sshd -t`` and reload
    sshd; return what changed.

    Raises:
        MlabError: sshd rejects the configuration (the snippet is removed again).
    """
    from mlab.airlock.fsutil import write_atomic
    from mlab.errors import MlabError

    changes: list[str] = []
    conf = Path(config_dir) / f"50-mlab-sftp-{user}.conf"
    write_atomic(conf, "# Written by mlab airlock sftp-account (docs/airlock.md)\n" + chroot_config(user, str(chroot)))
    check = subprocess.run(["/usr/sbin/sshd", "-t"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        conf.unlink(missing_ok=True)
        raise MlabError(f"sshd rejects the configuration: {check.stderr.strip()[-300:]}")
    changes.append(f"wrote {conf}")
    pidfile = Path("/run/sshd.pid")
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().split()[0]), signal.SIGHUP)
            changes.append("reloaded sshd")
        except (ValueError, ProcessLookupError, PermissionError):
            changes.append("sshd is not running: the account works from its next start")
    return changes




def _keep_user_paths(share: Path, uid: int, gid: int) -> list[str]:
    """Give ``audit.log`` and the top-level folders to the share root's former owner ``uid``.

    The Airlock user owned the share root (the entrypoint makes it so); once it is root's
    for the chroot, the user can no longer create anything at the top, so ``audit.log``
    and :data:`SHARE_FOLDERS` must exist and be theirs. Only these paths are re-owned,
    never their content; symbolic links are not followed. Nothing happens when the former
    owner was root.
    """
    if uid == 0:
        return []
    changed: list[str] = []
    for name in (*SHARE_FOLDERS, ".git-mirrors"):  # .git-mirrors: `mlab stage git`
        path = share / name
        if not path.exists() and not path.is_symlink():
            path.mkdir(mode=0o755)
        if path.is_dir() and not path.is_symlink() and path.stat().st_uid != uid:
            os.chown(path, uid, gid)
            changed.append(name + "/")
    log = share / audit.AUDIT_FILE
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        if os.fstat(fd).st_uid != uid:
            os.fchown(fd, uid, gid)
            changed.append(audit.AUDIT_FILE)
    finally:
        os.close(fd)
    if not changed:
        return []
    return [f"{', '.join(changed)} in {share} now owned by uid {uid} (the Airlock user keeps writing there)"]


_SUBSYSTEM = re.compile(r"^[ \t]*Subsystem[ \t]+sftp[ \t].*$", re.M | re.I)


def with_audited_subsystem(config: str) -> str:
    """``config`` (sshd_config text) with its sftp subsystem replaced by :data:`SUBSYSTEM_LINE` (pure).

    The line is replaced in place (sshd 9.2 refuses a second ``Subsystem sftp``), or
    appended before any ``Match`` block when there is none.
    """
    if _SUBSYSTEM.search(config):
        return _SUBSYSTEM.sub(SUBSYSTEM_LINE, config, count=1)
    match = re.search(r"^[ \t]*Match[ \t]", config, re.M | re.I)
    if match:
        return config[: match.start()] + SUBSYSTEM_LINE + "\n" + config[match.start():]
    return config.rstrip("\n") + "\n" + SUBSYSTEM_LINE + "\n"


def enable_audit(sshd_config: Path = Path("/etc/ssh/sshd_config")) -> bool:
    """Make sshd use the audited subsystem; True when the file changed (then reload sshd).

    Written atomically and checked with ``sshd -t``; the old file is restored if sshd
    rejects the new one.

    Raises:
        MlabError: not root, or sshd rejects the configuration.
    """
    from mlab.airlock.fsutil import write_atomic
    from mlab.errors import MlabError

    if os.geteuid() != 0:
        raise MlabError("changing sshd's configuration needs root", hint="run it with sudo on the Airlock")
    old = sshd_config.read_text(encoding="utf-8")
    new = with_audited_subsystem(old)
    if new == old:
        return False
    write_atomic(sshd_config, new)
    check = subprocess.run(["/usr/sbin/sshd", "-t", "-f", str(sshd_config)], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        write_atomic(sshd_config, old)
        raise MlabError(f"sshd rejects the audited subsystem: {check.stderr.strip()[-300:]}")
    return True
