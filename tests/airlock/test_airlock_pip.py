"""`mlab stage pip`: closure, sdist builds, markers for the target, versions, failures, locking."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from mlab.airlock import pip, pipindex, pipindex_pages
from mlab.errors import MlabError


def index_snapshot(share: Path) -> dict[str, str]:
    """Every file under <share>/pip-index except temp/lock files -> sha256."""
    out = {}
    root = share / "pip-index"
    if not root.exists():
        return out
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(".") :
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def assert_index_valid(share: Path) -> dict[str, list[str]]:
    """Every root link has a page; every page link names an existing file with its hash."""
    simple = share / "pip-index" / "simple"
    root = (simple / "index.html").read_text()
    projects = re.findall(r'href="([^"/]+)/"', root)
    listed = {}
    for project in projects:
        page = (simple / project / "index.html").read_text()
        names = []
        for href, sha in re.findall(r'href="([^"#]+)#sha256=([0-9a-f]{64})"', page):
            path = (simple / project / unquote(href)).resolve()
            assert path.is_file(), href
            assert hashlib.sha256(path.read_bytes()).hexdigest() == sha, href
            names.append(path.name)
        listed[project] = names
    return listed


@pytest.mark.parametrize(
    ("roots", "dists", "python", "expected"),
    [
        (["app"], [("app", "1.0", ["lib>=1"]), ("lib", "1.0", [])], "3.11", []),
        (["app"], [("app", "1.0", ["lib>=2"]), ("lib", "1.0", [])], "3.11", ["lib>=2"]),
        (["app"], [("app", "1.0", ['tomli; python_version < "3.11"'])], "3.11", []),
        (["app"], [("app", "1.0", ['tomli; python_version < "3.11"'])], "3.10", ["tomli"]),
        (["app[fast]"], [("app", "1.0", ['speed; extra == "fast"'])], "3.11", ["speed"]),
        (["app"], [("app", "1.0", ['speed; extra == "fast"'])], "3.11", []),
        (["App_Name"], [("app-name", "1.0", [])], "3.11", []),
        (['old; python_version < "3"'], [], "3.11", []),
    ],
    ids=["complete", "too-old", "marker-false", "marker-true-for-target", "extra", "no-extra", "normalized", "root-marker"],
)
def test_missing_requirements(roots, dists, python, expected) -> None:
    env = dict(default_environment(), python_version=python, python_full_version=python + ".0")
    got = pip.missing_requirements(
        [Requirement(r) for r in roots],
        [pip.Dist(n, v, [Requirement(x) for x in reqs]) for n, v, reqs in dists],
        env,
    )
    assert sorted(str(r).split(";")[0].strip() for r in got) == expected


def test_target_markers_and_args() -> None:
    t = pip.Target(python_version="3.10", platforms=("manylinux_2_36_aarch64",))
    env = t.marker_environment()
    assert env["python_version"] == "3.10" and env["python_full_version"] == "3.10.0"
    assert env["sys_platform"] == "linux" and env["platform_machine"] == "aarch64"
    assert "--only-binary=:all:" in t.pip_args() and "3.10" in t.pip_args()
    assert pip.Target().pip_args() == [] and not pip.Target().foreign


def test_render_pages_escape_and_relative_links() -> None:
    w = pipindex_pages.WheelFile("torch-2.0+cpu-cp311-cp311-linux_x86_64.whl", "torch", "2.0+cpu", "a" * 64, 1, ">=3.8,<4")
    page = pipindex_pages.render_project_html("torch", [w])
    assert 'href="../../files/torch-2.0%2Bcpu-cp311-cp311-linux_x86_64.whl#sha256=' + "a" * 64 + '"' in page
    assert 'data-requires-python="&gt;=3.8,&lt;4"' in page
    assert '<a href="a-b/">a-b</a>' in pipindex_pages.render_root_html(["a-b"])


def test_project_page_reads_back_what_was_rendered() -> None:
    files = [pipindex_pages.WheelFile("torch-2.0+cpu-cp311-cp311-linux_x86_64.whl", "torch", "2.0+cpu", "a" * 64, 0,
                                      '>=3.8,<4,!="3.9.*"'),
             pipindex_pages.WheelFile("torch-1.0-py3-none-any.whl", "torch", "1.0", "b" * 64, 0, None)]
    page = pipindex_pages.render_project_html("torch", files)
    assert sorted(pipindex_pages.parse_project_html("torch", page), key=lambda w: w.filename) == \
        sorted(files, key=lambda w: w.filename)
    assert pipindex_pages.parse_project_html("torch", "damaged") == []


def test_stage_local_folder_closure_and_marker_for_target(tmp_path, wheel_factory, pip_target) -> None:
    src = tmp_path / "src"
    wheel_factory(src, "app", "1.0", requires=["lib>=1"])
    wheel_factory(src, "lib", "1.0", requires=['tomli-ish; python_version < "3.11"'])
    wheel_factory(src, "tomli-ish", "1.0")
    sources = pip.Sources(find_links=(str(src),), no_index=True)

    local = tmp_path / "share-local"
    res = pip.stage(local, ["app"], sources=sources, target=pip.Target(python_version="3.11"))
    assert sorted(w.project for w in res.added) == ["app", "lib"]

    old = tmp_path / "share-310"
    res = pip.stage(old, ["app"], sources=sources, target=pip.Target(python_version="3.10"))
    assert sorted(w.project for w in res.added) == ["app", "lib", "tomli-ish"]
    assert set(assert_index_valid(old)) == {"app", "lib", "tomli-ish"}

    target = tmp_path / "t"
    proc = pip_target(local / "pip-index" / "simple", target, "app")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "lib" / "__init__.py").exists()


def test_index_served_by_a_static_http_server(tmp_path, wheel_factory) -> None:
    """The same tree works for pip over HTTP (PEP 503: a directory's index.html), with the
    dependency and the data-requires-python choice as through file://."""
    import functools
    import http.server
    import threading

    src = tmp_path / "src"
    wheel_factory(src, "app", "1.0", requires=["lib"])
    wheel_factory(src, "lib", "1.0")
    share = tmp_path / "share"
    pip.stage(share, ["app"], sources=pip.Sources(find_links=(str(src),), no_index=True))
    pipindex.publish(share, [wheel_factory(tmp_path / "later", "lib", "2.0", requires_python=">=9")])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(share / "pip-index"))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        target = tmp_path / "t"
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", "install", "--no-cache-dir",
             "--index-url", f"http://127.0.0.1:{server.server_address[1]}/simple/", "--target", str(target), "app"],
            capture_output=True, text=True, env=env, check=False)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (target / "lib" / "__init__.py").exists()
    assert (target / "lib-1.0.dist-info").is_dir()


