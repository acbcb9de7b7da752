"""The pre-receive policy run inside the service (mlab.codeservice.hookserver): the bash
hook against the real endpoint, and pushes through the real service without Python."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from cs_support import Service, git

from mlab.codeservice import hook
from mlab.codeservice.hookserver import HookServer

ZERO = "0" * 40


def _bare(tmp: Path) -> Path:
    repo = tmp / "m.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    return repo


def _run_hook(tmp: Path, env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    """The installed bash pre-receive, as git runs it (cwd the mirror, stdin git's lines)."""
    hooks = tmp / "hooks"
    hook.install_hooks(hooks)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "MLAB_"))}
    return subprocess.run([str(hooks / "pre-receive")], input=stdin, text=True,
                          capture_output=True, env={**base, **env}, timeout=30)


async def _with_server(tmp: Path, repo: Path, body: object) -> object:
    server = HookServer()
    report = str(tmp / "push.json")
    hook_vars = await server.register(report, repo, {"PATH": os.environ["PATH"],
                                                     "MLAB_PUSH_REPORT": report})
    try:
        return await body(server, hook_vars, report)  # type: ignore[operator]
    finally:
        await server.close()


def test_the_bash_hook_gets_the_policy_from_the_service(tmp_path: Path) -> None:
    repo = _bare(tmp_path)
    (repo / "objects" / "tmp_objdir-incoming-abc").mkdir()

    async def body(server: HookServer, hook_vars: dict[str, str], report: str) -> None:
        def run(env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
            return _run_hook(tmp_path, env, stdin)

        ok = await asyncio.to_thread(run, {**hook_vars, "GIT_QUARANTINE_PATH": str(
            repo / "objects" / "tmp_objdir-incoming-abc")}, f"{ZERO} {'1' * 40} refs/heads/a/x\n")
        assert ok.returncode == 0, ok.stderr
        # the policy's refusal comes back as the hook's message and exit code
        no = await asyncio.to_thread(run, hook_vars, f"{ZERO} {'1' * 40} refs/notes/x\n")
        assert no.returncode == 1
        assert "only branches (refs/heads/*) and tags may be pushed" in no.stderr
        assert '"refused"' in Path(report).read_text()  # the push report, as before
        # a relative quarantine path is read from the mirror, as git gives it
        rel = await asyncio.to_thread(run, {**hook_vars, "GIT_QUARANTINE_PATH":
                                            "objects/tmp_objdir-incoming-abc"}, "")
        assert rel.returncode == 0, rel.stderr
        # a wrong token, a quarantine elsewhere, a token after its push: refused
        bad = await asyncio.to_thread(run, {**hook_vars, "MLAB_HOOK_TOKEN": "0" * 64}, "")
        assert bad.returncode == 1 and "unknown push token" in bad.stderr
        other = tmp_path / "tmp_objdir-incoming-abc"
        other.mkdir()
        elsewhere = await asyncio.to_thread(
            run, {**hook_vars, "GIT_QUARANTINE_PATH": str(other)}, "")
        assert elsewhere.returncode == 1 and "quarantine" in elsewhere.stderr
        server.forget(report)
        late = await asyncio.to_thread(run, hook_vars, "")
        assert late.returncode == 1 and "unknown push token" in late.stderr

    asyncio.run(_with_server(tmp_path, repo, body))


def test_the_hook_fails_closed_when_the_service_does_not_answer(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    done = _run_hook(tmp_path, {"MLAB_HOOK_PORT": str(port), "MLAB_HOOK_TOKEN": "x"},
                     f"{ZERO} {'1' * 40} refs/heads/a/x\n")
    assert done.returncode == 1
    assert "policy check did not answer" in done.stderr
    with socket.socket() as listener:  # one that answers garbage
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer() -> None:
            conn, _ = listener.accept()
            conn.recv(4096)
            conn.sendall(b"yes\n")
            conn.close()

        import threading

        t = threading.Thread(target=answer)
        t.start()
        done = _run_hook(tmp_path, {"MLAB_HOOK_PORT": str(listener.getsockname()[1]),
                                    "MLAB_HOOK_TOKEN": "x"}, "")
        t.join()
    assert done.returncode == 1 and "policy check did not answer" in done.stderr


def test_pushes_through_the_service_start_no_python(service: Service, work: Path,
                                                   tmp_path: Path) -> None:
    """The Python hook is made to refuse everything: pushes through the service still
    pass, and still meet the policy (so it ran in the service)."""
    from cs_support import make_upstream

    bare = make_upstream(tmp_path, "hs", commits=1)
    service.approve(f"file://{bare}", "org/hs")
    fallback = service.data / "hooks" / "pre-receive.py"
    original = fallback.read_text()
    fallback.write_text("import sys\nprint('the python hook ran', file=sys.stderr)\n"
                        "sys.exit(1)\n")
    try:
        git("clone", "-q", service.clone_url("org/hs"), str(work / "hs"))
        c = work / "hs"
        (c / "y.txt").write_text("y\n")
        git("add", ".", cwd=c)
        git("commit", "-q", "-m", "y", cwd=c)
        ok = git("push", "origin", "HEAD:refs/heads/alice/hs", cwd=c, check=False)
        assert ok.returncode == 0, ok.stderr
        assert "python hook ran" not in ok.stderr
        no = git("push", "origin", "HEAD:main", cwd=c, check=False)
        assert no.returncode != 0 and "refusing to update refs/heads/main" in no.stderr
    finally:
        fallback.write_text(original)


def test_outside_the_service_the_hook_runs_the_same_policy_in_python(tmp_path: Path) -> None:
    repo = _bare(tmp_path)
    env = {"GIT_DIR": str(repo)}
    no = _run_hook(tmp_path, env, f"{ZERO} {'1' * 40} refs/notes/x\n")
    assert no.returncode == 1
    assert "only branches (refs/heads/*) and tags may be pushed" in no.stderr
    ok = _run_hook(tmp_path, env, f"{ZERO} {ZERO} refs/heads/a/x\n")
    assert ok.returncode == 0, ok.stderr
