"""`mlab stage pip`: resolve, download and build wheels for the HomePod, then publish them.

Why not the seed's ``pip download`` + ``pip install *``: a folder holding several versions
of a project cannot be installed by globbing, sdists cannot be built offline, and pip only
evaluates environment markers for the interpreter it runs on. So:

1. pip resolves and fetches. For the local interpreter (the default: the Airlock runs the
   HomePod's image) from an index over HTTP(S), ``pip install --dry-run --report``
   resolves, the chosen wheels are downloaded in parallel and checked against pip's
   hashes (:mod:`mlab.airlock.pipfetch`) and sdists are downloaded by pip pinned to the
   same URL; from local folders only (``--no-index``), ``pip download`` fetches the
   closure (pip's resolve with the report's hashes costs more CPU than its whole
   download there). From one index over HTTP(S), pip reads it through a loopback server
   that leaves out the wheels no tag of this interpreter matches
   (:mod:`mlab.airlock.pipnarrow`): pip's own choices, about two thirds of its time
   (issue 18). ``pip wheel --no-deps`` builds wheels from the sdists. For another target (``--python-version``/``--platform``) ``pip download
   --only-binary=:all:`` with pip's target options is used; sdists that build here into
   pure-Python (``none-any``) wheels are offered to it, compiled ones cannot be staged for
   an interpreter that is not here.
2. The closure is checked against the *target's* markers (:func:`missing_requirements`),
   because ``pip download --python-version`` evaluates markers such as
   ``python_version < "3.11"`` for the running interpreter, not the target; anything
   missing is fetched in another round.
3. The wheels are published with :func:`mlab.airlock.pipindex.publish` (atomic, locked,
   incremental) and audited.

Nothing is published when resolution fails, so a bad name leaves the index unchanged.
pip runs with ``--isolated`` so a HomePod-mode ``/etc/pip.conf`` (pointing at the share)
or a developer's pip configuration cannot change what gets staged; proxies from the
environment still apply.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from mlab.airlock import audit
from mlab.airlock.fsutil import check_writable, ensure_dir
from mlab.airlock.pipindex_pages import WheelFile
from mlab.airlock.pipinspect import Inspector
from mlab.airlock.piptarget import Target
from mlab.errors import MlabError, UsageError
from mlab.topology import PIP_INDEX_DIR

if TYPE_CHECKING:
    from mlab.airlock.pipindex import PublishResult
# mlab.airlock.pipindex (filelock, zipfile, the email parser) is imported where it is used,
# so that pip starts about 25 ms earlier and the import runs while pip does (issue 18).

DEFAULT_INDEX_URL = "https://pypi.org/simple"
MAX_ROUNDS = 4
"""Resolution rounds before giving up on a closure that keeps missing requirements."""

Report = Callable[[str], None]


@dataclass
class Dist:
    """A downloaded wheel's name, version and ``Requires-Dist`` entries."""

    project: str
    version: str
    requires: list[Requirement] = field(default_factory=list)


def read_dist(path: Path) -> Dist:
    """Read name, version and ``Requires-Dist`` from a wheel's METADATA."""
    from mlab.airlock.pipindex import inspect_wheel

    return _dist_of(*inspect_wheel(path))


def _dist_of(info: WheelFile, requires_dist: list[str]) -> Dist:
    requires: list[Requirement] = []
    for line in requires_dist:
        try:
            requires.append(Requirement(line))
        except InvalidRequirement:
            continue
    return Dist(info.project, info.version, requires)


def _marker_true(marker: Marker | None, env: dict[str, str], extras: Iterable[str]) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate({**env, "extra": e}) for e in ("", *extras))


