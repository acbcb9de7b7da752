"""The requests JSON API (``/api/requests``) and page (``/requests``) of the code service.

Invariant: every handler authenticates first (the code service's Basic auth), then lets
:class:`~mlab.requests.store.RequestStore` decide, so the API can never allow what the state
machine forbids. Errors answer ``{"error": one line, "hint": optional}`` with 400, 403, 404 or
409; a request the caller may not see is a 404, like one that does not exist.

Routes (JSON unless stated)::

    GET  /api/requests?all=1&kind=K&state=S&history=1   list (all: reviewers only)
    POST /api/requests                                  submit (see model.validate_submission)
    GET  /api/requests/packages                         approved package scripts, approval order
    GET  /api/requests/{id}                             one request with history
    POST /api/requests/{id}/{action}  {"comment": str}  review|approve|reject|revoke|cancel
    GET  /api/requests/exports                          every export, for the publisher
    GET  /api/requests/{id}/files/{path}                an approved export's file, owner only
                                                        (mlab.requests.delivery)
    GET  /api/requests/{id}/diff                        a branch request's commits with their
                                                        patches (text; owner and reviewers)
    POST /api/requests/{id}/notes {"action", "comment"} publisher notes

A ``mirror`` request's last approval first runs the code service's ``approve_mirror`` (the
code of ``mlab repo approve``: the mirror appears and syncs); only when that succeeds is the
approval recorded. A ``branch`` request names a user ref of a mirror; the code service fills
in its tip, base and commits from its own repository, only the ref's owner may ask, and its
approval (revocation) exposes (hides) exactly that commit to clients outside the HomePods
(:mod:`mlab.codeservice.reviewed`). Every request event is also appended to the code
service's audit log.

    GET  /requests                                      HTML page: requests with history

Request bodies are capped at :data:`MAX_BODY` bytes (an install script and its transcript
fit easily; export files travel through the outbox, never through this API).
"""

from __future__ import annotations

import builtins
import html
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mlab.errors import MlabError
from mlab.requests.delivery import Delivery, exports_dir_from_env
from mlab.requests.model import (
    Conflict,
    Forbidden,
    InvalidRequest,
    Kind,
    NotFound,
    RequestError,
    State,
    actor_from,
    validate_submission,
)
from mlab.requests.notify import Notifier, make_event
from mlab.requests.store import RequestStore
from mlab.site import PUBLISHER_ACCOUNT

MAX_BODY = 2 * 1024 * 1024
"""Largest request body accepted, in bytes."""

DB_NAME = "requests.sqlite"
"""The store's file name in the code service's data directory."""

Authenticate = Callable[[Request], Awaitable[Any]]
MirrorPolicy = Callable[[str, str | None], str]
"""``(url, name or None) -> org/repo``; raises :class:`~mlab.errors.MlabError` for an upstream
the site does not allow (``codeService.allowedHosts``)."""


def _error(exc: RequestError) -> JSONResponse:
    body: dict[str, Any] = {"error": exc.message}
    if exc.hint:
        body["hint"] = exc.hint
    return JSONResponse(body, status_code=exc.status)


async def _read_json(request: Request) -> Any:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_BODY:
        raise InvalidRequest(f"body: larger than {MAX_BODY} bytes")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise InvalidRequest(f"body: larger than {MAX_BODY} bytes")
    try:
        return json.loads(data or b"{}")
    except ValueError:
        raise InvalidRequest("body: not valid JSON") from None


