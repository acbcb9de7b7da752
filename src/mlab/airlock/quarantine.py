"""Ingress quarantine (issue 17): files uploaded from outside wait where HomePods cannot see
them until a policy check releases them onto the share.

Which paths are quarantined: uploads of an SFTP-only account made with
``mlab airlock sftp-account NAME --quarantine DIR`` (the door for files sent from an office
PC). That account is chrooted to ``DIR`` (root-owned, outside the share; HomePods mount only
the share) and writes in ``DIR/upload``. What the Airlock's own shell user stages on the
Airlock (``mlab stage``, the seed's ``pip download`` and ``apt-get download``, its own SFTP
session) is that user's doing and goes to the share directly, audited as before.

``mlab airlock release`` (root on the Airlock) checks each file of ``DIR/upload`` that has
not changed for ``settle`` seconds (so a file still arriving is left alone):

- a regular file, not a link (links and other types are refused);
- at most ``Policy.max_bytes``;
- not an executable by its first bytes (ELF, PE ``MZ``, Mach-O, ``#!`` scripts) unless
  ``Policy.allow_executables``.

A released file is copied to ``<share>/upload/<same path>`` (mode 0644, written under a
temporary name and renamed) and removed from quarantine; a refused one is moved to
``DIR/refused/`` (outside the chroot's upload folder). Both are audit records in the share's
``audit.log`` with size and SHA-256: ``ingress-release`` and ``ingress-refused`` (the reason
in the item). A name already on the share is not overwritten: the file stays in quarantine.

No malware scan: Debian's clamav installs, but its signatures come only from
database.clamav.net (freshclam), which this platform's Airlock may not reach and which
the build machines cannot reach; a scanner without signatures finds nothing.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from mlab.airlock import audit

DEFAULT_DIR = Path("/var/lib/mlab/quarantine")
"""Where the quarantined account is chrooted by default (in the Airlock, not on the share)."""
UPLOAD = "upload"
REFUSED = "refused"
CHUNK = 1024 * 1024

EXECUTABLE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows (PE) executable"),
    (b"\xcf\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xce\xfa\xed\xfe", "a Mach-O executable"),
    (b"\xca\xfe\xba\xbe", "a Mach-O universal executable"),
    (b"#!", "a script (#!)"),
)
"""First bytes of executables (ELF, PE/COFF, Mach-O headers; the ``#!`` interpreter line)."""


@dataclass(frozen=True)
class Policy:
    """What may leave quarantine.

    Attributes:
        max_bytes: largest file released, in bytes.
        allow_executables: release files that start like an executable.
    """

    max_bytes: int = 20 * 1024**3
    allow_executables: bool = False


@dataclass(frozen=True)
class Outcome:
    """What happened to one file: ``action`` is released, refused or kept."""

    path: str
    action: str
    detail: str


def check(head: bytes, size: int, policy: Policy) -> str | None:
    """Why a file with these first bytes and ``size`` bytes is refused, or None (pure)."""
    if size > policy.max_bytes:
        return f"{size} bytes is over the limit of {policy.max_bytes}"
    if not policy.allow_executables:
        for magic, kind in EXECUTABLE_MAGIC:
            if head.startswith(magic):
                return f"{kind} (executables are not released)"
    return None


def _copy_hashing(src: int, dest: Path) -> tuple[int, str]:
    """Copy the open file ``src`` to ``dest`` (mode 0644) while hashing; (bytes, sha256)."""
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(os.dup(src), "rb") as fin, open(dest, "wb") as fout:
        fin.seek(0)
        while chunk := fin.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    os.chmod(dest, 0o644)
    return size, digest.hexdigest()


def release(quarantine: Path, share: Path, policy: Policy | None = None,
            settle: float = 10.0, now: float | None = None) -> list[Outcome]:
    """Check every settled file of ``<quarantine>/upload`` and release or refuse it.

    Args:
        quarantine: the quarantine directory (the account's chroot).
        share: the Airlock share (``/opt/public/airlock``).
        policy: the checks; None: :class:`Policy` defaults.
        settle: seconds a file must be unchanged before it is looked at.
        now: the current time (``time.time()`` when None).

    Returns:
        One :class:`Outcome` per file looked at, in path order.
    """
    policy = policy or Policy()
    now = time.time() if now is None else now
    inbox = quarantine / UPLOAD
    outcomes: list[Outcome] = []
    if not inbox.is_dir():
        return outcomes
    for root, dirs, files in os.walk(inbox, followlinks=False):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if (Path(root) / d).is_symlink()]):
            path = Path(root) / name
            rel = str(path.relative_to(inbox))
            outcomes.append(_one(path, rel, quarantine, share, policy, settle, now))
    return outcomes


def _refuse(path: Path, rel: str, quarantine: Path, share: Path, why: str, size: int | None,
            digest: str | None) -> Outcome:
    target = quarantine / REFUSED / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)
    audit.record(share, "ingress-refused", f"{UPLOAD}/{rel} ({why})", size=size, sha256=digest)
    return Outcome(rel, "refused", why)


def _one(path: Path, rel: str, quarantine: Path, share: Path, policy: Policy, settle: float,
         now: float) -> Outcome:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return _refuse(path, rel, quarantine, share, "not a regular file", None, None)
    if now - st.st_mtime < settle:
        return Outcome(rel, "kept", f"changed less than {settle:g} s ago (still arriving?)")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        head = os.pread(fd, 8, 0)
        size = os.fstat(fd).st_size
        why = check(head, size, policy)
        if why is not None:
            digest = hashlib.sha256()
            with os.fdopen(os.dup(fd), "rb") as fh:
                while chunk := fh.read(CHUNK):
                    digest.update(chunk)
            return _refuse(path, rel, quarantine, share, why, size, digest.hexdigest())
        dest = share / UPLOAD / rel
        if dest.exists() or dest.is_symlink():
            return Outcome(rel, "kept", f"{dest} exists already; rename the upload")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.releasing")
        size, digest_hex = _copy_hashing(fd, tmp)
        os.replace(tmp, dest)
    finally:
        os.close(fd)
    path.unlink()
    audit.record(share, "ingress-release", f"{UPLOAD}/{rel}", size=size, sha256=digest_hex)
    return Outcome(rel, "released", f"{size} bytes, sha256 {digest_hex}")


def prepare(quarantine: Path, uid: int, gid: int) -> list[str]:
    """Make ``quarantine`` a chroot for an account (root:root 0755, every parent root-owned
    as sshd requires) with ``upload/`` owned by ``uid:gid``; return what changed."""
    changes = []
    if not quarantine.is_dir():
        quarantine.mkdir(parents=True, mode=0o755)
        changes.append(f"created {quarantine}")
    os.chown(quarantine, 0, 0)
    os.chmod(quarantine, 0o755)
    inbox = quarantine / UPLOAD
    inbox.mkdir(mode=0o755, exist_ok=True)
    os.chown(inbox, uid, gid)
    (quarantine / REFUSED).mkdir(mode=0o700, exist_ok=True)
    shutil.chown(quarantine / REFUSED, "root", "root")
    return changes
