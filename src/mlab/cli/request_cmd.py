"""``mlab request``: package and export requests, their review, and the Airlock's publisher.

Users: ``package`` (on the Airlock), ``export`` (in a HomePod), ``mirror`` (anywhere: a git
repository for the code service), ``list``, ``show``, ``cancel``.
Reviewers: ``approve``, ``reject``, ``revoke`` (and ``review`` to take one into review).
Airlock: ``publish`` (approved exports to the share). Image build: ``packages``.
All talk to the code service (``--server`` / ``MLAB_SERVER``, credentials ``MLAB_USER`` and
``MLAB_PASSWORD`` or ``MLAB_PASSWORD_FILE``); data goes to stdout, progress to stderr.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

from mlab.atomic import write_atomic
from mlab.cli.options import old_output_path_option, out_path, output_format, site_option
from mlab.errors import MlabError, UsageError
from mlab.topology import EXPORT_PATH

SERVER_OPT = typer.Option(
    None, "--server", envvar="MLAB_SERVER",
    help="Code service URL, e.g. http://code.mlab.local. Default: http://$MLAB_CODE_HOST "
    "(set in HomePods and the Airlock), else on the host the code service of the local site "
    "when it is up (`mlab status`).",
)
OUTPUT_OPT = typer.Option("table", "-o", "--output", help="table or json. Default: table.")

err = Console(stderr=True)


def _client(server: str | None):  # type: ignore[no-untyped-def]
    from mlab.requests.client import RequestsClient

    return RequestsClient.from_env(server)


def _progress() -> Progress:
    return Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), console=err, transient=True)


def register(app: typer.Typer) -> None:
    """Add the ``request`` group to ``app``."""
    group = typer.Typer(help="Package, export, mirror and branch requests with review.",
                        no_args_is_help=True)
    app.add_typer(group, name="request")

    @group.command("package")
    def package(
        script: Path = typer.Argument(..., help="Install script (bash), e.g. install-jq.sh."),
        reason: str = typer.Option(..., "--reason", help="Why the image needs it (required)."),
        allow_failed: bool = typer.Option(False, "--allow-failed", help="Submit even when the "
                                          "test run fails. Default: refuse."),
        timeout: float = typer.Option(3600, "--timeout", help="Seconds the test run may take. "
                                      "Default: 3600."),
        server: str = SERVER_OPT,
    ) -> None:
        """Test SCRIPT here (the Airlock) with a transcript, then submit it for the image."""
        from mlab.requests.transcript import run_script

        client = _client(server)
        text = _read_script(script)
        err.print(f"mlab: testing {script} (bash, timeout {timeout:g} s)")
        def echo(text: str) -> None:
            sys.stderr.write(text)
            sys.stderr.flush()

        transcript = run_script(script, timeout=timeout, echo=echo)
        status = transcript["exit_status"]
        err.print(f"mlab: {script} exited {status} after {transcript['duration_s']} s")
        if status != 0 and not allow_failed:
            raise MlabError(f"{script}: the test run exited {status}; nothing was submitted",
                            hint="fix the script, or pass --allow-failed to submit anyway")
        item = client.submit({"kind": "package", "reason": reason, "script": text,
                              "transcript": transcript})
        print(f"submitted package request {item['id']} ({item['state']})")

    @group.command("export")
    def export(
        paths: list[Path] = typer.Argument(..., help="Files and directories to export."),
        reason: str = typer.Option(..., "--reason", help="Who gets it and why (required)."),
        outbox: Path = typer.Option(Path("/opt/outbox"), "--outbox", envvar="MLAB_OUTBOX",
                                    help="Your outbox. Default: /opt/outbox (HomePods)."),
        server: str = SERVER_OPT,
    ) -> None:
        """Copy PATHs into your outbox (sha256 while copying) and submit them for review."""
        from mlab.requests.checksums import collect_sources, stage_export

        if not reason.strip():
            raise UsageError("--reason: give a non-empty reason")
        client = _client(server)
        sources = collect_sources([str(p) for p in paths])
        total = sum(s.size for s in sources)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"export-{stamp}-{secrets.token_hex(3)}"
        with _progress() as progress:
            task = progress.add_task("copying to the outbox", total=total)
            files = stage_export(sources, outbox, name,
                                 lambda n: progress.advance(task, n))
        try:
            item = client.submit({"kind": "export", "reason": reason, "outbox": name,
                                  "files": files})
        except BaseException:
            shutil.rmtree(outbox / name, ignore_errors=True)
            raise
        print(f"submitted export request {item['id']}: {len(files)} files, {total} bytes "
              f"in {outbox / name}")

    @group.command("mirror")
    def mirror(
        url: str = typer.Argument(..., help="Upstream repository URL, e.g. "
                                  "https://github.com/DeepVAC/deepvac."),
        why: str = typer.Option(..., "--why", "--reason", help="Why you need it on the code "
                                "service (required)."),
        name: str = typer.Option(None, "--as", help="ORG/REPO on the code service. Default: "
                                 "the URL's last two path parts, lower-cased."),
        server: str = SERVER_OPT,
    ) -> None:
        """Ask for URL to be mirrored on the code service; on approval it appears there."""
        if not why.strip():
            raise UsageError("--why: give a non-empty reason")
        body = {"kind": "mirror", "reason": why, "url": url}
        if name:
            body["name"] = name
        item = _client(server).submit(body)
        print(f"submitted mirror request {item['id']}: {item['url']} as {item['name']} "
              f"({item['state']})")

    @group.command("branch")
    def branch(
        repo: str = typer.Argument(..., help="ORG/REPO on the code service."),
        ref: str = typer.Argument(..., help="Your branch (feature_1), or refs/tags/TAG."),
        reason: str = typer.Option(..., "--reason", help="What it is and where it goes "
                                   "(required)."),
        server: str = SERVER_OPT,
    ) -> None:
        """Ask for review of your branch at its current commit; once approved, that commit
        can be fetched from outside the HomePods (the office PC's `mlab relay finish`)."""
        if not reason.strip():
            raise UsageError("--reason: give a non-empty reason")
        item = _client(server).submit({"kind": "branch", "reason": reason, "repo": repo,
                                       "ref": ref})
        print(f"submitted branch request {item['id']}: {item['ref']} of {item['repo']} at "
              f"{item['sha'][:12]}, {item['commits']} new commit(s) ({item['state']})")

    @group.command("list")
    def list_(
        all_users: bool = typer.Option(False, "--all", help="Every user's requests "
                                       "(reviewers). Default: your own."),
        kind: str = typer.Option(None, "--kind", help="package, export, mirror or branch. "
                                 "Default: all."),
        state: str = typer.Option(None, "--state", help="Only this state. Default: all."),
        output: str = OUTPUT_OPT,
        server: str = SERVER_OPT,
    ) -> None:
        """List requests, newest first."""
        from mlab.requests.formats import requests_table, to_json

        output_format(output)
        items = _client(server).list(all_users=all_users, kind=kind, state=state,
                                     history=output == "json")
        if output == "json":
            sys.stdout.write(to_json(items))
        else:
            Console().print(requests_table(items))

    @group.command("show")
    def show(
        request_id: int = typer.Argument(..., metavar="ID", help="Request id."),
        output: str = typer.Option("text", "-o", "--output", help="text or json. Default: text."),
        server: str = SERVER_OPT,
    ) -> None:
        """Show a request: contents, test transcript or files, and its history."""
        from mlab.requests.formats import request_text, to_json

        output_format(output, ("text", "json"))
        client = _client(server)
        item = client.get(request_id)
        if output == "json":
            sys.stdout.write(to_json(item))
            return
        diff = None
        if item["kind"] == "branch":
            from mlab.requests.model import Forbidden

            try:
                diff = client.diff(request_id)
            except Forbidden as exc:  # its owner, outside the HomePods
                diff = f"(patch not shown: {exc.message})"
        sys.stdout.write(request_text(item, diff))

    def _act(action: str, request_id: int, comment: str | None, server: str | None) -> None:
        item = _client(server).act(request_id, action, comment)
        print(f"request {item['id']}: {item['state']}")

    @group.command("cancel")
    def cancel(request_id: int = typer.Argument(..., metavar="ID", help="Request id (see `mlab request list`)."),
               comment: str = typer.Option(None, "--comment", help="Why. Default: none."),
               server: str = SERVER_OPT) -> None:
        """Cancel your own request while it is still submitted."""
        _act("cancel", request_id, comment, server)

    @group.command("review")
    def review(request_id: int = typer.Argument(..., metavar="ID", help="Request id (see `mlab request list`)."),
               server: str = SERVER_OPT) -> None:
        """Reviewers: take a submitted request into review (approve/reject do it too)."""
        _act("review", request_id, None, server)

    @group.command("approve")
    def approve(request_id: int = typer.Argument(..., metavar="ID", help="Request id (see `mlab request list`)."),
                comment: str = typer.Option(..., "--comment", help="Reason (required)."),
                server: str = SERVER_OPT) -> None:
        """Reviewers: approve another user's request (two approvers if the site says so)."""
        _act("approve", request_id, comment, server)

    @group.command("reject")
    def reject(request_id: int = typer.Argument(..., metavar="ID", help="Request id (see `mlab request list`)."),
               comment: str = typer.Option(..., "--comment", help="Reason (required)."),
               server: str = SERVER_OPT) -> None:
        """Reviewers: reject another user's request."""
        _act("reject", request_id, comment, server)

    @group.command("revoke")
    def revoke(request_id: int = typer.Argument(..., metavar="ID", help="Request id (see `mlab request list`)."),
               comment: str = typer.Option(None, "--comment", help="Reason. Default: "
                                           "'revoked'."),
               server: str = SERVER_OPT) -> None:
        """Reviewers: withdraw an approval (unpublishes an export; drops a package step)."""
        _act("revoke", request_id, comment, server)

    @group.command("publish")
    def publish(
        outbox_root: Path = typer.Option(Path("/opt/outbox"), "--outbox-root",
                                         help="Every user's outbox, as <root>/<user>/. "
                                         "Default: /opt/outbox (the Airlock)."),
        export_root: Path = typer.Option(Path(EXPORT_PATH), "--export-root",
                                         help="Where exports are published. Default: "
                                         f"{EXPORT_PATH}."),
        watch: float = typer.Option(0, "--watch", help="Repeat every SECONDS. Default: 0 "
                                    "(once)."),
        server: str = SERVER_OPT,
    ) -> None:
        """Airlock: publish approved exports (sha256-verified), remove revoked ones.

        Exit 1 when a publication was blocked (a file changed or is a link)."""
        client = _client(server)
        noted: set[tuple[int, str]] = set()
        while True:
            blocked = _publish_once(client, outbox_root, export_root, noted)
            if watch <= 0:
                if blocked:
                    raise MlabError(f"{blocked} export(s) blocked: files differ from their "
                                    "recorded sha256 or are links; see `mlab request show ID`")
                return
            time.sleep(watch)

    @group.command("download")
    def download(
        request_id: int = typer.Argument(..., metavar="ID", help="Your approved export."),
        out_dir: Path = typer.Option(None, "--out-dir", help="Directory for the files. "
                                     "Default: ./export-<ID>."),
        server: str = SERVER_OPT,
        old_output: Path = old_output_path_option(),
    ) -> None:
        """Download your approved export with your own credentials; every file is checked
        against its recorded sha256 (sites with egress.exportDelivery: requester)."""
        dest = out_path(out_dir, old_output, "--out-dir") or Path(f"export-{request_id}")
        client = _client(server)
        with _progress() as progress:
            task = progress.add_task(f"request {request_id}", total=None)
            files = client.download(request_id, dest, lambda n: progress.advance(task, n))
        total = sum(int(f["size"]) for f in files)
        print(f"request {request_id}: {len(files)} files, {total} bytes in {dest}, "
              "sha256 verified")

    @group.command("packages")
    def packages(
        out_file: Path = typer.Option(None, "--out-file", help="Write the JSON here "
                                      "(for `mlab image build`). Default: stdout."),
        server: str = SERVER_OPT,
        old_output: Path = old_output_path_option(),
    ) -> None:
        """Approved package scripts in approval order (admin or reviewers)."""
        from mlab.requests.packages import dump_steps, steps_from_json

        output = out_path(out_file, old_output, "--out-file")
        client = _client(server)
        text = dump_steps(steps_from_json({"packages": client.packages()}, client.server))
        if output is None:
            sys.stdout.write(text)
        else:
            write_atomic(output, text)


    @group.command("bake")
    def bake(
        base: str = typer.Option("localhost/mlab/homepod:latest", "--base",
                                 help="Image to extend. Default: localhost/mlab/homepod:latest "
                                 "(what `mlab image build --local` made)."),
        from_file: Path = typer.Option(None, "--from", help="Approved packages file "
                                       "(`mlab request packages --out-file FILE`). Default: ask the "
                                       "code service (admin or a reviewer)."),
        tag: str = typer.Option(None, "--tag", help="Also tag the result with this full "
                                "reference. Default: only localhost/mlab/homepod:pkg-<hash>."),
        push: bool = typer.Option(False, "--push", help="Then push it to the site's "
                                  "image.repository (`mlab image push`); needs --site. "
                                  "Default: local only."),
        site: Path = site_option(None, "The site file, for --push. Default: none."),
        server: str = SERVER_OPT,
    ) -> None:
        """Build the image with every approved package script (approval order); print its
        reference as the last line."""
        from mlab.requests.imagelayer import build_packages_layer
        from mlab.requests.packages import load_steps

        if from_file is not None:
            steps = load_steps(path=from_file)
        else:
            steps = load_steps(server=_client(server).server)
        ids = ", ".join(str(s.id) for s in steps) or "none"
        err.print(f"mlab: approved package requests, in order: {ids}")
        if push and site is None:
            raise UsageError("--push needs --site FILE (its image.repository is the registry)")
        with err.status("building the image with the package scripts"):
            ref = build_packages_layer(base, steps, tag=tag)
        if push:
            from mlab.image.push import push_image
            from mlab.site import load_site

            with err.status(f"pushing {ref}"):
                ref = push_image(ref, load_site(site).image)
            err.print(f"mlab: pushed; set image.tag: {ref.rsplit(':', 1)[1]} in {site}, then "
                      "mlab apply (or mlab up)", highlight=False)
        print(ref)


def _read_script(script: Path) -> str:
    try:
        return script.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"SCRIPT: {script} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"SCRIPT: cannot read {script} as UTF-8 text: {exc}") from None


def _publish_once(client, outbox_root: Path, export_root: Path,  # type: ignore[no-untyped-def]
                  noted: set[tuple[int, str]]) -> int:
    """One publisher pass; returns the number of blocked exports."""
    from mlab.requests.publish import sync_exports

    requests = client.exports()
    total = sum(sum(int(f["size"]) for f in r["files"]) for r in requests
                if r["state"] == "approved" and not (export_root / str(r["id"])).exists())
    with _progress() as progress:
        task = progress.add_task("verifying and publishing", total=total)
        outcomes = sync_exports(requests, outbox_root, export_root,
                                lambda n: progress.advance(task, n))
    blocked = 0
    for outcome in outcomes:
        print(f"request {outcome.id}: {outcome.action}: {outcome.detail}")
        blocked += outcome.action == "blocked"
        key = (outcome.id, outcome.detail)
        if key in noted:
            continue
        noted.add(key)
        try:
            client.note(outcome.id, outcome.action, outcome.detail)
        except MlabError as exc:  # the publication stands; the note is best effort
            err.print(f"mlab: request {outcome.id}: could not record the note: {exc.one_line()}")
    return blocked