class RequestsApp:
    """Handlers bound to one store, the site's reviewers and a notifier.

    Args:
        store: the request store.
        authenticate: ``async (request) -> principal`` (raises 401); the principal has
            ``name``, ``is_admin``, ``is_reviewer``. Default: the code service's.
        reviewers: ``codeService.reviewers``, also consulted for the reviewer role.
        notifier: called in the background after each transition. None: no notifications.
        may_export: whether a user may submit export requests (the site's
            ``egress.exportRequesters``); None: everyone.
        publishers: accounts that run the export publisher (``mlab-publisher``):
            they may read every export's file list and add notes, and nothing else.
        mirror_policy: checks a mirror request's upstream against the site and names it.
            None: mirror requests are refused.

    Mirror requests also use the code service's ``app.state``: ``store`` (an existing mirror
    is refused at submission), ``approve_mirror`` (run when the last approval is given,
    before it is recorded) and ``config.audit_log`` (every request event is appended).
    """

    def __init__(self, store: RequestStore, *, authenticate: Authenticate | None = None,
                 reviewers: Sequence[str] = (), notifier: Notifier | None = None,
                 publishers: Sequence[str] = (),
                 may_export: Callable[[str], bool] | None = None,
                 mirror_policy: MirrorPolicy | None = None) -> None:
        if authenticate is None:
            from mlab.codeservice.auth import authenticate as code_auth

            authenticate = code_auth
        self.store = store
        self.authenticate = authenticate
        self.reviewers = tuple(reviewers)
        self.notifier = notifier
        self.publishers = tuple(publishers)
        self.may_export = may_export
        self.mirror_policy = mirror_policy

    async def _actor(self, request: Request):  # type: ignore[no-untyped-def]
        return actor_from(await self.authenticate(request), self.reviewers)

    async def list(self, request: Request) -> Response:
        """``GET /api/requests``."""
        actor = await self._actor(request)
        q = request.query_params
        try:
            items = await run_in_threadpool(
                self.store.list, actor,
                all_users=q.get("all") in ("1", "true"),
                kind=q.get("kind") or None, state=q.get("state") or None,
                history=q.get("history") in ("1", "true"),
            )
        except RequestError as exc:
            return _error(exc)
        return JSONResponse({"requests": items})

    async def create(self, request: Request) -> Response:
        """``POST /api/requests``: 201 with the new request."""
        actor = await self._actor(request)
        try:
            fields: dict[str, Any] = validate_submission(await _read_json(request))
            # Both let data leave HomePods: egress.exportRequesters bounds both.
            if (fields["kind"] in (Kind.EXPORT, Kind.BRANCH) and self.may_export is not None
                    and not self.may_export(actor.name)):
                raise Forbidden(f"{actor.name!r} may not request exports on this site"
                                + (" (a branch review lets data out too)"
                                   if fields["kind"] == Kind.BRANCH else ""),
                                hint="an admin can add you to egress.exportRequesters")
            if fields["kind"] == Kind.MIRROR:
                fields["payload"] = self._check_mirror(request, fields["payload"])
            if fields["kind"] == Kind.BRANCH:
                fields["payload"] = await run_in_threadpool(
                    _branch_facts, request.app.state, actor.name, fields["payload"])
            item = await run_in_threadpool(
                self.store.create, kind=fields["kind"], owner=actor.name,
                reason=fields["reason"], payload=fields["payload"],
            )
        except RequestError as exc:
            return _error(exc)
        _audit(request, item, item["history"])
        return JSONResponse(item, status_code=201, background=self._notify(item, item["history"]))

    def _check_mirror(self, request: Request, payload: dict[str, Any]) -> dict[str, Any]:
        """A mirror request's URL under the site's rules, and its ``org/repo`` name.

        Raises:
            InvalidRequest: the upstream is not allowed or the name is bad.
            Conflict: the code service already has that mirror.
        """
        if self.mirror_policy is None:
            raise InvalidRequest("kind: this server takes no mirror requests")
        try:
            name = self.mirror_policy(str(payload["url"]), payload.get("name"))
        except RequestError:
            raise
        except MlabError as exc:
            raise InvalidRequest(exc.message, exc.hint) from None
        repos = getattr(request.app.state, "store", None)
        if repos is not None and repos.get_repo(name) is not None:
            raise Conflict(f"{name} is already on the code service",
                           hint=f"clone it: git clone http://<code host>/{name}")
        return {"url": payload["url"], "name": name}

    async def _approve_mirror(self, request: Request, rid: int, actor: Any,
                              comment: str | None) -> Response | None:
        """Create the mirror when this approval is the last one needed, before recording it.

        Returns:
            None when the approval may be recorded; an error response when the mirror could
            not be made (the request then stays where it was, and may be approved again).
        """
        current, steps = await run_in_threadpool(self.store.preview, rid, "approve", actor, comment)
        if current["kind"] != Kind.MIRROR or steps[-1].to_state != State.APPROVED:
            return None
        approve = getattr(request.app.state, "approve_mirror", None)
        if approve is None:
            return _error(Conflict("mirror requests are approved only by the code service"))
        hint = "the request stays in review; fix the cause and approve again, or reject it"
        try:
            await approve(current["url"], current["name"], actor.name,
                          request_id=rid, requested_by=current["owner"])
        except HTTPException as exc:
            return JSONResponse({"error": f"request {rid}: {exc.detail}", "hint": hint},
                                status_code=exc.status_code)
        except MlabError as exc:
            return JSONResponse({"error": f"request {rid}: {exc.one_line()}", "hint": hint},
                                status_code=503 if exc.retryable
                                else int(getattr(exc, "http_status", 400)))
        return None

    async def get(self, request: Request) -> Response:
        """``GET /api/requests/{id}``."""
        actor = await self._actor(request)
        try:
            item = await run_in_threadpool(self.store.get, request.path_params["id"], actor)
        except RequestError as exc:
            return _error(exc)
        return JSONResponse(item)

    async def act(self, request: Request) -> Response:
        """``POST /api/requests/{id}/{action}``."""
        actor = await self._actor(request)
        rid = request.path_params["id"]
        action = request.path_params["action"]
        try:
            body = await _read_json(request)
            if not isinstance(body, dict):
                raise InvalidRequest("body: a JSON object is required")
            if action == "notes":
                event = await run_in_threadpool(
                    self.store.note, rid, actor, str(body.get("action", "note")),
                    str(body.get("comment", "")), actor.name in self.publishers,
                )
                return JSONResponse(event, status_code=201)
            comment = body.get("comment")
            if comment is not None and not isinstance(comment, str):
                raise InvalidRequest("comment: a string is required")
            if action == "approve":
                refused = await self._approve_mirror(request, rid, actor, comment)
                if refused is not None:
                    return refused
            item, recorded = await run_in_threadpool(self.store.act, rid, action, actor, comment)
        except RequestError as exc:
            return _error(exc)
        if item["kind"] == Kind.BRANCH and action in ("approve", "revoke"):
            await run_in_threadpool(_expose_branch, request.app.state, item)
        _audit(request, item, recorded)
        return JSONResponse(item, background=self._notify(item, recorded))

    async def diff(self, request: Request) -> Response:
        """``GET /api/requests/{id}/diff``: what a branch request would let out, as text."""
        actor = await self._actor(request)
        try:
            item = await run_in_threadpool(self.store.get, request.path_params["id"], actor)
            settings = getattr(request.app.state, "git_settings", None)
            mine = item["owner"] == actor.name
            if (mine or not actor.reviews) and (settings is None or settings.outside(request)):
                # The patch is the very data under review: outside the HomePods only the
                # other reviewers read it (its owner, reviewer or not, reads it in the
                # HomePod; otherwise asking would be the way out).
                raise Forbidden(f"request {item['id']}: its patch is shown outside the "
                                "HomePods to reviewers other than its owner only",
                                hint="read it in your HomePod: mlab request show ID")
            if item["kind"] != Kind.BRANCH:
                raise InvalidRequest(f"request {item['id']} is a {item['kind']} request; "
                                     "only branch requests have a diff")
            config = getattr(request.app.state, "config", None)
            if config is None:
                raise Conflict("branch requests are shown only by the code service")
            from mlab.codeservice.reviewed import review_text

            path = config.repo_path(item["repo"])
            if not path.is_dir():
                raise Conflict(f"request {item['id']}: {item['repo']} is no longer on the "
                               "code service")
            text, _cut = await run_in_threadpool(review_text, path, item["commit"])
        except RequestError as exc:
            return _error(exc)
        header = (f"request {item['id']}: {item['ref']} of {item['repo']} at {item['sha']} "
                  f"({item['commits']} new commit(s), base {item['base'][:12]})\n\n")
        return Response(header + text, media_type="text/plain; charset=utf-8")

    async def packages(self, request: Request) -> Response:
        """``GET /api/requests/packages``: reviewers and the admin (the image builder)."""
        actor = await self._actor(request)
        if not actor.reviews:
            return _error(Forbidden(f"{actor.name!r} is not a reviewer; the image build runs as admin"))
        return JSONResponse({"packages": await run_in_threadpool(self.store.approved_packages)})

    async def exports(self, request: Request) -> Response:
        """``GET /api/requests/exports``: every export request, for the Airlock publisher."""
        actor = await self._actor(request)
        if not (actor.reviews or actor.name in self.publishers):
            return _error(Forbidden(f"{actor.name!r} is neither a reviewer nor the publisher"))
        return JSONResponse({"requests": await run_in_threadpool(self.store.exports_for_publisher)})

    async def page(self, request: Request) -> Response:
        """``GET /requests``: HTML list with history; reviewers see every user's requests."""
        actor = await self._actor(request)
        items = await run_in_threadpool(
            self.store.list, actor, all_users=actor.reviews, history=True
        )
        return HTMLResponse(render_page(actor.name, actor.reviews, items))

    def _notify(self, item: dict[str, Any],
                recorded: builtins.list[dict[str, Any]]) -> BackgroundTask | None:
        if self.notifier is None or not self.notifier.enabled:
            return None
        return BackgroundTask(self.notifier.send, [make_event(item, r) for r in recorded])

    def routes(self) -> builtins.list[BaseRoute]:
        """The API mounted at ``/api/requests`` and the page at ``/requests``."""
        base = "/api/requests"
        return [
            Route(base, self.list, methods=["GET"]),
            Route(base, self.create, methods=["POST"]),
            Route(f"{base}/packages", self.packages, methods=["GET"]),
            Route(f"{base}/exports", self.exports, methods=["GET"]),
            Route(f"{base}/{{id:int}}", self.get, methods=["GET"]),
            Route(f"{base}/{{id:int}}/diff", self.diff, methods=["GET"]),
            Route(f"{base}/{{id:int}}/{{action:str}}", self.act, methods=["POST"]),
            Route("/requests", self.page, methods=["GET"]),
        ]


