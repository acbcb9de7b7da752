"""Build the HomePod image on this machine without a registry, and reuse it when unchanged.

Two stages, so editing MLab's Python code does not redo the minute-long Debian bootstrap:

1. base (``localhost/mlab/homepod-base:<recipe hash>``): ``mmdebstrap`` of Debian bookworm
   with ``provision.sh`` as a customize hook (packages, configuration, a venv with MLab's
   dependencies), then ``podman import`` with the entrypoint, environment and ports;
2. app (``localhost/mlab/homepod:<app hash>``, also tagged ``:latest``): a thin
   ``podman build`` layer that pip-installs the wheel of the running MLab source.

Invariants: an image tag names the hash of what made it, so an existing tag is reused as
is; nothing half-built gets a tag (the rootfs tarball is written in a temporary directory
under the cache and imported only after mmdebstrap succeeded); one build at a time per
cache directory (a file lock), so parallel test sessions share the result.
"""

from __future__ import annotations

import datetime
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock, Timeout

from mlab.errors import DeployError, TemporaryError, ToolMissingError, UsageError
from mlab.image import recipe
from mlab.podman.runner import podman

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
"""Called with a short description of the current step (for a progress display)."""


def cache_dir() -> Path:
    """Where builds happen: ``$MLAB_CACHE_DIR/image`` or ``~/.cache/mlab/image``."""
    root = os.environ.get("MLAB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mlab")
    return Path(root) / "image"


def image_exists(ref: str) -> bool:
    """True when podman has an image named ``ref``."""
    return podman(["image", "exists", ref], check=False).returncode == 0


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def refresh_tag(base_hash: str, when: datetime.datetime) -> str:
    """The dated tag of a refreshed base (pure): ``<16 hex>-r<YYYYMMDDHHMM>`` (UTC)."""
    return f"{base_hash[:16]}-r{when.astimezone(datetime.timezone.utc):%Y%m%d%H%M}"


def refreshed_label(ref: str) -> str:
    """The ``mlab.refreshed`` label of an image (ISO 8601 UTC), or '' when it has none."""
    proc = podman(["image", "inspect", "--format",
                   '{{index .Labels "mlab.refreshed"}}', ref], check=False)
    value = proc.stdout.strip() if proc.returncode == 0 else ""
    return "" if value in ("<no value>", "") else value


SCRATCH_TMPFS = Path("/dev/shm")
SCRATCH_NEEDS = 4 * 2**30
"""Bytes of free tmpfs space and of available memory the in-memory build needs: mmdebstrap's
tree (about 1.5 GB, with its package cache), with room to spare."""


def _mem_available() -> int:
    """MemAvailable of /proc/meminfo in bytes (0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def scratch_dir(cache: Path) -> Path:
    """Where mmdebstrap builds the root filesystem (its ``TMPDIR``).

    ``$MLAB_IMAGE_SCRATCH`` when set; else ``/dev/shm`` when it is a writable tmpfs with
    :data:`SCRATCH_NEEDS` bytes free and as much memory available; else ``cache``.
    Measured on the 2-core machine (docs/image.md, issue 18): in memory, dpkg's unpacking
    does no disk writes or fsyncs and removing the 1.5 GB tree takes 1 s instead of 24 s.
    """
    forced = os.environ.get("MLAB_IMAGE_SCRATCH")
    if forced:
        Path(forced).mkdir(parents=True, exist_ok=True)
        return Path(forced)
    try:
        fs = os.statvfs(SCRATCH_TMPFS)
        tmpfs = any(line.split()[1:3] == [str(SCRATCH_TMPFS), "tmpfs"]
                    for line in Path("/proc/mounts").read_text().splitlines())
    except OSError:
        return cache
    free = fs.f_bavail * fs.f_frsize
    if (tmpfs and os.access(SCRATCH_TMPFS, os.W_OK) and free >= SCRATCH_NEEDS
            and _mem_available() >= SCRATCH_NEEDS):
        return SCRATCH_TMPFS
    return cache


DPKG_RULES_FILE = "/etc/dpkg/dpkg.cfg.d/mlab-path-rules"
"""Where the base's dpkg path rules live in the image (dpkg reads every file there)."""


