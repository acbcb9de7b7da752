"""The code service's ASGI application: git smart HTTP, the admin JSON API and the pages.

Invariant: every route authenticates first (:func:`mlab.codeservice.auth.authenticate`);
any path that does not name an approved mirror answers 404 whether or not it exists on
disk, so an unapproved or revoked repository is indistinguishable from a missing one.

Extending (issue 7 and later): build :class:`ServiceConfig` with ``extra_routes`` (starlette
routes, mounted before the catch-all repository route) and use ``request.app.state``:
``config`` (this object), ``store`` (:class:`~mlab.codeservice.store.Store`, whose SQLite
file may hold your own tables) and ``auth``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from mlab.codeservice import audit, githttp, mirror, names, owners, pages, reviewed
from mlab.codeservice.auth import (
    Authenticator,
    LoginLimits,
    authenticate,
    require_admin,
    require_reviewer,
)
from mlab.codeservice.csrf import CSRFMiddleware
from mlab.codeservice.hook import install_hooks
from mlab.codeservice.hookserver import HookServer
from mlab.codeservice.service_accounts import may_use_git, service_account_names
from mlab.codeservice.store import Store
from mlab.errors import MlabError
from mlab.site import Site

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the app needs; the CLI builds it from its options and the site file.

    Attributes:
        data_dir: the service's volume: ``repos/``, ``mlab.sqlite``, ``audit.log``, ``hooks/``.
        site: the loaded site (``code_service`` settings, ``users``).
        extra_routes: starlette routes of other parts (e.g. ``/api/requests``), matched
            before the repository routes.
        background_sync: run the periodic sync loop (off in most tests).
        homepod_nets: the HomePods' address ranges (``--homepod-net``); with
            ``egress.userBranches: reviewed`` every other client gets the reviewed view of
            user refs (:mod:`mlab.codeservice.reviewed`). Empty: every client is outside.
    """

    data_dir: Path
    site: Site
    extra_routes: list[BaseRoute] = field(default_factory=list)
    background_sync: bool = True
    homepod_nets: tuple[Any, ...] = ()

    @property
    def db_path(self) -> Path:
        """The SQLite database file."""
        return self.data_dir / "mlab.sqlite"

    @property
    def repos_dir(self) -> Path:
        """Mirrors live at ``<repos_dir>/<org>/<repo>.git``."""
        return self.data_dir / "repos"

    @property
    def audit_log(self) -> Path:
        """The JSON-lines audit log."""
        return self.data_dir / "audit.log"

    @property
    def hooks_dir(self) -> Path:
        """The hooks every mirror uses (``core.hooksPath``)."""
        return self.data_dir / "hooks"

    def repo_path(self, name: str) -> Path:
        """The bare repository of ``org/repo`` (the name must be validated)."""
        return self.repos_dir / f"{name}.git"


def prepare_data_dir(config: ServiceConfig) -> Store:
    """Create the data layout, (re)write the hooks and open the database."""
    for sub in (config.data_dir, config.repos_dir, config.data_dir / "tmp",
                config.data_dir / "revoked"):
        sub.mkdir(parents=True, exist_ok=True)
    install_hooks(config.hooks_dir)
    store = Store(config.db_path)
    from mlab.codeservice import quota

    owners.create_tables(config.db_path)
    quota.create_tables(config.db_path)
    reviewed.create_tables(config.db_path)
    return store