def _branch_facts(state: Any, user: str, payload: dict[str, Any]) -> dict[str, Any]:
    """A branch request's payload, completed from the code service's own repository.

    Returns:
        ``{"repo", "ref", "sha" (the ref's object), "commit" (peeled), "base" (the upstream
        commit it starts from), "commits" (count)}``.

    Raises:
        InvalidRequest, NotFound, Forbidden, Conflict: no code service, no such mirror or
        ref, not the requester's ref, nothing new in it, or already approved.
    """
    import subprocess

    from mlab.codeservice import names, owners, reviewed
    from mlab.codeservice.mirror import UPSTREAM

    config = getattr(state, "config", None)
    repos = getattr(state, "store", None)
    if config is None or repos is None:
        raise InvalidRequest("kind: this server takes no branch requests")
    try:
        repo = names.validate_name(payload["repo"])
    except MlabError as exc:
        raise InvalidRequest(f"repo: {exc.message}") from None
    path = config.repo_path(repo)
    if repos.get_repo(repo) is None or not path.is_dir():
        raise NotFound(f"repo: no repository {repo} on the code service")
    ref = payload["ref"]
    marker = f"{UPSTREAM}{ref.removeprefix('refs/')}"
    out = subprocess.run(["git", "-C", str(path), "for-each-ref",
                          "--format=%(refname) %(objectname) %(*objectname)", ref, marker],
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
                         check=True).stdout
    # for-each-ref patterns also match below a slash (feat matches feat/x): exact names only.
    found = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.strip()}
    if marker in found:
        raise Conflict(f"ref: {ref} mirrors upstream; it is fetchable already")
    if ref not in found:
        raise NotFound(f"ref: {repo} has no {ref}", hint="push it from your HomePod first")
    sha = found[ref][0]
    commit = found[ref][1] if len(found[ref]) > 1 else sha
    owner = owners.owners(config.db_path, repo, [ref]).get(ref) or owners.namespace_of(
        ref, owners.accounts(config.db_path))
    if owner != user:
        raise Forbidden(f"ref: {ref} of {repo} is {owner or 'nobody'}'s; only its owner "
                        "asks for its review")
    if sha in reviewed.approved_tips(config.db_path, repo).get(ref, set()):
        raise Conflict(f"ref: {ref} at {sha[:12]} is approved already; fetch it")
    commits = reviewed.new_commits(path, commit)
    if not commits:
        raise Conflict(f"ref: {ref} has no commit upstream lacks; it is fetchable already")
    # No commit text is stored: the request is readable by its owner from anywhere, and
    # commit messages are data under review too (reviewers read them in the diff).
    return {"repo": repo, "ref": ref, "sha": sha, "commit": commit,
            "base": reviewed.base_of(path, commit), "commits": len(commits)}