def mmdebstrap_argv(ctx: Path, chroot_env: list[str], output: Path) -> list[str]:
    """The mmdebstrap command of the base (pure): Debian with packages.txt, provision.sh
    as a customize hook, a tarball at ``output``.

    dpkg runs with ``force-unsafe-io`` (no fsync per unpacked file: a failed build is thrown
    away anyway; the option is removed from the image's dpkg configuration at the end) and
    :data:`mlab.image.recipe.DPKG_PATH_RULES`, written to :data:`DPKG_RULES_FILE` by an
    extract hook: given as ``--dpkgopt``, mmdebstrap would pipe each essential package
    through its Python tar filter (``mmtarfilter``), measured 11 s -> 47 s for that phase;
    so the essential packages' few documentation files stay.

    Args:
        ctx: the directory copied to /var/tmp/mlab-image (provision.sh, packages.txt,
            rootfs/, requirements.txt).
        chroot_env: ``NAME=value`` strings provision.sh runs with.
        output: the tarball to write.
    """
    cfg = '"$1/etc/dpkg/dpkg.cfg.d/99mmdebstrap"'
    return [
        "mmdebstrap", "--variant=apt", "--verbose",
        "--include=" + ",".join(recipe.packages()),
        "--dpkgopt=force-unsafe-io",
        "--extract-hook=printf '%s\\n' " + " ".join(shlex.quote(r) for r in recipe.DPKG_PATH_RULES)
        + f' > "$1{DPKG_RULES_FILE}"',
        f"--customize-hook=copy-in {ctx} /var/tmp",
        '--customize-hook=chroot "$1" env -i ' + " ".join(shlex.quote(e) for e in chroot_env)
        + " bash /var/tmp/mlab-image/provision.sh",
        '--customize-hook=rm -rf "$1/var/tmp/mlab-image"',
        f"--customize-hook=sed -i '/^force-unsafe-io$/d' {cfg}",
        recipe.SUITE, str(output), *recipe.MIRRORS,
    ]


