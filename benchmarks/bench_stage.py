"""Benchmark of `mlab stage pip` and the share's index, as ratios against baselines measured
in the same run, with interleaved samples (A B A B ...), the median and the spread.

1. stage from PyPI: ``mlab stage pip`` of a real requirements set (numpy, pandas,
   scikit-learn, requests, tqdm, pillow and their dependencies) beside a plain
   ``pip download`` of the same set; every sample with an empty pip cache and a new share.
   Also with ``MLAB_STAGE_PARALLEL=1`` (pip's report, then the files six at once, even
   where the index serves no PEP 658 metadata). Each side's files and hashes of its last
   sample are compared with ``pip download``'s. Goal (issue 18): ratio <= 1.0.
   ``mlab stage pip`` has pip read PyPI through the narrowed index
   (``mlab.airlock.pipnarrow``); ``--narrow-case`` adds ``MLAB_STAGE_NARROW=0`` (pip
   reads PyPI itself).
2. stage from a local wheel folder: the same two commands with ``--no-index
   --find-links`` on a folder holding the set's wheels (no network: shows MLab's fixed
   costs: start, metadata reading, publishing).
3. full index rebuild: :func:`mlab.airlock.pipindex.rebuild` of a share of ``--projects``
   projects (one tiny wheel each) over an up-to-date index, after 1% of the projects got a
   wheel by hand, and from nothing (no ``simple/``), beside ``sha256sum`` of the same wheels
   (the part of a rebuild no implementation can skip: reading and hashing every file),
   and a bare loop that only creates the entries of a build from nothing (a directory and a
   page per project) and flushes them once: the floor of that case on this file system.
   Goal: < 3 s for 10,000 projects.
4. incremental publish: one wheel into that share (a single sample each; the baseline is
   the rebuild).

Usage: ``.venv/bin/python benchmarks/bench_stage.py [--quick] [--projects N] [--samples N]
[--json] [--skip-network] [--index-only]`` (``--quick``: requests only, 2,000 projects,
3 samples).
Needs PyPI unless ``--skip-network``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "airlock"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from airlock_testlib import make_wheel  # noqa: E402  (tiny valid wheels)
from sampling import as_json, dumps, interleave, report  # noqa: E402

from mlab.airlock import pipindex  # noqa: E402
from mlab.airlock.fsutil import sync_filesystem  # noqa: E402
from mlab.airlock.pipindex_pages import render_project_html, render_root_html  # noqa: E402

FULL_SET = ["numpy", "pandas", "scikit-learn", "requests", "tqdm", "pillow"]
QUICK_SET = ["requests"]
PIP = [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check"]


def _fresh_env(root: Path) -> dict[str, str]:
    cache = Path(tempfile.mkdtemp(dir=root, prefix="cache-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["XDG_CACHE_HOME"] = str(cache)
    return env


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}


def stage_cases(root: Path, specs: list[str], sources: list[str],
                chosen: dict[str, dict[str, str]], old_src: Path | None = None,
                parallel_case: bool = True, narrow_case: bool = False) -> dict[str, object]:
    """The two commands, each sample in new folders with an empty cache.

    ``chosen`` gets each side's file name -> sha256 of its last sample (not timed), so the
    run can show that both chose the same files.
    """

    def download() -> float:
        dest = Path(tempfile.mkdtemp(dir=root, prefix="dl-"))
        start = time.perf_counter()
        subprocess.run([*PIP, "download", "-q", "--dest", str(dest), *sources, *specs],
                       check=True, env=_fresh_env(root), stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        chosen["pip download"] = _hashes(dest)
        shutil.rmtree(dest)
        return seconds

    def stage(parallel: str | None = None, src: Path | None = None, narrow: str | None = None) -> float:
        share = Path(tempfile.mkdtemp(dir=root, prefix="share-"))
        env = _fresh_env(root)
        env.pop("MLAB_STAGE_PARALLEL", None)
        env.pop("MLAB_STAGE_NARROW", None)
        if parallel:
            env["MLAB_STAGE_PARALLEL"] = parallel
        if narrow:
            env["MLAB_STAGE_NARROW"] = narrow
        if src is not None:  # another version's code, with this virtualenv
            env["PYTHONPATH"] = str(src)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "mlab.cli.main", "stage", "pip", "--share",
                        str(share), *sources, *specs],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
        chosen["mlab stage pip" + (f" MLAB_STAGE_PARALLEL={parallel}" if parallel else "")
               + (f" MLAB_STAGE_NARROW={narrow}" if narrow else "")
               + (f" with the code in {src.name}" if src else "")] = _hashes(share / "pip-index" / "files")
        shutil.rmtree(share)
        return seconds

    cases: dict[str, object] = {"mlab stage pip": stage, "pip download (baseline)": download}
    if parallel_case and not any(s == "--no-index" for s in sources):
        # the report and the parallel fetch, also where the index serves no PEP 658 metadata
        cases["mlab stage pip MLAB_STAGE_PARALLEL=1"] = lambda: stage("1")
    if narrow_case and not any(s == "--no-index" for s in sources):
        # pip reading the index itself (the narrowed server off)
        cases["mlab stage pip MLAB_STAGE_NARROW=0"] = lambda: stage(narrow="0")
    if old_src is not None:
        cases[f"mlab stage pip with the code in {old_src.name}"] = lambda: stage(src=old_src)
    return cases


def load_old_pipindex(ref: str, folder: Path):  # type: ignore[no-untyped-def]
    """``src/mlab/airlock/pipindex.py`` as it was at git ``ref``, imported as a module, with
    the ``pipindex_pages.py`` of the same ref (their sources written to ``folder``)."""
    import importlib.util

    def show(path: str) -> str:
        return subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{path}"], check=True,
                              capture_output=True, text=True).stdout

    modules = {}
    for name, text in (("old_pipindex_pages", show("src/mlab/airlock/pipindex_pages.py")),
                       ("old_pipindex", show("src/mlab/airlock/pipindex.py")
                        .replace("mlab.airlock.pipindex_pages", "old_pipindex_pages"))):
        path = folder / f"{name}.py"
        path.write_text(text)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        modules[name] = module
    return modules["old_pipindex"]


def _by_project(files: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for path in sorted(files.glob("*.whl")):
        out.setdefault(pipindex.read_wheel(path).project, []).append(path.name)
    return out


def _create(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def index_cases(root: Path, projects: int, old_ref: str | None = None) -> tuple[dict[str, object], Path]:
    share = root / "big-share"
    src = share / "pip-index" / "files"
    for i in range(projects):
        make_wheel(src, f"proj{i}", "1.0")
    wheels = sorted(str(p) for p in src.glob("*.whl"))
    listing = root / "wheels.txt"
    listing.write_text("\0".join(wheels))

    def sha256sum() -> None:
        with open(listing, "rb") as names:
            subprocess.run(["xargs", "-0", "sha256sum"], stdin=names, check=True,
                           stdout=subprocess.DEVNULL)

    def from_nothing() -> float:
        shutil.rmtree(share / "pip-index" / "simple", ignore_errors=True)  # not timed
        start = time.perf_counter()
        pipindex.rebuild(share)
        return time.perf_counter() - start

    def changed_by_hand() -> float:
        # by hand (not timed): 1% of the projects get a second version, or lose it again
        # (every other round), so 1% of the pages change each time; then the rebuild
        added = list(src.glob("*-2.0-*.whl"))
        for path in added:
            path.unlink()
        if not added:
            for i in range(0, projects, 100):
                make_wheel(src, f"proj{i}", "2.0")
        start = time.perf_counter()
        pipindex.rebuild(share)
        return time.perf_counter() - start

    # The floor of a build from nothing: a bare loop that creates the same entries with the
    # same bytes (a directory and an index.html per project, the root page) and flushes
    # them with one syncfs, as the rebuild does; its previous tree is deleted right before
    # (not timed), as the rebuild's case deletes simple/.
    pages = {p: render_project_html(p, [pipindex.read_wheel(src / n) for n in ns])
             for p, ns in _by_project(src).items()}
    root_page = render_root_html(pages).encode()
    bare = share / "pip-index" / ".bare-floor"

    def bare_loop() -> float:
        shutil.rmtree(bare, ignore_errors=True)  # not timed
        start = time.perf_counter()
        os.mkdir(bare)
        for project, text in pages.items():
            pdir = os.path.join(bare, project)
            os.mkdir(pdir)
            _create(os.path.join(pdir, "index.html"), text.encode())
        _create(os.path.join(bare, "index.html"), root_page)
        sync_filesystem(bare)
        return time.perf_counter() - start

    cases: dict[str, object] = {"index rebuild, index up to date": lambda: pipindex.rebuild(share),
                                "sha256sum of every wheel (baseline)": sha256sum}
    if old_ref:
        # the old code on its own copy of the share (the same wheels, hard-linked): the two
        # codes' pages differ, so on one tree each would rewrite the other's every time
        old = load_old_pipindex(old_ref, root)
        old_share = root / "old-share"
        (old_share / "pip-index" / "files").mkdir(parents=True)
        for path in src.iterdir():
            os.link(path, old_share / "pip-index" / "files" / path.name)
        old.rebuild(old_share)
        cases[f"the same with the code of {old_ref}"] = lambda: old.rebuild(old_share)
    cases["index rebuild, 1% of projects changed by hand"] = changed_by_hand
    cases["index rebuild from nothing"] = from_nothing
    cases["bare loop creating the same entries (floor of a build from nothing)"] = bare_loop
    if old_ref:
        def old_from_nothing() -> float:
            shutil.rmtree(old_share / "pip-index" / "simple", ignore_errors=True)  # not timed
            start = time.perf_counter()
            old.rebuild(old_share)
            return time.perf_counter() - start
        cases[f"from nothing with the code of {old_ref}"] = old_from_nothing
    return cases, share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="requests only, 2,000 projects, 3 samples")
    parser.add_argument("--projects", type=int, default=None, help="projects in the share (default 10,000)")
    parser.add_argument("--samples", type=int, default=None, help="counted runs per case (default 5; quick 3)")
    parser.add_argument("--skip-network", action="store_true", help="skip staging from PyPI")
    parser.add_argument("--index-only", action="store_true",
                        help="only the index rebuild and publish figures (no pip, no network)")
    parser.add_argument("--old-ref", default=None,
                        help="also time the index rebuild with pipindex.py as it was at this git ref")
    parser.add_argument("--old-stage-ref", default=None,
                        help="also stage with the mlab package as it was at this git ref (same venv)")
    parser.add_argument("--no-parallel-case", action="store_true",
                        help="skip the MLAB_STAGE_PARALLEL=1 case from PyPI")
    parser.add_argument("--narrow-case", action="store_true",
                        help="also stage from PyPI with MLAB_STAGE_NARROW=0 (pip reads the index itself)")
    parser.add_argument("--stage-only", action="store_true", help="only the staging figures (no index rebuild)")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
    args = parser.parse_args()
    specs = QUICK_SET if args.quick else FULL_SET
    projects = args.projects or (2000 if args.quick else 10000)
    samples = args.samples or (3 if args.quick else 5)
    root = Path(tempfile.mkdtemp(prefix="mlab-bench-stage-"))
    out: dict[str, object] = {"set": specs, "projects": projects}
    chosen: dict[str, dict[str, str]] = {}
    try:
        old_src = None
        if args.old_stage_ref:  # that ref's src/ in a folder of its own (its bytecode there too)
            old_src = root / f"src-{args.old_stage_ref}"
            old_src.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.old_stage_ref, "src"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old_src), "--strip-components=1"], input=archive, check=True)
        groups = {}
        if not args.index_only:
            wheels = root / "wheels"
            subprocess.run([*PIP, "download", "-q", "--dest", str(wheels), *specs], check=True,
                           env=_fresh_env(root), stdout=subprocess.DEVNULL)
            if not args.skip_network:
                groups["stage from PyPI, empty caches"] = (
                    stage_cases(root, specs, [], chosen, old_src, not args.no_parallel_case, args.narrow_case), 1.0)
            groups["stage from a local wheel folder"] = (
                stage_cases(root, specs, ["--no-index", "--find-links", str(wheels)], chosen, old_src), 1.0)
        if not args.stage_only:
            index, share = index_cases(root, projects, args.old_ref)
            groups[f"full index rebuild, {projects} projects"] = (index, None)
        for title, (cases, goal) in groups.items():
            stats = interleave(cases, samples=samples)  # type: ignore[arg-type]
            base = list(cases)[1]
            out[title] = as_json(stats, base)
            if not args.json:
                goals = {list(cases)[0]: goal} if goal else {}
                print(report(stats, baseline=base, goals=goals, title=f"\n{title}"))
            if goal:  # a staging group: every side's last sample chose the same files?
                for name in [n for n in cases if n in chosen and n.startswith("mlab")]:
                    same = chosen[name] == chosen["pip download"]
                    out[title][f"{name}: same files and hashes as pip download"] = same  # type: ignore[index]
                    if not args.json:
                        print(f"{name}: same {len(chosen['pip download'])} files and sha256 as pip download: {same}")
        if not args.stage_only:
            figures = out[f"full index rebuild, {projects} projects"]
            rebuild_s = figures["index rebuild, index up to date"]["median_s"]  # type: ignore[index]
            first_s = figures["index rebuild from nothing"]["median_s"]  # type: ignore[index]
            one = make_wheel(root / "new", "proj0", "9.0")
            start = time.perf_counter()
            pipindex.publish(share, [one])
            publish_s = time.perf_counter() - start
            out["publish one wheel into the share"] = {"seconds": round(publish_s, 3),
                                                       "ratio_to_rebuild": round(publish_s / rebuild_s, 4)}
            if not args.json:
                for what, secs in (("over an up-to-date index", rebuild_s), ("from nothing", first_s)):
                    print(f"\nfull rebuild of {projects} projects {what}: median {secs:.2f} s; "
                          f"goal < 3 s ({'met' if secs < 3 else 'MISSED'})")
                print(f"publish one wheel into the share: {publish_s:.3f} s "
                      f"({publish_s / rebuild_s:.3f}x a full rebuild)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(dumps(out))


if __name__ == "__main__":
    main()