def _expose_branch(state: Any, item: dict[str, Any]) -> None:
    """After an approval or revocation of a branch request: expose exactly its commit to
    clients outside the HomePods while approved, hide it otherwise."""
    from mlab.codeservice import reviewed

    config = getattr(state, "config", None)
    if config is None:
        return
    if item["state"] == State.APPROVED:
        reviewed.approve(config.db_path, int(item["id"]), item["repo"], item["ref"],
                         item["sha"])
    else:
        reviewed.revoke(config.db_path, int(item["id"]))


def _audit(request: Request, item: dict[str, Any], events: list[dict[str, Any]]) -> None:
    """Append each request event to the code service's audit log (``event: request``)."""
    config = getattr(request.app.state, "config", None)
    path = getattr(config, "audit_log", None)
    if path is None:
        return
    from mlab.codeservice import audit

    extra = {k: item[k] for k in ("url", "name", "repo", "ref", "sha") if k in item}
    for e in events:
        audit.append(path, "request", id=item["id"], kind=item["kind"], owner=item["owner"],
                     action=e["action"], to=e["to"], user=e["by"], comment=e["comment"], **extra)


def _mirror_policy(cs: Any) -> MirrorPolicy:
    """The site's rule for mirror requests: ``codeService.allowedHosts`` (and
    ``allowLocalUpstreams``) bound the URL; the name is given or derived from the URL."""
    from mlab.codeservice import names

    allowed = list(cs.allowed_hosts) if cs else ["github.com"]
    local = bool(cs.allow_local_upstreams) if cs else False

    def check(url: str, name: str | None) -> str:
        names.check_upstream(url, allowed, local)
        return names.validate_name(name) if name else names.default_name(url)

    return check