def prepare_context(tmp: Path) -> tuple[Path, list[str]]:
    """Write what provision.sh needs into ``tmp/mlab-image``; return it and the chroot's
    environment (``NAME=value`` strings: requirements, PATH, the host CA bundle for pip,
    the proxy and index variables of this process).
    """
    ctx = Path(tmp) / "mlab-image"
    src = recipe.image_dir()
    ctx.mkdir()
    shutil.copy2(src / "provision.sh", ctx / "provision.sh")
    shutil.copy2(src / "packages.txt", ctx / "packages.txt")
    shutil.copytree(src / "rootfs", ctx / "rootfs", ignore=shutil.ignore_patterns("__pycache__"))
    (ctx / "requirements.txt").write_text("".join(f"{d}\n" for d in recipe.dependencies()))
    # pip in the chroot trusts the host's CA bundle (a site's TLS proxy); the bundle is
    # used for this build only and removed with the rest of /var/tmp/mlab-image.
    ca = Path(os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
              or "/etc/ssl/certs/ca-certificates.crt")
    chroot_env = ["MLAB_REQUIREMENTS=/var/tmp/mlab-image/requirements.txt",
                  "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                  "HOME=/root"]
    if ca.is_file():
        shutil.copy2(ca, ctx / "host-ca.crt")
        chroot_env.append("PIP_CERT=/var/tmp/mlab-image/host-ca.crt")
    for var in ("http_proxy", "https_proxy", "no_proxy", "PIP_INDEX_URL", "PIP_DEFAULT_TIMEOUT"):
        if os.environ.get(var):
            chroot_env.append(f"{var}={os.environ[var]}")
    return ctx, chroot_env


def build_base(base_hash: str, *, progress: Progress | None = None,
               refresh: bool = False) -> str:
    """Build (or reuse) the base image for ``base_hash``; return its reference.

    Args:
        base_hash: the recipe hash (:func:`mlab.image.recipe.base_hash`).
        progress: called with each step's description.
        refresh: bootstrap again even when an image of this recipe exists, so it gets
            Debian's current packages and security updates (the mirrors include
            bookworm-security): the new image is tagged :func:`refresh_tag` and labelled
            ``mlab.refreshed=<UTC time>``, then the recipe's tag moves to it (issue 17: an
            unchanged recipe otherwise never picks up an update).

    Raises:
        ToolMissingError: mmdebstrap is not installed.
        DeployError: mmdebstrap or podman import failed (names the log file).
    """
    ref = f"{recipe.BASE_REPOSITORY}:{base_hash[:16]}"
    if image_exists(ref) and not refresh:
        return ref
    now = datetime.datetime.now(datetime.timezone.utc)
    target = f"{recipe.BASE_REPOSITORY}:{refresh_tag(base_hash, now)}" if refresh else ref
    if not shutil.which("mmdebstrap"):
        raise ToolMissingError("mmdebstrap is not installed", hint="apt-get install mmdebstrap")
    say = progress or (lambda _msg: None)
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="base-", dir=cache) as tmp:
        ctx, chroot_env = prepare_context(Path(tmp))
        scratch = scratch_dir(cache)
        # The tarball goes to disk: `podman import` read it 13 s faster from there than from
        # the tmpfs (docs/image.md); only mmdebstrap's tree is in memory.
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=cache) as work:
            tar = Path(work) / "rootfs.tar"
            logfile = cache / "mmdebstrap.log"
            argv = mmdebstrap_argv(ctx, chroot_env, tar)
            say(f"bootstrapping Debian (mmdebstrap, in {scratch}): starting (a few minutes)")
            start = time.monotonic()
            with open(logfile, "w") as out:
                # mmdebstrap's own temporary tree (bind mounts of /dev, /sys, /proc while it
                # runs) stays outside ``work``: only mmdebstrap may remove it, after it
                # unmounted them; a recursive delete of it would follow the mounts.
                proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, "TMPDIR": str(scratch)})
                while proc.poll() is None:
                    time.sleep(1)
                    last = _tail(logfile, 1)
                    if last:
                        say(f"bootstrapping Debian (mmdebstrap, {time.monotonic() - start:.0f} s):"
                            f" {last[:70]}")
            if proc.returncode != 0:
                raise DeployError(
                    f"mmdebstrap failed (exit {proc.returncode}): {_tail(logfile)}",
                    hint=f"full log: {logfile}",
                )
            log.info("mmdebstrap took %.0f s", time.monotonic() - start)
            say("importing the root filesystem (podman import)")
            args = ["import"]
            changes = recipe.import_changes(base_hash)
            if refresh:
                changes.append(f"LABEL mlab.refreshed={now.isoformat(timespec='seconds')}")
            for change in changes:
                args += ["--change", change]
            podman([*args, str(tar), target], timeout=1200)
    if refresh:
        podman(["tag", target, ref])  # the recipe's tag now names the refreshed base
    return ref


def build_app(base_ref: str, base_hash: str, *, progress: Progress | None = None) -> str:
    """Build (or reuse) the thin layer with the running MLab source; return its reference.

    Raises:
        DeployError: podman build failed.
    """
    wheel = recipe.make_wheel()
    # A refreshed base is another image under the same recipe hash: its time is part of
    # the app's name, so the app layer is rebuilt on it and not reused from the old base.
    refreshed = refreshed_label(base_ref)
    app = recipe.app_hash(f"{base_hash}+{refreshed}" if refreshed else base_hash, wheel)
    ref = f"{recipe.REPOSITORY}:{app[:16]}"
    if image_exists(ref):
        return ref
    (progress or (lambda _m: None))("installing MLab into the image (podman build)")
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="app-", dir=cache) as tmp:
        (Path(tmp) / wheel.name).write_bytes(wheel.data)
        (Path(tmp) / "Containerfile").write_text(
            recipe.app_containerfile(base_ref, wheel, app, base_hash))
        podman(["build", "--network=none", "--pull=never", "-q", "-f",
                str(Path(tmp) / "Containerfile"), "-t", ref, tmp], timeout=1200)
    return ref


PRUNE_GRACE_S = 24 * 3600
"""Seconds an image of another recipe is kept after it was built (see prune_old_recipes)."""


