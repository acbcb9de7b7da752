"""`mlab status` says that a VNC password is its first 8 characters and how HomePods reach
the code service (issue 10, point 6)."""

from __future__ import annotations

from mlab.cli.local_cmd import VNC_NOTE, status_rows, with_site_notes

COMPONENTS = [
    {"name": "homepod-alice", "kind": "homepod", "user": "alice", "state": "Running",
     "pod": "p", "endpoints": [
         {"protocol": "vnc", "host": "127.0.0.1", "port": 5901, "url": "vnc://127.0.0.1:5901"},
         {"protocol": "rdp", "host": "127.0.0.1", "port": 3389, "url": "rdp://127.0.0.1:3389"}]},
    {"name": "code-service", "kind": "code-service", "user": "", "state": "Running",
     "pod": "c", "endpoints": [
         {"protocol": "http", "host": "127.0.0.1", "port": 80, "url": "http://127.0.0.1:80/"}]},
]


def test_vnc_note_and_in_pod_code_url() -> None:
    notes = with_site_notes(COMPONENTS, "code.example.org")
    assert notes[0]["endpoints"][0]["note"] == VNC_NOTE
    assert "note" not in notes[0]["endpoints"][1]
    assert notes[1]["endpoints"][0]["url"] == "http://127.0.0.1:80/"  # the host's, first
    assert notes[1]["endpoints"][1] == {"protocol": "http", "host": "code.example.org",
                                        "port": 80, "where": "homepod",
                                        "url": "http://code.example.org/<org>/<repo>"}
    assert "note" not in COMPONENTS[0]["endpoints"][0], "input not mutated"
    rows = status_rows(notes)
    assert rows[0][3].splitlines()[0] == \
        "vnc://127.0.0.1:5901 (password: its first 8 characters (VncAuth))"
    assert rows[1][3].splitlines() == [
        "http://127.0.0.1:80/", "in HomePods: git clone http://code.example.org/<org>/<repo>"]