def test_sdist_only_dependency_is_published_as_wheel(tmp_path, wheel_factory, sdist_factory, pip_target) -> None:
    src = tmp_path / "src"
    wheel_factory(src, "app", "1.0", requires=["sdistonly"])
    sdist_factory(src, "sdistonly", "0.3")
    share = tmp_path / "share"
    # the sdist's build backend (setuptools) comes from PyPI, as on the Airlock
    res = pip.stage(share, ["app"], sources=pip.Sources(find_links=(str(src),)))
    names = {w.filename for w in res.added}
    assert "sdistonly-0.3-py3-none-any.whl" in names
    assert res.built == ["sdistonly-0.3-py3-none-any.whl"]
    assert not list((share / "pip-index" / "files").glob("*.tar.gz"))
    proc = pip_target(share / "pip-index" / "simple", tmp_path / "t", "app")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "t" / "sdistonly" / "__init__.py").exists()


def test_two_versions_staged_apart_both_remain(tmp_path, wheel_factory, pip_target) -> None:
    share = tmp_path / "share"
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    wheel_factory(v1, "app", "1.0")
    wheel_factory(v2, "app", "2.0")
    pip.stage(share, ["app==1.0"], sources=pip.Sources(find_links=(str(v1),), no_index=True))
    pip.stage(share, ["app"], sources=pip.Sources(find_links=(str(v2),), no_index=True))
    assert sorted(assert_index_valid(share)["app"]) == ["app-1.0-py3-none-any.whl", "app-2.0-py3-none-any.whl"]
    simple = share / "pip-index" / "simple"
    assert pip_target(simple, tmp_path / "latest", "app").returncode == 0
    assert "2.0" in (tmp_path / "latest" / "app" / "__init__.py").read_text()
    assert pip_target(simple, tmp_path / "pinned", "app==1.0").returncode == 0
    assert "1.0" in (tmp_path / "pinned" / "app" / "__init__.py").read_text()
    # staging the same file again adds nothing and keeps the file
    res = pip.stage(share, ["app==1.0"], sources=pip.Sources(find_links=(str(v1),), no_index=True))
    assert res.added == [] and [w.filename for w in res.published.present] == ["app-1.0-py3-none-any.whl"]