def prune_old_recipes(base_hash: str) -> list[str]:
    """Remove the hash-tagged images (app and base) of other recipes; return the removed tags.

    Only ``<repository>:<16 hex>`` tags are removed, never ``latest`` or a ``--tag``; an
    image that a container uses stays (podman refuses, and the error is ignored); an image
    created less than ``PRUNE_GRACE_S`` seconds ago stays too, because another checkout on
    the same machine (a second worktree, a CI clone) may have just built it and be about
    to start it. Called after a new base was built: each base is about 1.4 GB.
    """
    import json
    import re

    images = json.loads(podman(["images", "--filter", "label=mlab.recipe-hash",
                                "--format", "json"]).stdout or "[]")
    app, base = [], []
    for img in images:
        if (img.get("Labels") or {}).get("mlab.recipe-hash") == base_hash:
            continue
        if time.time() - float(img.get("Created") or 0) < PRUNE_GRACE_S:
            continue
        for name in img.get("Names") or []:
            repo, _, tag = name.rpartition(":")
            if not re.fullmatch(r"[0-9a-f]{16}", tag):
                continue
            if repo == recipe.REPOSITORY:
                app.append(name)
            elif repo == recipe.BASE_REPOSITORY:
                base.append(name)
    removed = []
    for name in app + base:
        if podman(["rmi", name], check=False).returncode == 0:
            removed.append(name)
    return removed


def normalize_tag(tag: str) -> str:
    """An extra tag as a full reference: ``T`` -> ``localhost/mlab/homepod:T``; a reference
    with a repository (``registry/name:T``) is kept.

    Raises:
        UsageError: the tag is not a valid OCI tag (letters, digits, ``_.-``, at most 128).
    """
    import re

    if "/" in tag or ":" in tag:
        return tag
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise UsageError(f"--tag {tag!r} is not an image tag (letters, digits, '_', '.', '-')")
    return f"{recipe.REPOSITORY}:{tag}"


def _acquire_showing_progress(lock: FileLock, logfile: Path, say: Progress,
                              timeout: float = 3600) -> None:
    """Take the build lock; while another process builds (``scripts/setup.sh`` starts the
    first build in the background), show the last line of its mmdebstrap log.

    Raises:
        TemporaryError: the other build held the lock for ``timeout`` seconds.
    """
    start = time.monotonic()
    while True:
        try:
            lock.acquire(timeout=1)
            return
        except Timeout:
            waited = time.monotonic() - start
            if waited >= timeout:
                raise TemporaryError(
                    f"another image build held {lock.lock_file} for {timeout:.0f} s",
                    hint="wait for it to finish (or end it), then try again") from None
            last = _tail(logfile, 1)
            say(f"waiting for another image build ({waited:.0f} s)"
                + (f": {last[:60]}" if last else f" ({lock.lock_file})"))


def ensure_image(*, tag: str | None = None, progress: Progress | None = None,
                 refresh: bool = False) -> str:
    """Return the reference of the HomePod image for the current recipe and source,
    building what is missing; also tag it ``localhost/mlab/homepod:latest`` (and ``tag``).

    Safe to call from several processes at once: the build holds a lock under the cache.

    Args:
        tag: an extra tag (``T`` or a full reference). None: only the hash and latest.
        progress: called with the current step's description.
        refresh: rebuild the base even when the recipe is unchanged (Debian's current
            security updates; :func:`build_base`).

    Returns:
        ``localhost/mlab/homepod:<16 hex>`` (the hash of recipe, refresh time and source).

    Raises:
        ToolMissingError: podman or mmdebstrap is missing.
        DeployError: a build step failed.
        UsageError: ``tag`` is malformed.
    """
    extra = normalize_tag(tag) if tag else None
    say = progress or (lambda _m: None)
    say("hashing the recipe")
    base_hash = recipe.base_hash()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(cache / "build.lock"))
    _acquire_showing_progress(lock, cache / "mmdebstrap.log", say)
    try:
        new_base = not image_exists(f"{recipe.BASE_REPOSITORY}:{base_hash[:16]}")
        base_ref = build_base(base_hash, progress=progress, refresh=refresh)
        ref = build_app(base_ref, base_hash, progress=progress)
        for t in filter(None, [f"{recipe.REPOSITORY}:latest", extra]):
            podman(["tag", ref, t])
        if new_base:
            say("removing images of older recipes")
            log.info("removed %s", prune_old_recipes(base_hash))
    finally:
        lock.release()
    say("done")
    return ref
