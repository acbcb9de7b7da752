"""``mlab verify --cluster``: the live edge check on the cluster of the current kubeconfig."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mlab.cli.progress import Steps, progress_console
from mlab.site import Site


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def verify_cluster(site: Site, fmt: str, quiet: bool, junit_file: Path | None,
                   context: str | None, user: str) -> None:
    """Run :func:`mlab.probing.kube.run`, print the table or JSON, exit 1 on a mismatch.

    Raises:
        typer.Exit: 1 when an edge does not hold or the CNI does not enforce policies.
    """
    from mlab.deploy.kubernetes import Kubectl
    from mlab.probing import kube as kube_verify

    console = Console(stderr=True)
    start = time.monotonic()
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        with Steps("mlab verify", progress_console(quiet)) as steps:
            results = kube_verify.run(site, Kubectl(context=context), on_step=steps.say,
                                      user=user)
    except kube_verify.NotEnforced as exc:
        console.print(f"mlab verify: {exc}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    seconds = time.monotonic() - start
    rows = kube_verify.to_json(results)
    if junit_file:
        junit_file.write_text(kube_verify.junit(results, seconds), encoding="utf-8")
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        table = Table("edge", "expected", "observed", "", "detail")
        for row in rows:
            table.add_row(row["edge"], row["expected"], row["observed"],
                          "[green]ok[/]" if row["ok"] else "[red]MISMATCH[/]", row["detail"])
        Console(width=200).print(table)
    bad = [row for row in rows if not row["ok"]]
    for row in bad:
        console.print(f"mlab verify: MISMATCH {row['edge']}: expected {row['expected']}, "
                      f"{row['detail']} ({row['policy']})", soft_wrap=True, markup=False,
                      highlight=False)
    console.print(f"mlab verify: {len(rows) - len(bad)}/{len(rows)} probes as expected "
                  f"in {seconds:.1f} s")
    if bad:
        raise typer.Exit(1)
