"""Pure formatting of requests for the CLI: tables, details, sizes (no I/O)."""

from __future__ import annotations

import json
from typing import Any

from rich.table import Table


def human_size(n: int) -> str:
    """``1536`` -> ``1.5 KiB`` (IEC units, one decimal)."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def _summary(item: dict[str, Any]) -> str:
    if item["kind"] == "branch":
        return f"{item.get('repo', '?')} {item.get('ref', '?')} ({item.get('commits', '?')} commits)"
    if item["kind"] == "mirror":
        return f"{item.get('name', '?')} from {item.get('url', '?')}"
    if item["kind"] == "export":
        files = item.get("files", [])
        return f"{len(files)} files, {human_size(int(item.get('total_size', 0)))}"
    status = item.get("transcript", {}).get("exit_status", "?")
    return f"test exit {status}"


def requests_table(items: list[dict[str, Any]]) -> Table:
    """A rich table: id, kind, owner, state, updated, contents, reason (cut at 60)."""
    table = Table(show_lines=False)
    for col in ("id", "kind", "owner", "state", "updated", "contents", "reason"):
        table.add_column(col, no_wrap=col != "reason")
    for i in items:
        reason = i["reason"] if len(i["reason"]) <= 60 else i["reason"][:57] + "..."
        table.add_row(str(i["id"]), i["kind"], i["owner"], i["state"], i["updated_at"],
                      _summary(i), reason)
    return table


def request_text(item: dict[str, Any], diff: str | None = None) -> str:
    """A request with contents and history as plain text (``mlab request show``).

    ``diff``: a branch request's commits with their patches (the code service's
    ``/api/requests/{id}/diff``), printed after the history."""
    lines = [
        f"request {item['id']}: {item['kind']} by {item['owner']}, {item['state']}",
        f"reason: {item['reason']}",
        f"created: {item['created_at']}  updated: {item['updated_at']}",
    ]
    if item["kind"] == "branch":
        lines.append(f"branch: {item.get('ref')} of {item.get('repo')} at {item.get('sha')}")
        lines.append(f"new commits: {item.get('commits')} (base {str(item.get('base'))[:12]})")
    elif item["kind"] == "mirror":
        lines.append(f"mirror: {item.get('url')} as {item.get('name')}")
    elif item["kind"] == "export":
        lines.append(f"outbox: {item['owner']}/{item.get('outbox')}  ({_summary(item)})")
        for f in item.get("files", []):
            lines.append(f"  {f['sha256']}  {f['size']:>14}  {f['path']}")
    else:
        tr = item.get("transcript", {})
        lines.append(
            f"test run: exit {tr.get('exit_status')} in {tr.get('duration_s')} s on "
            f"{tr.get('image')} at {tr.get('started_at')}"
            + (" (output truncated)" if tr.get("truncated") else "")
        )
        lines.append("script:")
        lines.extend(f"  | {line}" for line in str(item.get("script", "")).splitlines())
        lines.append("output:")
        lines.extend(f"  > {line}" for line in str(tr.get("output", "")).splitlines())
    if item.get("history"):
        lines.append("history:")
        for h in item["history"]:
            move = f"{h['from'] or '-'} -> {h['to']}"
            lines.append(f"  {h['at']}  {h['by']:<12} {h['action']:<11} {move:<24} {h['comment']}")
    if diff is not None:
        lines.append("")
        lines.append(diff.rstrip("\n"))
    return "\n".join(lines) + "\n"


def to_json(data: Any) -> str:
    """Stable, indented JSON for ``-o json``."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