def missing_requirements(
    roots: Sequence[Requirement], dists: Sequence[Dist], env: dict[str, str]
) -> list[Requirement]:
    """Requirements of the closure of ``roots`` that ``dists`` do not satisfy (pure).

    Walks from ``roots`` through each dist's ``Requires-Dist``, evaluating markers (PEP 508)
    with ``env`` and the extras requested of that dist, and returns every reachable
    requirement with no dist of that name, or whose dists all fall outside its specifier.

    Args:
        roots: the requested requirements.
        dists: what was downloaded, one entry per wheel.
        env: marker variables of the target (:meth:`Target.marker_environment`).
    """
    by_name: dict[str, list[Dist]] = {}
    for d in dists:
        by_name.setdefault(d.project, []).append(d)
    missing: dict[str, Requirement] = {}
    seen: dict[str, set[str]] = {}
    work: list[Requirement] = [r for r in roots if _marker_true(r.marker, env, ())]
    while work:
        req = work.pop()
        name = str(canonicalize_name(req.name))
        candidates = [d for d in by_name.get(name, []) if req.specifier.contains(d.version, prereleases=True)]
        if not candidates:
            missing.setdefault(f"{name}{req.specifier}", req)
            continue
        extras = seen.get(name)
        new_extras = set(req.extras) - (extras or set())
        if extras is not None and not new_extras:
            continue
        seen[name] = (extras or set()) | set(req.extras)
        for dist in candidates:
            for sub in dist.requires:
                if _marker_true(sub.marker, env, seen[name]):
                    work.append(sub)
    return list(missing.values())


def _strip_marker(req: Requirement) -> str:
    extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
    return f"{req.name}{extras}{req.specifier}"


def parse_requirement_lines(lines: Iterable[str]) -> list[Requirement]:
    """Requirements named in requirements-file lines (options, URLs, comments skipped)."""
    out: list[Requirement] = []
    for raw in lines:
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        try:
            out.append(Requirement(line))
        except InvalidRequirement:
            continue
    return out


@dataclass(frozen=True)
class Sources:
    """Where pip looks for packages.

    Attributes:
        index_url: the main index (PEP 503); default PyPI.
        extra_index_urls: more indexes.
        find_links: local folders or pages of wheels/sdists.
        no_index: ignore every index (only ``find_links``).
    """

    index_url: str = DEFAULT_INDEX_URL
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False

    def pip_args(self) -> list[str]:
        """pip options for these sources."""
        args = ["--no-index"] if self.no_index else ["--index-url", self.index_url]
        for url in () if self.no_index else self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        return args


@dataclass
class StageResult:
    """What :func:`stage` did.

    Attributes:
        published: files added and files already present (see :class:`PublishResult`).
        built: file names of wheels built here from source distributions.
    """

    published: PublishResult
    built: list[str] = field(default_factory=list)

    @property
    def added(self) -> list[WheelFile]:
        """Wheels new in the share."""
        return self.published.added


_NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")
_BUILD_FAILED = re.compile(r"Failed building wheel for (\S+)")
_CREATED = re.compile(r"Created wheel for \S+: filename=(\S+\.whl)")
_COLLECTING = re.compile(r"^\s*(?:Collecting|Processing|Building wheel for) (\S+)")


class NotFoundError(MlabError):
    """pip found no distribution for a requirement (``requirement`` holds it as pip printed it)."""

    def __init__(self, requirement: str) -> None:
        super().__init__(
            f"pip found no distribution for {requirement} on the configured indexes",
            hint="check the name and version (https://pypi.org/project/NAME/); for another "
            "--python-version/--platform only wheels and pure-Python sdists can be staged",
        )
        self.requirement = requirement