def test_unknown_name_fails_and_leaves_index_unchanged(tmp_path, wheel_factory) -> None:
    share = tmp_path / "share"
    src = tmp_path / "src"
    wheel_factory(src, "app", "1.0")
    pip.stage(share, ["app"], sources=pip.Sources(find_links=(str(src),), no_index=True))
    before = index_snapshot(share)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    proc = subprocess.run(
        [sys.executable, "-m", "mlab.cli.main", "stage", "pip", "--share", str(share), "--no-index",
         "-f", str(src), "app", "no-such-project-mlab-test"],
        capture_output=True, text=True, env=env, check=False,
    )
    assert proc.returncode == 1
    assert "no-such-project-mlab-test" in proc.stderr
    assert index_snapshot(share) == before
    assert not list((share / "pip-index" / ".tmp").iterdir())


def test_unknown_name_on_pypi(tmp_path) -> None:
    with pytest.raises(MlabError, match="no distribution for mlab-no-such-project-zz"):
        pip.stage(tmp_path / "share", ["mlab-no-such-project-zz"])
    assert not (tmp_path / "share" / "pip-index" / "simple").exists()


def test_stage_from_pypi_closure_installs_offline(tmp_path, pip_target) -> None:
    share = tmp_path / "share"
    res = pip.stage(share, ["requests==2.31.0"])
    assert {"requests", "urllib3", "idna", "certifi", "charset-normalizer"} <= {w.project for w in res.added}
    assert_index_valid(share)
    proc = pip_target(share / "pip-index" / "simple", tmp_path / "t", "requests==2.31.0")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_concurrent_stagings_leave_valid_index(tmp_path, wheel_factory) -> None:
    share = tmp_path / "share"
    procs = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    for i in range(3):
        src = tmp_path / f"src{i}"
        for j in range(4):
            wheel_factory(src, f"proj{i}-{j}", "1.0")
            wheel_factory(src, "common", f"1.{i}")
        specs = [f"proj{i}-{j}" for j in range(4)] + [f"common==1.{i}"]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "mlab.cli.main", "stage", "pip", "--share", str(share), "--no-index", "-f", str(src), *specs],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        ))
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    listed = assert_index_valid(share)
    assert len(listed) == 13
    assert sorted(listed["common"]) == [f"common-1.{i}-py3-none-any.whl" for i in range(3)]


def test_rebuild_matches_incremental(tmp_path, wheel_factory) -> None:
    share = tmp_path / "share"
    src = tmp_path / "src"
    wheel_factory(src, "a", "1.0")
    wheel_factory(src, "b", "1.0", requires_python=">=3.8")
    pip.stage(share, ["a", "b"], sources=pip.Sources(find_links=(str(src),), no_index=True))
    before = index_snapshot(share)
    assert pipindex.rebuild(share) == 2
    assert index_snapshot(share) == before


def test_rebuild_after_hand_changes_writes_only_what_changed(tmp_path, wheel_factory) -> None:
    share = tmp_path / "share"
    src = tmp_path / "src"
    for name in ("a", "b", "c", "e"):
        wheel_factory(src, name, "1.0")
    pip.stage(share, ["a", "b", "c", "e"], sources=pip.Sources(find_links=(str(src),), no_index=True))
    simple = share / "pip-index" / "simple"
    files = share / "pip-index" / "files"
    untouched = simple / "a" / "index.html"
    inode = untouched.stat().st_ino
    # by hand: c's wheel removed, a second version of b and a new project d added
    (files / "c-1.0-py3-none-any.whl").unlink()
    wheel_factory(files, "b", "2.0")
    wheel_factory(files, "d", "1.0", requires_python=">=3.9")
    (simple / "e" / "index.html").write_text("damaged")
    (simple / "a" / "index.json").write_text("{}")  # a JSON page left by an older MLab
    assert pipindex.rebuild(share) == 5
    rebuilt = index_snapshot(share)
    assert untouched.stat().st_ino == inode  # a page that did not change is not rewritten
    assert not (simple / "c").exists()
    assert not (simple / "a" / "index.json").exists()
    assert "e-1.0-py3-none-any.whl" in (simple / "e" / "index.html").read_text()
    assert "c/" not in (simple / "index.html").read_text()
    # the same pages as a first build from nothing
    shutil.rmtree(simple)
    assert pipindex.rebuild(share) == 5
    assert index_snapshot(share) == rebuilt
    assert 'data-requires-python="&gt;=3.9"' in (simple / "d" / "index.html").read_text()
    assert "b-2.0-py3-none-any.whl" in (simple / "b" / "index.html").read_text()


