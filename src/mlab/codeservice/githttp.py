"""git smart HTTP through ``git http-backend`` run as a streaming CGI (RFC 3875).

Invariant: no pack is ever held in memory. The request body is copied to the CGI's stdin
chunk by chunk as the client sends it (with back-pressure: ``drain`` after each write), and
the CGI's stdout is streamed to the client in chunks of ``CHUNK`` bytes. A
``Content-Encoding: gzip`` request body is passed through with ``HTTP_CONTENT_ENCODING``;
``git http-backend`` inflates it itself. Only the smart protocol is served
(``info/refs?service=...``, ``git-upload-pack``, ``git-receive-pack``); the dumb protocol's
loose-object paths are 404, so every read goes through ``upload-pack`` and every write
through ``receive-pack`` and its hooks.

Why a subprocess per request is safe under a kill: if the service dies mid-push, the CGI's
stdin closes early, ``receive-pack`` sees a truncated pack and updates no ref; the objects
it received sit in a quarantine directory that never becomes visible.

Denial of service (issue 13, item 1): the client's ``Content-Length`` is never passed to
git. git 2.39's ``http-backend`` given ``CONTENT_LENGTH=1000`` and a stdin that ends after
4 bytes loops on EOF at full CPU forever; without it git reads the body to EOF, and the
service closes git's stdin when the body ends (starlette has already checked the length
against what arrived). Every git request runs in its own process group, killed when the
client goes away before its body is complete, when the client goes away during a fetch's
answer, and when ``limits.gitTimeout`` passes. :class:`GitSlots` caps git requests per
account (429) and in total (503), both with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from mlab.codeservice import audit
from mlab.codeservice.auth import Principal
from mlab.codeservice.gitproc import CHUNK, GitProcess, spawn_git
from mlab.codeservice.hookserver import HookServer

log = logging.getLogger(__name__)

SERVICES = ("git-upload-pack", "git-receive-pack")
_background: set[asyncio.Task[None]] = set()
"""Finishing tasks of pushes whose client went away (kept referenced until done)."""
_watchers: dict[int, asyncio.Task[None]] = {}
"""Disconnect watchers of running fetches, by the id of their ``counts`` dict."""
_configs: dict[int, str] = {}
"""Per-request git config files of outside requests (:mod:`reviewed`), by the id of their
``counts`` dict; removed when the request finishes."""
_ENV_KEEP = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH", "VIRTUAL_ENV")


@dataclass(frozen=True)
class GitSettings:
    """What the CGI needs from the service.

    Attributes:
        repos_dir: ``GIT_PROJECT_ROOT``; mirrors live at ``<repos_dir>/<org>/<repo>.git``.
        audit_log: the JSON-lines audit file.
        max_blob_size: bytes; passed to the pre-receive hook as ``MLAB_MAX_BLOB``.
        home: a directory used as ``HOME`` for git (keeps users' configs out).
        timeout: seconds a git request may run before its process group is killed.
        db_path: the service's SQLite file (the hooks read ref owners and quotas there).
        ref_policy: ``creator`` or ``namespace`` (site ``codeService.refPolicy``).
        max_refs_per_day: ref updates per user per UTC day (the hook enforces it).
        max_push_bytes_per_day: pushed bytes per user per UTC day.
        slots: the shared counter of running git requests (None: no cap).
        review_branches: site ``egress.userBranches`` is ``reviewed``: clients outside
            ``homepod_nets`` see only upstream and reviewed refs (:mod:`reviewed`).
        homepod_nets: the HomePods' address ranges.
    """

    repos_dir: Path
    audit_log: Path
    max_blob_size: int
    home: Path
    timeout: float = 3600.0
    db_path: Path | None = None
    ref_policy: str = "creator"
    max_refs_per_day: int = 1000
    max_push_bytes_per_day: int = 4 * 1024**3
    slots: GitSlots | None = None
    review_branches: bool = False
    homepod_nets: tuple[Any, ...] = ()
    not_homepods: Any = None
    """:class:`mlab.codeservice.reviewed.NonHomepods`: addresses in ``homepod_nets`` that
    service accounts logged in from (the Airlock, the portal); None: none known."""
    hooks: HookServer | None = None
    """Runs the pre-receive policy in the service (:mod:`hookserver`); None: the hook starts
    Python itself (27-38 ms more per push)."""

    def outside(self, request: Request) -> bool:
        """Whether this request gets the reviewed (outside) view of user refs."""
        from mlab.codeservice.reviewed import is_inside

        if not self.review_branches:
            return False
        address = request.client.host if request.client else None
        if self.not_homepods is not None and address in self.not_homepods:
            return True
        return not is_inside(address, self.homepod_nets)


class GitSlots:
    """Caps running git requests per account and in total (one event loop: no lock).

    A request beyond a cap waits up to ``wait`` seconds for a slot (a clone of 20 repos at
    once by one user queues instead of failing), then gets 429 (its account's cap) or 503
    (the service's), both with ``Retry-After``.

    Args:
        total: requests at once over all accounts.
        per_user: requests at once per account.
        wait: seconds a request may wait for a slot.
    """

    def __init__(self, total: int, per_user: int, wait: float = 30.0) -> None:
        self.total = total
        self.per_user = per_user
        self.wait = wait
        self.running: dict[str, int] = {}
        self._changed: asyncio.Condition | None = None
        self._waiting = 0

    def _free(self, user: str) -> bool:
        return (self.running.get(user, 0) < self.per_user
                and sum(self.running.values()) < self.total)

    async def take(self, user: str) -> Response | None:
        """Reserve a slot for ``user``; a 429/503 response when none came free in time."""
        if not self._waiting and self._free(user):  # nobody queued: no condition, no task
            self.running[user] = self.running.get(user, 0) + 1
            return None
        if self._changed is None:
            self._changed = asyncio.Condition()
        self._waiting += 1
        try:
            async with self._changed:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self._free(user)), self.wait)
                if self._free(user):
                    self.running[user] = self.running.get(user, 0) + 1
                    return None
        finally:
            self._waiting -= 1
        if self.running.get(user, 0) >= self.per_user:
            return PlainTextResponse(
                f"too many git requests of {user} at once (limit {self.per_user}, site "
                "codeService.limits.maxGitProcessesPerUser); retry when one has finished\n",
                429, headers={"Retry-After": "10"})
        return PlainTextResponse(
            f"the code service runs {self.total} git requests already (site "
            "codeService.limits.maxGitProcesses); retry in a moment\n",
            503, headers={"Retry-After": "10"})

    def give(self, user: str) -> None:
        """Release a slot taken by :meth:`take` and wake the waiters."""
        left = self.running.get(user, 0) - 1
        if left > 0:
            self.running[user] = left
        else:
            self.running.pop(user, None)
        if self._changed is not None and self._waiting:
            changed = self._changed

            async def wake() -> None:
                async with changed:
                    changed.notify_all()

            task = asyncio.get_running_loop().create_task(wake())
            _background.add(task)
            task.add_done_callback(_background.discard)


def _service_of(request: Request, rest: str) -> str | None:
    if rest == "/info/refs" and request.method in ("GET", "HEAD"):
        service = request.query_params.get("service")
        return service if service in SERVICES else None
    if rest in ("/git-upload-pack", "/git-receive-pack") and request.method == "POST":
        return rest[1:]
    return None


async def serve(
    request: Request, repo: str, rest: str, principal: Principal, settings: GitSettings
) -> Response:
    """Answer one smart-HTTP request for the mirror ``repo`` (``org/repo``, validated).

    Returns:
        A streaming response with the CGI's status and headers, or 404 for endpoints of the
        dumb protocol and unknown services.
    """
    service = _service_of(request, rest)
    if service is None:
        return PlainTextResponse("not found (only git's smart HTTP protocol is served)\n", 404)
    if settings.slots is not None:
        refused = await settings.slots.take(principal.name)
        if refused is not None:
            return refused
    try:
        return await _serve_slot(request, repo, rest, service, principal, settings)
    except BaseException:
        if settings.slots is not None:
            settings.slots.give(principal.name)
        raise


def _cgi_env(request: Request, repo: str, rest: str, principal: Principal,
             settings: GitSettings) -> dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    env.update({
        "HOME": str(settings.home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_PROJECT_ROOT": str(settings.repos_dir),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": f"/{repo}.git{rest}",
        "REQUEST_METHOD": request.method,
        "QUERY_STRING": request.url.query,
        "REMOTE_USER": principal.name,
        "REMOTE_ADDR": request.client.host if request.client else "",
        "CONTENT_TYPE": request.headers.get("content-type", ""),
        "SERVER_PROTOCOL": "HTTP/1.1",
        "GATEWAY_INTERFACE": "CGI/1.1",
        "MLAB_MAX_BLOB": str(settings.max_blob_size),
        "MLAB_USER": principal.name,
        "MLAB_REPO": repo,
        "MLAB_REF_POLICY": settings.ref_policy,
        "MLAB_MAX_REFS_PER_DAY": str(settings.max_refs_per_day),
    })
    if settings.db_path is not None:
        env["MLAB_DB"] = str(settings.db_path)
    # No CONTENT_LENGTH, ever: git reads the body until EOF (the module docstring says why).
    if "content-encoding" in request.headers:
        env["HTTP_CONTENT_ENCODING"] = request.headers["content-encoding"]
    if "git-protocol" in request.headers and not settings.outside(request):
        # Outside HomePods only protocol v0 is spoken: v2 fetches any object by id
        # (mlab.codeservice.reviewed explains).
        env["GIT_PROTOCOL"] = request.headers["git-protocol"]
    return env


def _record_push(db_path: Path, repo: str, user: str, updated: list[dict[str, str]],
                 nbytes: int) -> None:
    """After a push: owners of created refs, the user's daily refs and bytes (one
    connection, one transaction)."""
    from mlab.codeservice import owners, quota

    db = owners.connect(db_path)
    try:
        with db:
            owners.record(db, repo, user, [(u["old"], u["new"], u["ref"]) for u in updated])
            quota.add(db, user, len(updated), nbytes)
    finally:
        db.close()


def _kill_group(proc: GitProcess) -> None:
    """SIGKILL git's whole process group (http-backend, receive-pack or upload-pack, hooks)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _serve_slot(request: Request, repo: str, rest: str, service: str,
                      principal: Principal, settings: GitSettings) -> Response:
    report = None
    env = _cgi_env(request, repo, rest, principal, settings)
    config: list[tuple[str, str]] = []
    if service == "git-receive-pack" and settings.db_path is not None:
        from mlab.codeservice import quota

        left = await asyncio.get_running_loop().run_in_executor(
            None, quota.bytes_left, settings.db_path, principal.name,
            settings.max_push_bytes_per_day)
        if left <= 0:
            # Refused at the ref advertisement too: git shows a text/plain error body then.
            if settings.slots is not None:
                settings.slots.give(principal.name)
            return PlainTextResponse(
                f"{principal.name} pushed {settings.max_push_bytes_per_day} bytes today "
                "already (site codeService.limits.maxPushBytesPerDay); try again "
                "tomorrow (UTC) or ask the admin\n", 429)
        # git's own limit on the pack it receives: the push fails cleanly beyond it.
        config.append(("receive.maxInputSize", str(left)))
    outside_cfg = None
    if settings.outside(request):
        from mlab.codeservice import reviewed

        try:
            shown, hidden = await asyncio.get_running_loop().run_in_executor(
                None, reviewed.outside_view, settings.repos_dir / f"{repo}.git",
                settings.db_path, repo)
        except Exception:  # noqa: BLE001 - fail closed: nothing of the users' is shown
            log.exception("[mlab/%s] computing the reviewed view failed; hiding user refs",
                          repo)
            shown, hidden = [], []
        outside_cfg = reviewed.write_config(shown, hidden, settings.home)
        config.append(("include.path", outside_cfg))
    if service == "git-receive-pack" and request.method == "POST":
        fd, report = tempfile.mkstemp(prefix="push-", suffix=".json", dir=settings.home)
        os.close(fd)
        env["MLAB_PUSH_REPORT"] = report
        if settings.hooks is not None:
            env.update(await settings.hooks.register(
                report, settings.repos_dir / f"{repo}.git",
                {k: v for k, v in env.items() if k.startswith("MLAB_") or k in _ENV_KEEP
                 or k in ("HOME", "GIT_CONFIG_NOSYSTEM")}))

    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    if config:
        env["GIT_CONFIG_COUNT"] = str(len(config))
    try:
        proc = await spawn_git(env)
    except BaseException:
        if report and settings.hooks is not None:
            settings.hooks.forget(report)
        raise
    counts = {"in": 0, "out": 0}
    if outside_cfg:
        _configs[id(counts)] = outside_cfg
    pump = asyncio.create_task(_pump_body(request, proc, counts, service))
    errors = asyncio.create_task(_collect_stderr(proc))
    watchdog = asyncio.create_task(_watchdog(proc, settings.timeout, counts))
    finish_args = (proc, pump, errors, watchdog, request, repo, service, principal,
                   settings, counts, report)
    assert proc.stdout is not None
    status, headers = await _read_cgi_headers(proc.stdout)
    if not headers and status == 200:
        # No CGI header at all: http-backend failed (or was killed) before answering.
        await _finish(*finish_args, 502)
        log.error("[mlab/%s] git http-backend gave no answer: %s", repo,
                  (await errors).strip()[-300:])
        return PlainTextResponse("git http-backend failed; see the service log\n", 502)

    async def body() -> AsyncIterator[bytes]:
        finished = False
        try:
            while chunk := await proc.stdout.read(CHUNK):  # type: ignore[union-attr]
                counts["out"] += len(chunk)
                yield chunk
            finished = True
            counts["done"] = 1
        finally:
            if not finished and service == "git-upload-pack":
                _kill_group(proc)
            if not finished:
                # Let receive-pack finish its ref transaction (the watchdog still bounds it);
                # drain whatever it says.
                task = asyncio.get_running_loop().create_task(_finish(*finish_args, status))
                _background.add(task)
                task.add_done_callback(_background.discard)
            else:
                await _finish(*finish_args, status)

    return _DuplexResponse(body(), status_code=status, headers=headers)


async def _watchdog(proc: GitProcess, timeout: float,
                    counts: dict[str, int]) -> None:
    """Kill git's process group when it outlives ``timeout`` seconds."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(proc.wait()), timeout)
        return
    counts["timeout"] = 1
    log.warning("git request ran over %s s: killing its processes", timeout)
    _kill_group(proc)


class _DuplexResponse(StreamingResponse):
    """A streaming response that leaves ``receive`` to the request-body pump.

    Starlette's ``StreamingResponse`` (ASGI spec < 2.4) listens for a disconnect by calling
    ``receive`` itself, racing the pump for request-body messages: a message it takes is
    lost to git. Here only the pump receives; a disconnect shows as a failing ``send``.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.stream_response(send)
        except OSError:
            log.info("client went away during a git response")


async def _watch_disconnect(request: Request, proc: GitProcess,
                            counts: dict[str, int]) -> None:
    """After a fetch's request body: kill upload-pack when the client goes away.

    uvicorn answers ``receive`` with ``http.disconnect`` once the client is gone (or the
    response is complete; :func:`_finish` cancels this task before that). Only fetches:
    receive-pack may be inside its ref transaction, and a SIGKILL there would leave
    ``.lock`` files behind, so a push whose body arrived completes (bounded by the deadline).
    """
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            if proc.returncode is None and not counts.get("done"):
                counts["aborted"] = 1
                _kill_group(proc)
            return


async def _pump_body(request: Request, proc: GitProcess,
                     counts: dict[str, int], service: str) -> None:
    assert proc.stdin is not None
    try:
        async for chunk in request.stream():
            if not chunk:
                continue
            if counts["in"] == 0:
                counts["ls_refs"] = int(chunk.startswith(b"0014command=ls-refs"))
            counts["in"] += len(chunk)
            await proc.stdin.write(chunk)
    except ClientDisconnect:
        # The client left before its body was complete: nothing git does now can reach it,
        # and a partial push must not be applied. receive-pack has not started its ref
        # transaction before the pack is complete, so killing it loses nothing.
        counts["aborted"] = 1
        _kill_group(proc)
    except (BrokenPipeError, ConnectionResetError):
        pass
    else:
        if service == "git-upload-pack":
            watcher = asyncio.get_running_loop().create_task(
                _watch_disconnect(request, proc, counts))
            _watchers[id(counts)] = watcher
    finally:
        proc.stdin.close()


async def _collect_stderr(proc: GitProcess) -> str:
    assert proc.stderr is not None
    data = await proc.stderr.read(65536)
    while await proc.stderr.read(65536):
        pass
    return data.decode("utf-8", "replace")


async def _read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status = 200
    headers: dict[str, str] = {}
    while True:
        line = await stdout.readline()
        text = line.decode("latin-1").rstrip("\r\n")
        if not text:
            break
        name, _, value = text.partition(":")
        value = value.strip()
        if name.lower() == "status":
            status = int(value.split()[0])
        else:
            headers[name] = value
    return status, headers


async def _finish(proc: GitProcess, pump: asyncio.Task[None],
                  errors: asyncio.Task[str], watchdog: asyncio.Task[None], request: Request,
                  repo: str, service: str, principal: Principal, settings: GitSettings,
                  counts: dict[str, int], report: str | None, status: int) -> None:
    try:
        with contextlib.suppress(Exception):
            while await proc.stdout.read(CHUNK):  # type: ignore[union-attr]
                pass
        code = await proc.wait()
        if not pump.done():
            pump.cancel()  # git is gone (killed, or done early): the rest of the body is moot
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        watchdog.cancel()
        watcher = _watchers.pop(id(counts), None)
        if watcher is not None:
            watcher.cancel()
        with contextlib.suppress(OSError, KeyError):
            os.unlink(_configs.pop(id(counts)))
        stderr = await errors
    finally:
        proc.close()
        if settings.slots is not None:
            settings.slots.give(principal.name)
    if code != 0 and stderr.strip():
        log.warning("[mlab/%s] git http-backend (%s) exited %s: %s", repo, service, code,
                    stderr.strip().splitlines()[-1])
    refused_refs: list[dict[str, str]] = []
    refused = None
    updated: list[dict[str, str]] = []
    if report:
        from mlab.codeservice.hook import read_report

        if settings.hooks is not None:
            settings.hooks.forget(report)

        with contextlib.suppress(OSError):
            refused_refs, refused, updated = read_report(
                Path(report).read_text(encoding="utf-8"))
        with contextlib.suppress(OSError):
            os.unlink(report)
    if service == "git-receive-pack" and settings.db_path is not None and (
            counts["in"] or updated):
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, _record_push, settings.db_path, repo, principal.name, updated,
                counts["in"])
        except Exception:  # noqa: BLE001 - the push stands; the books are best effort
            log.exception("[mlab/%s] recording the push of %s failed", repo, principal.name)
    aborted = None
    if counts.get("timeout"):
        aborted = f"killed after {settings.timeout:g} s (site codeService.limits.gitTimeout)"
    elif counts.get("aborted"):
        aborted = "the client went away before its request was complete"
    if (request.url.path.endswith("/info/refs") or counts.get("ls_refs")) and not aborted:
        return  # ref advertisements (v0 GET, v2 ls-refs); the fetch or push itself is logged
    fields: dict[str, object] = {
        "user": principal.name, "repo": repo, "remote": request.client.host
        if request.client else None, "status": status, "bytes_in": counts["in"],
        "bytes_out": counts["out"],
    }
    event = "fetch"
    if service == "git-receive-pack":
        event = "push"
        refs = refused_refs if refused else updated
        if not refs and counts["in"] <= 4 and not aborted:
            return  # git's auth probe ("0000") before a large chunked push
        fields["refs"] = refs
        if refused:
            fields["refused"] = refused
    if aborted:
        fields["aborted"] = aborted
    try:
        audit.append(settings.audit_log, event, **fields)
    except OSError as exc:
        log.error("audit log %s: %s", settings.audit_log, exc)