def _run_pip(args: list[str], report: Report | None, *, started: Callable[[subprocess.Popen[str]], None] | None = None,
             each_line: Callable[[str], None] | None = None) -> tuple[list[str], list[str]]:
    """Run ``python -m pip ARGS``; return (all output lines, created wheel names).

    Args:
        args: pip's arguments.
        report: called with each project name pip starts on.
        started: called with the running process (to stop it from another thread).
        each_line: called with each line of pip's output as it comes.

    Raises:
        MlabError: pip failed; the message names the requirement pip could not find, or
            carries pip's last error line.
    """
    argv = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", *args]
    lines: list[str] = []
    created: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        if started:
            started(proc)
        for line in proc.stdout:
            line = line.rstrip("\n")
            lines.append(line)
            if (m := _CREATED.search(line)):
                created.append(m.group(1))
            if report and (m := _COLLECTING.match(line)):
                report(m.group(1))
            if each_line:
                each_line(line)
        code = proc.wait()
    if code != 0:
        text = "\n".join(lines)
        if (m := _NOT_FOUND.search(text)):
            raise NotFoundError(m.group(1))
        if (m := _BUILD_FAILED.search(text)):
            reasons = [ln.strip() for ln in lines if re.match(r"\s*error:", ln) and "subprocess-exited" not in ln]
            why = f": {reasons[-1][:200]}" if reasons else ""
            raise MlabError(
                f"building a wheel for {m.group(1)} from its sdist failed{why}",
                hint="install its build requirements (compilers, -dev packages) on the Airlock, or pin a version with wheels",
            )
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:] or [f"exit {code}"]
        raise MlabError(f"pip {args[0]} failed: {errors[-1]}")
    return lines, created


MAX_PURE_BUILDS = 10
"""sdist-only requirements built per round for another target before giving up."""


def is_pure(wheel_name: str) -> bool:
    """True when a wheel installs on any interpreter and platform (``none-any`` tags) (pure)."""
    _n, _v, _b, tags = parse_wheel_filename(wheel_name)
    return all(t.abi == "none" and t.platform == "any" and t.interpreter.startswith("py") for t in tags)