def test_requirements_file_with_markers_and_comments(tmp_path, wheel_factory) -> None:
    src = tmp_path / "src"
    wheel_factory(src, "alpha", "1.0")
    wheel_factory(src, "beta", "2.0")
    wheel_factory(src, "gamma", "1.0")
    req = tmp_path / "requirements.txt"
    req.write_text("# tools\nalpha==1.0  # pinned\n\nbeta>=2; python_version >= '3.8'\n"
                   "gamma; python_version < '3.0'\n")
    share = tmp_path / "share"
    res = pip.stage(share, [], requirement_files=[req], sources=pip.Sources(find_links=(str(src),), no_index=True))
    assert sorted(w.project for w in res.added) == ["alpha", "beta"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    proc = subprocess.run([sys.executable, "-m", "mlab.cli.main", "stage", "pip", "--share", str(share), "--no-index",
                           "-f", str(src), "-r", str(req), "gamma"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "added gamma-1.0-py3-none-any.whl" in proc.stdout
    assert "present alpha-1.0-py3-none-any.whl" in proc.stdout
    assert "1 added, 2 already present, 0 built from source" in proc.stdout


@pytest.mark.parametrize(
    ("name", "pure"),
    [("docopt-0.6.2-py2.py3-none-any.whl", True), ("six-1.17.0-py3-none-any.whl", True),
     ("markupsafe-3.0.4-cp311-cp311-manylinux_2_17_x86_64.whl", False), ("x-1.0-cp311-none-any.whl", False),
     ("x-1.0-py3-none-linux_x86_64.whl", False)],
    ids=["py2py3", "py3", "cpython-ext", "cp-tag", "platform"],
)
def test_is_pure(name, pure) -> None:
    assert pip.is_pure(name) is pure


def test_foreign_target_builds_pure_sdist(tmp_path, wheel_factory, sdist_factory, pip_target) -> None:
    src = tmp_path / "src"
    wheel_factory(src, "app", "1.0", requires=["sdistonly"])
    sdist_factory(src, "sdistonly", "0.3")
    share = tmp_path / "share"
    res = pip.stage(share, ["app"], sources=pip.Sources(find_links=(str(src),)),
                    target=pip.Target(python_version="3.10", platforms=("manylinux_2_17_x86_64",)))
    assert res.built == ["sdistonly-0.3-py3-none-any.whl"]
    assert sorted(w.filename for w in res.added) == ["app-1.0-py3-none-any.whl", "sdistonly-0.3-py3-none-any.whl"]
    assert pip_target(share / "pip-index" / "simple", tmp_path / "t", "app").returncode == 0


def test_rebuild_reads_metadata_again_when_a_wheel_changes_under_its_name(tmp_path, wheel_factory) -> None:
    """The old JSON pages spare unzipping a wheel only while its hash is the one they list."""
    share = tmp_path / "share"
    src = tmp_path / "src"
    wheel_factory(src, "a", "1.0", requires_python=">=3.8")
    wheel_factory(src, "b", "1.0")
    pip.stage(share, ["a", "b"], sources=pip.Sources(find_links=(str(src),), no_index=True))
    files = share / "pip-index" / "files"
    (files / "a-1.0-py3-none-any.whl").unlink()
    wheel_factory(files, "a", "1.0", requires_python=">=3.10", module_body="X = 2\n")
    assert pipindex.rebuild(share) == 2
    page = (share / "pip-index" / "simple" / "a" / "index.html").read_text()
    digest = hashlib.sha256((files / "a-1.0-py3-none-any.whl").read_bytes()).hexdigest()
    assert f"#sha256={digest}" in page
    assert 'data-requires-python="&gt;=3.10"' in page
    assert pipindex.load_project(share, "a")[0].requires_python == ">=3.10"
    assert_index_valid(share)