def create_app(config: ServiceConfig, store: Store | None = None) -> Starlette:
    """Build the ASGI app.

    Args:
        config: the service configuration.
        store: an opened store (default: :func:`prepare_data_dir`). Accounts are loaded by
            the caller (``mlab code-service serve`` does it from the password files).

    Returns:
        A Starlette app; ``app.state`` holds ``config``, ``store``, ``auth``.
    """
    store = store or prepare_data_dir(config)
    store.keep_open()
    cs = config.site.code_service
    lim = cs.limits
    hook_server = HookServer()
    git_settings = githttp.GitSettings(
        repos_dir=config.repos_dir, audit_log=config.audit_log,
        max_blob_size=cs.max_blob_size, home=config.data_dir / "tmp",
        timeout=float(lim.git_timeout), db_path=config.db_path, ref_policy=cs.ref_policy,
        max_refs_per_day=lim.max_refs_per_day,
        max_push_bytes_per_day=lim.max_push_bytes_per_day,
        slots=githttp.GitSlots(lim.max_git_processes, lim.max_git_processes_per_user,
                              float(lim.git_queue_wait)),
        review_branches=config.site.user_branches() == "reviewed",
        homepod_nets=tuple(config.homepod_nets),
        not_homepods=reviewed.NonHomepods(config.db_path,
                                          service_account_names(config.site)),
        hooks=hook_server,
    )
    sync_locks: dict[str, asyncio.Lock] = {}

    async def run_sync(name: str, wait: float = 600) -> dict[str, Any]:
        record = store.get_repo(name)
        if record is None:
            raise HTTPException(404, f"no approved repository {name}")
        lock = sync_locks.setdefault(name, asyncio.Lock())
        async with lock:
            try:
                names.check_upstream(record.upstream, cs.allowed_hosts, cs.allow_local_upstreams)
                result = await run_in_threadpool(
                    mirror.sync_repo, config.repo_path(name), record.upstream, wait
                )
            except MlabError as exc:
                store.record_sync(name, False, exc.one_line(), "[]")
                audit.append(config.audit_log, "sync", repo=name, ok=False,
                             error=exc.one_line())
                return {"name": name, "ok": False, "error": exc.one_line()}
        import json

        await run_in_threadpool(_record_moves, config, name, result)
        store.record_sync(name, True, "ok", json.dumps(result.conflicts))
        audit.append(config.audit_log, "sync", repo=name, ok=True, changes=result.changes,
                     conflicts=result.conflicts)
        return {"name": name, "ok": True, "changes": result.changes,
                "conflicts": result.conflicts,
                "moved": [{"ref": old, "to": new} for old, new, _sha in result.moved]}

    async def api_list(request: Request) -> Response:
        await authenticate(request)
        return JSONResponse([r.as_json() for r in store.list_repos()])

    async def api_whoami(request: Request) -> Response:
        p = await authenticate(request)
        return JSONResponse({"name": p.name, "is_admin": p.is_admin,
                             "is_reviewer": p.is_reviewer})

    async def api_approve(request: Request) -> Response:
        principal = await require_admin(request)
        try:
            body = await request.json()
        except ValueError:
            raise HTTPException(400, "body: not JSON; send {\"url\": URL, \"name\": ORG/REPO}"
                                ) from None
        if not isinstance(body, dict) or not isinstance(body.get("url"), str):
            raise HTTPException(400, "body: 'url' (the upstream URL) is required")
        url = body["url"]
        given = body.get("name")
        name = names.validate_name(str(given)) if given else names.default_name(url)
        return JSONResponse(await approve_mirror(url, name, principal.name), status_code=201)

    async def approve_mirror(url: str, name: str, by: str, **context: Any) -> dict[str, Any]:
        """Create the mirror ``name`` of ``url`` and sync it: ``mlab repo approve``'s code,
        also run when a mirror request is approved (``app.state.approve_mirror``).

        Args:
            url: the upstream URL, checked against ``codeService.allowedHosts`` here.
            name: ``org/repo``, already validated.
            by: who approves (recorded in the registry and the audit log).
            **context: extra audit fields (the request id and requester).

        Returns:
            The new mirror's record (``RepoRecord.as_json()``).

        Raises:
            UsageError: the upstream is not allowed. HTTPException: 409 when ``name`` exists.
            MlabError: the first sync failed (nothing is kept then).
        """
        names.check_upstream(url, cs.allowed_hosts, cs.allow_local_upstreams)
        if store.get_repo(name) is not None or config.repo_path(name).exists():
            raise HTTPException(409, f"{name} is already approved (revoke it first)")
        tmp = config.data_dir / "tmp" / f"approve-{name.replace('/', '__')}-{time.time_ns()}.git"
        try:
            await run_in_threadpool(mirror.init_mirror, tmp, config.hooks_dir)
            result = await run_in_threadpool(mirror.sync_repo, tmp, url)
            final = config.repo_path(name)
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(final)
        finally:
            if tmp.exists():
                await run_in_threadpool(shutil.rmtree, tmp, True)
        store.add_repo(name, url, by)
        store.record_sync(name, True, "ok", "[]")
        audit.append(config.audit_log, "approve", user=by, repo=name,
                     upstream=url, changes=len(result.changes), **context)
        record = store.get_repo(name)
        assert record is not None
        return record.as_json()

    async def api_revoke(request: Request) -> Response:
        principal = await require_admin(request)
        name = names.validate_name(f"{request.path_params['org']}/{request.path_params['repo']}")
        if not store.remove_repo(name):
            raise HTTPException(404, f"no approved repository {name}")
        path = config.repo_path(name)
        if path.exists():
            dest = config.data_dir / "revoked" / f"{name.replace('/', '__')}-{int(time.time())}.git"
            path.rename(dest)
        audit.append(config.audit_log, "revoke", user=principal.name, repo=name)
        return JSONResponse({"name": name, "revoked": True})

    async def api_sync_one(request: Request) -> Response:
        await require_admin(request)
        name = names.validate_name(f"{request.path_params['org']}/{request.path_params['repo']}")
        return JSONResponse(await run_sync(name))

    async def api_sync_all(request: Request) -> Response:
        await require_admin(request)
        return JSONResponse([await run_sync(r.name) for r in store.list_repos()])

    async def api_delete_ref(request: Request) -> Response:
        principal = await require_reviewer(request)
        name = names.validate_name(f"{request.path_params['org']}/{request.path_params['repo']}")
        if store.get_repo(name) is None:
            raise HTTPException(404, f"no approved repository {name}")
        ref = request.path_params["ref"]
        if not ref.startswith(("refs/heads/", "refs/tags/")):
            ref = "refs/heads/" + ref
        done = await run_in_threadpool(mirror.delete_user_ref, config.repo_path(name), ref)
        owner = await run_in_threadpool(owners.forget, config.db_path, name, ref)
        audit.append(config.audit_log, "ref-delete", user=principal.name, repo=name, ref=ref,
                     owner=owner, old=done["old"], backup=done["backup"])
        return JSONResponse({"name": name, "ref": ref, "owner": owner, **done})

    async def api_notices(request: Request) -> Response:
        principal = await authenticate(request)
        return JSONResponse(await run_in_threadpool(owners.notices, config.db_path,
                                                    principal.name))

    async def index(request: Request) -> Response:
        await authenticate(request)
        html = await run_in_threadpool(pages.index_page, store.list_repos(), config,
                                       git_settings.outside(request))
        return Response(html, media_type="text/html; charset=utf-8")

    async def repo_route(request: Request) -> Response:
        parsed = names.parse_repo_path(request.url.path, request.scope.get("raw_path"))
        principal = await authenticate(request)
        if not may_use_git(config.site, principal.name):  # issue 13: the Airlock, the publisher
            raise HTTPException(403, f"the account {principal.name!r} has no git access")
        if parsed is None:
            raise HTTPException(404, "not found")
        record = store.get_repo(parsed.repo)
        if record is None or not config.repo_path(parsed.repo).is_dir():
            raise HTTPException(404, "not found")
        if parsed.rest == "":
            if request.method not in ("GET", "HEAD"):
                raise HTTPException(405, "method not allowed")
            html = await run_in_threadpool(pages.repo_page, record, config,
                                           git_settings.outside(request))
            return Response(html, media_type="text/html; charset=utf-8")
        return await githttp.serve(request, parsed.repo, parsed.rest, principal, git_settings)

    routes: list[BaseRoute] = [
        Route("/", index, methods=["GET"]),
        Route("/api/whoami", api_whoami, methods=["GET"]),
        Route("/api/repos", api_list, methods=["GET"]),
        Route("/api/repos", api_approve, methods=["POST"]),
        Route("/api/repos/{org}/{repo}", api_revoke, methods=["DELETE"]),
        Route("/api/repos/{org}/{repo}/sync", api_sync_one, methods=["POST"]),
        Route("/api/sync", api_sync_all, methods=["POST"]),
        Route("/api/repos/{org}/{repo}/refs/{ref:path}", api_delete_ref, methods=["DELETE"]),
        Route("/api/notices", api_notices, methods=["GET"]),
        *config.extra_routes,
        Route("/{path:path}", repo_route, methods=["GET", "POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = None
        if config.background_sync:
            task = asyncio.create_task(_sync_loop(store, cs.sync_interval, run_sync))
        try:
            yield
        finally:
            await hook_server.close()
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, MlabError: _mlab_error},
        middleware=[Middleware(CSRFMiddleware)],
    )
    app.state.config = config
    app.state.store = store
    app.state.auth = Authenticator(
        store, set(cs.reviewers),
        LoginLimits(per_account=lim.login_failures_per_account,
                    per_address=lim.login_failures_per_address,
                    window=float(lim.login_window),
                    concurrent_hashes=lim.max_concurrent_hashes),
        audit_log=config.audit_log)
    app.state.run_sync = run_sync
    app.state.git_settings = git_settings
    app.state.on_login = git_settings.not_homepods.login
    app.state.approve_mirror = approve_mirror
    return app


def _record_moves(config: ServiceConfig, name: str, result: mirror.SyncResult) -> None:
    """Carry owners of user refs a sync moved aside, tell them, audit it; adopted refs
    lose their owner (they are upstream's now)."""
    accounts = owners.accounts(config.db_path)
    for old, new, sha in result.moved:
        text = (f"your {old} was moved to {new} because upstream created a ref of that "
                f"name (or one that clashes with it); fetch it with git fetch origin {new}")
        owner = owners.moved(config.db_path, name, old, new, accounts, text)
        audit.append(config.audit_log, "ref-moved", repo=name, ref=old, to=new, sha=sha,
                     owner=owner, reason="upstream has a ref of this name")
    for ref in result.adopted:
        owner = owners.forget(config.db_path, name, ref)
        audit.append(config.audit_log, "ref-adopted", repo=name, ref=ref, owner=owner)


async def _sync_loop(store: Store, interval: int, run_sync: Any, tick: float = 60.0) -> None:
    """Sync each mirror every ``interval`` s (plus up to 10% jitter), one at a time.

    Args:
        store: the registry (``last_sync`` says when a mirror is due).
        interval: seconds, the site's ``codeService.syncInterval``.
        run_sync: ``async (name, wait) -> dict``; ``wait=0`` skips a mirror whose sync is
            already running.
        tick: seconds between looks at the registry (jittered +-50 %).
    """
    while True:
        await asyncio.sleep(min(tick, interval / 10) * random.uniform(0.5, 1.5))
        now = time.time()
        for record in store.list_repos():
            due = (record.last_sync or 0) + interval * random.uniform(1.0, 1.1)
            if now >= due:
                try:
                    await run_sync(record.name, 0)
                except Exception:  # noqa: BLE001 - the loop must survive any one repository
                    log.exception("[mlab/%s] background sync failed", record.name)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if _wants_json(request):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code,
                            headers=headers)
    return PlainTextResponse(f"{exc.detail}\n", status_code=exc.status_code, headers=headers)


async def _mlab_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, MlabError)
    # A temporary failure (upstream unreachable, a busy lock) is 503: try again later. A
    # permanent one the request caused is 4xx: 422 when the upstream refused the URL
    # (mirror.UpstreamError), 400 for other bad input.
    status = 503 if exc.retryable else int(getattr(exc, "http_status", 400))
    return JSONResponse({"error": exc.one_line()}, status_code=status)