def _prebuild_pure(reqs: list[str], pure_dir: Path, sources: Sources, report: Report | None) -> list[str]:
    """Build here the pure-Python wheels of the sdists in the local closure of ``reqs``.

    Best effort (a failure only means nothing is pre-built): the closure for this
    interpreter approximates the target's; sdists among it that build into ``none-any``
    wheels are kept in ``pure_dir``, the others are dropped.
    """
    scratch = ensure_dir(pure_dir.parent / ".scratch")
    try:
        _run_pip(["download", "--dest", str(scratch), "--progress-bar", "off", *sources.pip_args(), *reqs], report)
    except MlabError:
        return []
    built: list[str] = []
    for sdist in sorted(p for p in scratch.iterdir() if not p.name.endswith(".whl")):
        try:
            created = _run_pip(["wheel", "--no-deps", "--use-pep517", "--wheel-dir", str(pure_dir), "--progress-bar",
                                "off", *sources.pip_args(), str(sdist)], report)[1]
        except MlabError:
            continue
        for name in created:
            if is_pure(name):
                built.append(name)
            else:
                (pure_dir / name).unlink(missing_ok=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return built


def _download_foreign(
    args: list[str], reqs: list[str], dest: Path, target: Target, sources: Sources, report: Report | None
) -> list[str]:
    """``pip download`` for another target, building pure-Python sdists here when needed.

    pip insists on ``--only-binary=:all:`` for another interpreter, so a dependency that
    ships only an sdist is "not found" there, and pip's resolver may silently fall back to
    an old release of its dependent that did not need it. So the sdists of the local
    closure are built first (:func:`_prebuild_pure`); a ``none-any`` wheel suits every
    target and is offered to pip through ``--find-links``. A requirement still not found
    is built and the download retried. Returns the names of the wheels built.

    Raises:
        NotFoundError: a requirement has no wheel for the target and no pure sdist.
        MlabError: an sdist for another target contains compiled code.
    """
    pure_dir = ensure_dir(dest / ".pure")
    built: list[str] = _prebuild_pure(reqs, pure_dir, sources, report)
    tried: set[str] = set()
    for _attempt in range(MAX_PURE_BUILDS):
        try:
            _run_pip([*args, "--find-links", str(pure_dir)], report)
            return built
        except NotFoundError as exc:
            if exc.requirement in tried:
                raise
            tried.add(exc.requirement)
            try:
                _lines, created = _run_pip(
                    ["wheel", "--no-deps", "--use-pep517", "--wheel-dir", str(pure_dir), "--progress-bar", "off",
                     *sources.pip_args(), exc.requirement], report)
            except MlabError:
                raise exc from None
            for name in created:
                if not is_pure(name):
                    raise MlabError(
                        f"{exc.requirement} ships only a source distribution with compiled code; "
                        f"it cannot be built here for Python {target.python_version or 'local'} {' '.join(target.platforms)}",
                        hint="stage it on an Airlock that runs the target image",
                    ) from None
            built += created
    raise MlabError(f"more than {MAX_PURE_BUILDS} sdist-only requirements for the target")


def _build_sdists(dest: Path, sources: Sources, report: Report | None) -> list[str]:
    """Build the sdists ``pip download`` left in ``dest`` into wheels there; return their names.

    One ``pip wheel --no-deps --use-pep517`` for all of them (each in an isolated build
    environment with its declared backend, setuptools for setup.py-only projects, as pip
    does by default); the sdists are removed afterwards.

    Raises:
        MlabError: a build failed (the message names the project and pip's reason).
    """
    sdists = sorted(p for p in dest.iterdir() if p.is_file() and not p.name.endswith(".whl"))
    if not sdists:
        return []
    created = _run_pip(["wheel", "--no-deps", "--use-pep517", "--wheel-dir", str(dest),
                        "--progress-bar", "off", *sources.pip_args(), *map(str, sdists)], report)[1]
    for sdist in sdists:
        sdist.unlink()
    return created


def _download_chosen(download_args: list[str], resolve_args: list[str], dest: Path, sources: Sources,
                     report: Report | None) -> dict[str, str]:
    """Put exactly the files pip chooses for ``resolve_args`` into ``dest``; return verified hashes.

    pip resolves (:func:`mlab.airlock.pipfetch.resolve`); its wheels are fetched in
    parallel and checked against its hashes (:func:`mlab.airlock.pipfetch.download`); its
    other files (sdists) and any wheel that could not be fetched here are downloaded by
    pip, pinned to the same URL (``NAME @ URL``, ``--no-deps``). When the report names
    something that is not a single file, plain ``pip download`` (``download_args``) runs
    instead (issue 18: pip downloads one file after the other).

    Returns:
        File name -> sha256 of each wheel fetched and verified here.

    Raises:
        NotFoundError: pip found no distribution for a requirement.
        MlabError: pip failed, or a file did not match pip's hash.
    """
    from mlab.airlock import pipfetch

    chosen = pipfetch.resolve(lambda argv: _run_pip(argv, report), resolve_args)
    if chosen is None:
        _run_pip(download_args, report)
        return {}
    hashes, left = pipfetch.download([c for c in chosen if c.fetchable], dest, started=report)
    left += [c for c in chosen if not c.fetchable]
    if left:
        _run_pip(["download", "--no-deps", "--dest", str(dest), "--progress-bar", "off", *sources.pip_args(),
                  *(f"{c.name} @ {c.url}" + (f"#sha256={c.sha256}" if c.sha256 else "") for c in left)], report)
    return hashes


def _download_probed(args: list[str], dest: Path, report: Report | None, probe: Any,
                     each_line: Callable[[str], None]) -> bool:
    """``pip download ARGS`` while ``probe`` (:class:`mlab.airlock.pipfetch.Probe`) asks the
    index; returns True when pip was stopped because the index serves metadata apart (the
    caller then empties ``dest`` and takes the parallel path), False when pip finished.
    pip is stopped with SIGTERM; a build it had started for an sdist may finish on its own.

    Raises:
        NotFoundError: pip found no distribution for a requirement.
        MlabError: pip failed.
    """
    import threading

    stopped = threading.Event()

    def watch(proc: subprocess.Popen[str]) -> None:
        def run() -> None:
            if probe.answer() and proc.poll() is None:
                stopped.set()
                proc.terminate()
        threading.Thread(target=run, daemon=True, name="mlab-probe-watch").start()

    try:
        _run_pip(args, report, started=watch, each_line=each_line)
    except MlabError:
        if not stopped.is_set():
            raise
    return stopped.is_set()


def fetch(
    specs: Sequence[str],
    requirement_files: Sequence[Path],
    dest: Path,
    target: Target,
    sources: Sources,
    report: Report | None = None,
    inspected: dict[Path, tuple[WheelFile, list[str]]] | None = None,
    parallel: bool | None = None,
) -> list[str]:
    """Resolve ``specs`` and put the closure's wheels in ``dest``; return built file names.

    ``parallel``: resolve with pip's report and fetch its files in parallel
    (:func:`_download_chosen`) or run plain ``pip download``; None: decide as
    :func:`mlab.airlock.pipfetch.worth_it` does, with the index asked in a thread while
    ``pip download`` already runs (:func:`_download_probed`: stopped and replaced by the
    parallel path only if the index serves wheel metadata apart).

    For the local interpreter and one index over HTTP(S) (:func:`mlab.airlock.pipnarrow.usable`)
    pip reads that index through :class:`mlab.airlock.pipnarrow.NarrowIndex`: the same
    choices, without parsing and rejecting the wheels for other interpreters and platforms.

    ``inspected`` (path -> :func:`mlab.airlock.pipindex.inspect_wheel`) is filled with
    every wheel read for the closure check, so publishing need not open them again; each
    wheel is read, hashed and flushed to disk (fsync) in threads as soon as pip reports
    it saved, while pip finishes the others and exits.

    Raises:
        MlabError: a requirement cannot be found or built, or the closure stays incomplete
            for the target after :data:`MAX_ROUNDS` rounds.
    """
    roots = [Requirement(s) for s in specs]
    for path in requirement_files:
        roots += parse_requirement_lines(Path(path).read_text(encoding="utf-8").splitlines())
    env = target.marker_environment()
    inspected = {} if inspected is None else inspected
    inspector = Inspector(inspected)
    from contextlib import ExitStack

    from mlab.airlock import pipnarrow

    with ExitStack() as stack:
        narrow = None
        if not target.foreign and pipnarrow.usable(sources.index_url, sources.extra_index_urls, sources.no_index):
            try:
                narrow = stack.enter_context(pipnarrow.NarrowIndex(sources.index_url, [r.name for r in roots]))
            except OSError:  # no loopback port: pip reads the index itself, as before
                narrow = None
        try:
            return _fetch_rounds(specs, roots, requirement_files, dest, target, sources, report, inspector,
                                 parallel, env, narrow)
        finally:
            inspector.close()


def _fetch_rounds(specs: Sequence[str], roots: list[Requirement], requirement_files: Sequence[Path], dest: Path,
                  target: Target, sources: Sources, report: Report | None, inspector: Inspector,
                  parallel: bool | None, env: dict[str, str], narrow: Any = None) -> list[str]:
    """:func:`fetch`'s rounds: download, build, check the closure, until nothing is missing.

    ``narrow``: the :class:`mlab.airlock.pipnarrow.NarrowIndex` pip reads instead of
    ``sources.index_url``; it also answers the index probe from the first requirement's
    page, which it fetches anyway (a separate probe cost 0.2-0.4 s here)."""
    from mlab.airlock import pipfetch

    built: list[str] = []
    pending = list(specs)
    req_args = [a for p in requirement_files for a in ("-r", str(p))]
    probe = None
    if parallel is None and not target.foreign:
        index = next((u for u in (sources.index_url, *sources.extra_index_urls)
                      if u.startswith(("http://", "https://")) and not sources.no_index), None)
        first = roots[0].name if roots else None
        if pipfetch.forced() is None and index is not None and first is not None:
            # asked while pip download starts
            probe = narrow.probe(first) if narrow is not None else pipfetch.Probe(index, first)
        else:
            parallel = pipfetch.worth_it(index, first)
    if narrow is not None:
        sources = Sources(index_url=narrow.url, find_links=sources.find_links)
    for _round in range(MAX_ROUNDS):
        # pip download, not pip wheel: the same resolver and choices (both prefer a wheel to
        # an sdist of the same version), without pip wheel's extra pass over each
        # downloaded wheel (pip wheel took 1.14x as long on wheels only, issue 18).
        args = ["download", "--dest", str(dest), *target.pip_args()]
        args += ["--progress-bar", "off", *sources.pip_args(), *pending, *req_args]
        hashes: dict[str, str] = {}
        if target.foreign:
            built += _download_foreign(args, [*pending, *req_args], dest, target, sources, report)
        else:
            if probe is not None:
                parallel = _download_probed(args, dest, report, probe, inspector.saved_line(dest))
                probe = None
                if parallel:
                    inspector.forget()
                    for path in dest.iterdir():  # whatever pip saved before it was stopped
                        if path.is_file():
                            path.unlink()
                    hashes = _download_chosen(args, [*sources.pip_args(), *pending, *req_args], dest, sources,
                                              report)
            elif parallel:
                hashes = _download_chosen(args, [*sources.pip_args(), *pending, *req_args], dest, sources, report)
            else:
                _run_pip(args, report, each_line=inspector.saved_line(dest))
            built += _build_sdists(dest, sources, report)
        req_args = []
        paths = list(dest.glob("*.whl"))
        inspector.collect(paths, hashes)  # each wheel opened once, for the closure and publishing
        dists = [_dist_of(*inspector.inspected[path]) for path in paths]
        missing = missing_requirements(roots, dists, env)
        if not missing:
            return sorted({b for b in built if (dest / b).exists()})
        pending = [_strip_marker(r) for r in missing]
    raise MlabError(
        f"the closure for the target stays incomplete: {', '.join(str(r) for r in missing)}",
        hint="pin compatible versions of these requirements and stage again",
    )


def stage(
    share: Path,
    specs: Sequence[str],
    *,
    requirement_files: Sequence[Path] = (),
    target: Target = Target(),
    sources: Sources = Sources(),
    report: Report | None = None,
    publishing: Callable[[int, int], None] | None = None,
) -> StageResult:
    """Stage ``specs`` (and requirement files) with their closure into the share.

    Args:
        share: the share root (``/opt/public/airlock``).
        specs: PEP 508 requirement strings, e.g. ``["requests>=2", "numpy"]``.
        requirement_files: pip requirements files (``-r``).
        target: the interpreter and platform to stage for.
        sources: indexes and folders to take packages from.
        report: called with each project name pip starts on (for progress display).
        publishing: called with (wheels done, wheels in all) while hashing and publishing.

    Returns:
        The published wheels and those built from sdists.

    Raises:
        UsageError: nothing to stage, or a spec is not a PEP 508 requirement.
        MlabError: resolution, download or build failed (nothing is published then).
    """
    if not specs and not requirement_files:
        raise UsageError("nothing to stage", hint="name a package (SPEC) or pass -r FILE")
    for spec in specs:
        try:
            Requirement(spec)
        except InvalidRequirement as exc:
            raise UsageError(f"SPEC {spec!r} is not a requirement: {exc}") from None
    for path in requirement_files:
        if not Path(path).is_file():
            raise UsageError(f"-r {path}: no such file")
    check_writable(share, PIP_INDEX_DIR)
    tmp_root = ensure_dir(Path(share) / PIP_INDEX_DIR / ".tmp")
    work = Path(tempfile.mkdtemp(prefix="stage-", dir=tmp_root))
    try:
        inspected: dict[Path, tuple[WheelFile, list[str]]] = {}
        built = fetch(specs, requirement_files, work, target, sources, report, inspected)
        wheels = sorted(work.glob("*.whl"))
        from mlab.airlock.pipindex import publish

        result = publish(share, wheels, publishing, {p: i[0] for p, i in inspected.items()})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    records = [
        audit.make_record("stage-pip", w.filename, size=w.size, sha256=w.sha256) for w in result.added
    ]
    if not records:
        records = [audit.make_record("stage-pip", " ".join([*specs, *(f"-r {p}" for p in requirement_files)]))]
    audit.append(share, records)
    return StageResult(published=result, built=built)