def request_routes(site: Any, data_dir: str | Path, *,
                   authenticate: Authenticate | None = None) -> list[BaseRoute]:
    """The routes to mount in the code service (its ``extra_routes``).

    Args:
        site: the :class:`mlab.site.Site` (None: defaults: admin reviews, one approver, no
            notifications).
        data_dir: the code service's data directory; the store is ``<data_dir>/requests.sqlite``.
        authenticate: override of the code service's authenticate (tests of other apps).
    """
    cs = getattr(site, "code_service", None)
    store = RequestStore(Path(data_dir) / DB_NAME,
                         two_person=tuple(cs.two_person_approval) if cs else ())
    notifier = Notifier(tuple(cs.notify_command), cs.notify_url) if cs else None
    airlock = getattr(site, "airlock", None)
    app = RequestsApp(store, authenticate=authenticate,
                      reviewers=tuple(cs.reviewers) if cs else (), notifier=notifier,
                      publishers=(PUBLISHER_ACCOUNT,) if airlock is not None else (),
                      may_export=getattr(site, "may_request_exports", None),
                      mirror_policy=_mirror_policy(cs))
    delivery = Delivery(store, app.authenticate, exports_dir_from_env(),
                        Path(data_dir) / "audit.log")
    return [*delivery.routes(), *app.routes()]


# --- the page ----------------------------------------------------------------------------

