"""The HomePod container's life: the home volume and SSH host keys survive re-creation,
SIGTERM stops it promptly (an init is PID 1), airlock mode keeps Debian's package sources,
and a bad environment stops the entrypoint with one clear line."""

from __future__ import annotations

import time

import pytest

from mlab.podman.runner import podman

pytestmark = pytest.mark.e2e

PREFIX = "mlabtest-img-"
ENV = {"MLAB_USER": "bob", "MLAB_UID": "1000", "MLAB_PASSWORD": "Bob-Passw0rd-7"}


@pytest.fixture
def volume(e2e):
    name = e2e.unique_name(PREFIX + "home-")
    podman(["volume", "create", name])
    yield name
    podman(["volume", "rm", "-f", name], check=False)


def test_home_and_host_keys_survive_recreation_and_sigterm_stops_fast(
        homepod_image, e2e, containers, volume) -> None:
    first = e2e.run_container(homepod_image, PREFIX, env=ENV, volumes=[f"{volume}:/home/bob"])
    containers.append(first)
    e2e.wait_until_ready(first)
    first.exec("bash", "-c", "echo keep > /home/bob/work.txt", user="bob")
    first.exec("bash", "-c", "mkdir /home/bob/data && chown 4321:4321 /home/bob/data")
    key1 = first.exec("cat", "/home/bob/.mlab/host-keys/ssh_host_ed25519_key.pub").stdout
    start = time.monotonic()
    podman(["stop", "-t", "30", first.name])
    stop_seconds = time.monotonic() - start
    # An ignored SIGTERM would wait the full 30 s before the kill; measured about 2 s.
    assert stop_seconds < 15, f"podman stop took {stop_seconds:.1f} s (SIGTERM ignored?)"
    first.remove()

    second = e2e.run_container(homepod_image, PREFIX, env=ENV, volumes=[f"{volume}:/home/bob"])
    containers.append(second)
    e2e.wait_until_ready(second)
    assert second.exec("cat", "/home/bob/work.txt").stdout == "keep\n"
    assert second.exec("stat", "-c", "%U:%G", "/home/bob/work.txt").stdout.strip() == "bob:bob"
    # Existing files are never re-owned by the entrypoint.
    assert second.exec("stat", "-c", "%u", "/home/bob/data").stdout.strip() == "4321"
    assert second.exec("cat", "/home/bob/.mlab/host-keys/ssh_host_ed25519_key.pub").stdout == key1
    assert second.exec("stat", "-c", "%U %a", "/home/bob/.mlab/host-keys").stdout.strip() == "root 700"


def test_airlock_mode_keeps_debian_sources_and_plain_pip(homepod_image, e2e, containers) -> None:
    c = e2e.run_container(homepod_image, PREFIX, env={**ENV, "MLAB_MODE": "airlock",
                                                      "MLAB_SUDO": "0", "MLAB_CLIPBOARD": "to-pod"})
    containers.append(c)
    e2e.wait_until_ready(c)
    assert c.exec("test", "-e", "/etc/pip.conf", check=False).returncode != 0
    sources = c.exec("cat", "/etc/apt/sources.list").stdout
    assert sources == c.exec("cat", "/usr/share/mlab/pristine/sources.list").stdout
    assert "deb.debian.org" in sources
    assert c.exec("sudo", "-n", "true", user="bob", check=False).returncode != 0
    # Clipboard policy to-pod: VNC accepts the client's clipboard but never sends its own;
    # xrdp restricts the outbound direction.
    args = c.exec("bash", "-c", "tr '\\0' ' ' < /proc/$(pgrep -x Xtigervnc)/cmdline").stdout
    assert "-AcceptCutText=1 -SendCutText=0" in args
    sesman = c.exec("cat", "/etc/xrdp/sesman.ini").stdout
    assert "RestrictOutboundClipboard=all" in sesman and "RestrictInboundClipboard=none" in sesman


@pytest.mark.parametrize(("env", "message"), [
    ({"MLAB_USER": "bob"}, "no password"),
    ({**ENV, "MLAB_MODE": "office"}, "MLAB_MODE='office' must be homepod or airlock"),
    ({**ENV, "MLAB_UID": "0"}, "MLAB_UID='0' must be a number from 1000 to 60000"),
    ({**ENV, "TZ": "Mars/Olympus"}, "TZ='Mars/Olympus' is not a time zone"),
    ({**ENV, "MLAB_PASSWORD": "short"}, "at least 6 characters"),
], ids=["no-password", "mode", "uid", "tz", "short-password"])
def test_bad_environment_fails_with_one_line(homepod_image, e2e, env, message) -> None:
    argv = ["run", "--rm", "--name", e2e.unique_name(PREFIX)]
    for k, v in env.items():
        argv += ["-e", f"{k}={v}"]
    proc = podman([*argv, homepod_image], check=False, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Passw0rd" not in proc.stderr + proc.stdout
