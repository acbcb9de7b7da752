""""Open desktop" on a culled HomePod, end to end (docs/portal.md, docs/culling.md): a real
HomePod pod with the labels `mlab up` gives it, stopped by the culler's own stop; alice signs
in to ``mlab portal serve --wake podman`` in headless Chromium, presses "Open desktop", sees
the waiting page, and then her XFCE desktop; the pod runs again with her home, and both the
culler's audit (``wake``, ``was_culled``) and the portal's (``desktop-wake``) say so.

The site has no identity provider (the portal's password form) to keep Keycloak's start out
of this test; the sign-in through Keycloak is tests/e2e/test_portal.py's.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from portal_harness import Browser, Portal, free_port, sign_in_password, wait_novnc

from mlab.podman.runner import podman

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

USER, UID, PASSWORD = "alice", 1001, "wake-pw-1"


@pytest.fixture(scope="module")
def culled(homepod_image: str, tmp_path_factory: pytest.TempPathFactory,
           e2e: Any) -> Iterator[SimpleNamespace]:
    """alice's HomePod pod, started, given a file in her home, then culled."""
    root = tmp_path_factory.mktemp("portal-wake")
    site = e2e.unique_name("t15w")
    pod, container, volume = (f"mlab-{site}-homepod-{USER}", f"mlab-{site}-homepod-{USER}-homepod",
                              f"mlab_{site}_home-{USER}")
    site_file = root / "site.yaml"
    site_file.write_text(yaml.safe_dump({
        "apiVersion": "mlab.io/v1", "name": site, "users": [{"name": USER, "uid": UID}]}))
    vnc = free_port()
    labels = ["--label", f"app.kubernetes.io/instance={site}",
              "--label", "app.kubernetes.io/component=homepod", "--label", f"mlab.io/user={USER}"]
    state = root / "state"
    old_state = os.environ.get("MLAB_STATE_DIR")
    os.environ["MLAB_STATE_DIR"] = str(state)
    try:
        podman(["pod", "create", "--name", pod, *labels, "-p", f"127.0.0.1:{vnc}:5900"])
        podman(["volume", "create", volume])
        podman(["create", "--pod", pod, "--name", container, "-e", f"MLAB_USER={USER}",
                "-e", f"MLAB_UID={UID}", "-e", f"MLAB_PASSWORD={PASSWORD}",
                "-v", f"{volume}:/home/{USER}", homepod_image])
        podman(["pod", "start", pod])
        e2e.wait_until_ready(e2e.Container(container), 180)
        podman(["exec", "-u", USER, container, "sh", "-c", f"echo kept > /home/{USER}/notes.txt"])

        from mlab.cull import local
        from mlab.site import load_site

        loaded = load_site(site_file)
        cull_state = local.load_state(site)
        local.stop(loaded, local.homepods(site)[USER], "idle: no input for 4h (limit 4h)",
                   {"sessions": {}, "cpu_percent": 0.0}, False, cull_state)
        local.save_state(site, cull_state)
        assert local.homepods(site)[USER].status != "Running"
        yield SimpleNamespace(root=root, site=site, site_file=site_file, vnc=vnc, pod=pod,
                              container=container, state=state)
    finally:
        for _ in range(3):  # a loaded machine can make one `pod rm` time out
            podman(["pod", "rm", "-f", "-t", "5", pod], check=False, timeout=300)
            if podman(["pod", "exists", pod], check=False).returncode != 0:
                break
        podman(["volume", "rm", "-f", volume], check=False)
        if old_state is None:
            os.environ.pop("MLAB_STATE_DIR", None)
        else:
            os.environ["MLAB_STATE_DIR"] = old_state


def test_open_desktop_wakes_the_culled_homepod(culled: SimpleNamespace, e2e: Any,
                                               tmp_path: Path) -> None:
    users = tmp_path / "users"
    (users / USER).mkdir(parents=True)
    (users / USER / "password").write_text(PASSWORD + "\n")
    port = free_port()
    url = f"http://localhost:{port}"
    site = yaml.safe_load(culled.site_file.read_text())
    site["portal"] = {"enabled": True, "url": url}
    portal_site = tmp_path / "site.yaml"
    portal_site.write_text(yaml.safe_dump(site))
    portal = Portal(tmp_path, portal_site, port, users, {USER: f"127.0.0.1:{culled.vnc}"},
                    extra_args=("--wake", "podman"), env={"MLAB_STATE_DIR": str(culled.state)})
    browser = Browser(tmp_path)
    try:
        sign_in_password(browser, url, USER, PASSWORD)
        assert browser.evaluate("document.getElementById('state').textContent") == \
            "stopped (Open desktop starts it)"
        start = time.monotonic()
        browser.evaluate("document.getElementById('open').click()")
        browser.wait_for("document.getElementById('waking') !== null", timeout=30)
        open_desktop_after_wake(browser)
        woke = time.monotonic() - start
        print(f"Open desktop on a culled HomePod -> noVNC connected: {woke:.1f} s")
        time.sleep(2)  # the first full framebuffer update
        shot = tmp_path / "woken.png"
        browser.screenshot(shot)
        assert e2e.looks_like_desktop(shot), f"no desktop in {shot}"
    finally:
        browser.close()
        portal.stop()
    status = podman(["pod", "inspect", culled.pod, "--format", "{{.State}}"]).stdout.strip()
    assert status == "Running"
    home = podman(["exec", culled.container, "cat", f"/home/{USER}/notes.txt"]).stdout
    assert home.strip() == "kept"
    cull_audit = [json.loads(line) for line in
                  (culled.state / culled.site / "cull-audit.jsonl").read_text().splitlines()]
    wakes = [r for r in cull_audit if r["event"] == "wake"]
    assert len(wakes) == 1 and wakes[0]["user"] == USER and wakes[0]["was_culled"] is True
    assert json.loads((culled.state / culled.site / "cull.json").read_text())["culled"] == {}
    events = [(r["event"], r.get("user")) for r in portal.audit_records()]
    assert events.count(("desktop-wake", USER)) == 1
    assert ("desktop-open", USER) in events


def open_desktop_after_wake(browser: Browser) -> None:
    """The waiting page reloads itself until VNC answers, then noVNC connects."""
    browser.wait_for("location.pathname.endsWith('vnc.html')", timeout=120)
    wait_novnc(browser, 60)