_STYLE = """body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:.25em .5em;vertical-align:top;text-align:left}
.approved{color:#060}.rejected,.revoked{color:#a00}.cancelled{color:#777}
pre{max-height:20em;overflow:auto;background:#f6f6f6;padding:.5em}"""


TRANSCRIPT_TRUST = (
    "<p class='trust'><b>Verified:</b> who submitted this request (their signed-in account), "
    "and that the script below is byte for byte the one an approval adds to the image build. "
    "<b>Not verified:</b> the test run. Its transcript (output, exit status, image, time) was "
    "made and sent by the requester's own client; the service did not run the script and "
    "cannot tell a real run from an edited one. If the run matters, run the script yourself on "
    "the Airlock (<code>bash SCRIPT</code>) before approving.</p>"
)
"""Shown with every package request (issue 13, item 8): what the review page can vouch for."""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _details(item: dict[str, Any]) -> str:
    parts: list[str] = []
    if item["kind"] == "branch":
        parts.append(f"<p>branch <code>{_e(item.get('ref', ''))}</code> of "
                     f"<code>{_e(item.get('repo', ''))}</code> at <code>{_e(item.get('sha', ''))}"
                     f"</code>: {_e(item.get('commits', '?'))} new commit(s)</p>"
                     f"<p><a href='/api/requests/{_e(item['id'])}/diff'>every new commit with "
                     "its patch</a> (also <code>mlab request show</code>)</p>")
    elif item["kind"] == "mirror":
        parts.append(f"<p>mirror <code>{_e(item.get('url', ''))}</code> as "
                     f"<code>{_e(item.get('name', ''))}</code></p>")
    elif item["kind"] == "export":
        rows = "".join(
            f"<tr><td>{_e(f['path'])}</td><td>{_e(f['size'])}</td><td><code>{_e(f['sha256'])}</code></td></tr>"
            for f in item.get("files", [])[:500]
        )
        parts.append(f"<table><tr><th>file</th><th>bytes</th><th>sha256</th></tr>{rows}</table>")
    else:
        tr = item.get("transcript", {})
        parts.append(TRANSCRIPT_TRUST)
        parts.append(
            f"<p>test run on {_e(tr.get('image', '?'))} at {_e(tr.get('started_at', '?'))}: "
            f"exit status {_e(tr.get('exit_status', '?'))}, {_e(tr.get('duration_s', '?'))} s</p>"
            f"<pre>{_e(item.get('script', ''))}</pre><pre>{_e(tr.get('output', ''))}</pre>"
        )
    hist = "".join(
        f"<tr><td>{_e(h['at'])}</td><td>{_e(h['by'])}</td><td>{_e(h['action'])}</td>"
        f"<td>{_e(h['from'] or '')} &rarr; {_e(h['to'])}</td><td>{_e(h['comment'])}</td></tr>"
        for h in item.get("history", [])
    )
    parts.append(
        "<table><tr><th>when</th><th>who</th><th>action</th><th>state</th><th>comment</th></tr>"
        f"{hist}</table>"
    )
    return "".join(parts)


def render_page(user: str, reviewer: bool, items: list[dict[str, Any]]) -> str:
    """The ``/requests`` page (pure): one row per request, details and history folded.

    Every value is HTML-escaped: reasons, comments, scripts and file names are user text.
    """
    scope = "all requests (reviewer)" if reviewer else "your requests"
    rows = "".join(
        f"<tr id='r{i['id']}'><td>{_e(i['id'])}</td><td>{_e(i['kind'])}</td><td>{_e(i['owner'])}</td>"
        f"<td class='{_e(i['state'])}'>{_e(i['state'])}</td><td>{_e(i['updated_at'])}</td>"
        f"<td>{_e(i['reason'])}<details><summary>details and history</summary>{_details(i)}</details></td></tr>"
        for i in items
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>MLab requests</title>"
        f"<style>{_STYLE}</style></head><body><h1>Requests</h1>"
        f"<p>Signed in as {_e(user)}; showing {scope}: {len(items)}.</p>"
        "<table><tr><th>id</th><th>kind</th><th>owner</th><th>state</th><th>updated</th>"
        f"<th>reason</th></tr>{rows}</table></body></html>"
    )
