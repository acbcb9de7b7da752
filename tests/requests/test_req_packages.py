"""Image-build steps from approved packages, the layer recipe, and webhook notifications."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from mlab.errors import UsageError
from mlab.requests.imagelayer import containerfile, layer_hash
from mlab.requests.notify import Notifier, make_event
from mlab.requests.packages import (
    PackageStep,
    dump_steps,
    image_labels,
    load_steps,
    provision_fragment,
    steps_from_json,
    write_steps,
)

STEPS = [PackageStep(9, "echo nine > /tmp/order\n", "alice", "r", "2026-01-01T00:00:00Z"),
         PackageStep(4, "echo four >> /tmp/order", "carol", "r", "2026-01-02T00:00:00Z")]


def test_round_trip_and_order(tmp_path: Path) -> None:
    path = tmp_path / "approved.json"
    path.write_text(dump_steps(STEPS))
    assert load_steps(path=path) == STEPS
    assert image_labels(STEPS) == {"mlab.package-requests": "9,4"}
    assert image_labels([]) == {"mlab.package-requests": ""}


@pytest.mark.parametrize("data", [[], {"packages": {}}, {"packages": [{"id": 1}]}],
                         ids=["list", "not-list", "missing-fields"])
def test_bad_files(data: object) -> None:
    with pytest.raises(UsageError, match="packages"):
        steps_from_json(data)


def test_scripts_run_in_order_and_stop_at_a_failure(tmp_path: Path) -> None:
    steps_dir = tmp_path / "steps"
    out = tmp_path / "order"
    steps = [PackageStep(s.id, s.script.replace("/tmp/order", str(out)), s.owner, s.reason,
                         s.approved_at) for s in STEPS]
    paths = write_steps(steps, steps_dir)
    assert [p.name for p in paths] == ["001-request-9.sh", "002-request-4.sh"]
    fragment = provision_fragment(steps, str(steps_dir))
    proc = subprocess.run(["bash", "-c", fragment], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and out.read_text() == "nine\nfour\n"
    failing = [*steps, PackageStep(5, "exit 3", "a", "r", "t"), PackageStep(6, "echo six >> " + str(out), "a", "r", "t")]
    write_steps(failing, steps_dir)
    out.unlink()
    proc = subprocess.run(["bash", "-c", provision_fragment(failing, str(steps_dir))],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1 and "package request 5 failed" in proc.stderr
    assert out.read_text() == "nine\nfour\n"


def test_layer_recipe() -> None:
    text = containerfile("localhost/mlab/homepod:abc", STEPS)
    assert text.startswith("FROM localhost/mlab/homepod:abc\n")
    assert 'LABEL mlab.package-requests="9,4"' in text
    assert layer_hash("sha256:x", STEPS) == layer_hash("sha256:x", list(STEPS))
    assert layer_hash("sha256:x", STEPS) != layer_hash("sha256:x", STEPS[::-1])
    assert layer_hash("sha256:x", STEPS) != layer_hash("sha256:y", STEPS)


def test_webhook_gets_each_event() -> None:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(json.loads(body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        request = {"id": 3, "kind": "export", "owner": "alice"}
        events = [make_event(request, {"action": a, "from": f, "to": t, "by": "bob",
                                       "at": "2026-01-01T00:00:00Z", "comment": "c", "seq": n})
                  for n, (a, f, t) in enumerate([("review", "submitted", "in_review"),
                                                 ("approve", "in_review", "approved")])]
        Notifier(url=f"http://127.0.0.1:{server.server_address[1]}/hook").send(events)
        # A dead webhook or a failing command is logged, never raised.
        Notifier(command=["false"], url="http://127.0.0.1:9/none").send(events[:1])
    finally:
        server.shutdown()
        server.server_close()
    assert [(e["id"], e["action"], e["to"]) for e in received] == [
        (3, "review", "in_review"), (3, "approve", "approved")]
