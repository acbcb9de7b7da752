"""Real parts for the portal's end-to-end tests and benchmark (imported by name: pytest puts
this directory on sys.path; the benchmark does the same).

- :class:`Keycloak`: Keycloak (``scripts/setup.d/40-keycloak.sh`` unpacks it) started from a
  private copy with a realm imported from JSON: client ``mlab-portal`` (confidential, PKCE
  S256, a ``groups`` claim) and users with passwords and groups.
- :func:`start_portal`: ``mlab portal serve`` as a process, for a site file.
- :class:`Browser`: headless Chromium (Debian's) driven over the DevTools protocol, with a
  fresh profile each; :func:`sign_in` goes through Keycloak's own login page.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from access_clients import DevTools

KEYCLOAK_VERSION = "26.5.6"
REALM = "mlab"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keycloak_home() -> Path:
    """Where the setup step unpacked Keycloak."""
    cache = os.environ.get("MLAB_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mlab")
    return Path(cache) / "keycloak" / f"keycloak-{KEYCLOAK_VERSION}"


def java_home() -> str | None:
    """A JDK of version 21 or newer under /usr/lib/jvm (Keycloak 26 needs one)."""
    for java in sorted(Path("/usr/lib/jvm").glob("*/bin/java")):
        out = subprocess.run([str(java), "-XshowSettings:properties", "-version"],
                             capture_output=True, text=True, check=False).stderr
        m = re.search(r"java\.specification\.version = (\d+)", out)
        if m and int(m.group(1)) >= 21:
            return str(java.parent.parent)
    return None


@dataclass(frozen=True)
class Person:
    name: str
    password: str
    groups: tuple[str, ...] = ()


def realm_json(portal_url: str, secret: str | None, people: list[Person]) -> dict[str, Any]:
    """MLab's realm (:func:`mlab.portal.keycloak.realm`: the portal's client, public when
    ``secret`` is None, and brute-force detection) with ``people`` as users."""
    from mlab.portal.keycloak import realm

    return realm(REALM, portal_url, secret, ssl_required="none",
                 groups=sorted({g for p in people for g in p.groups}), users=[{
                     "username": p.name, "enabled": True, "emailVerified": True,
                     "email": f"{p.name}@example.org", "firstName": p.name.title(),
                     "lastName": "Test",
                     "credentials": [{"type": "password", "value": p.password,
                                      "temporary": False}],
                     "groups": [f"/{g}" for g in p.groups],
                 } for p in people])


@dataclass(frozen=True)
class Tls:
    """A server certificate and key (PEM files) and the CA file that signs it."""

    cert: Path
    key: Path
    ca: Path


class Keycloak:
    """A Keycloak server on ``host``:``port`` with the realm imported (about 20-40 s).

    Args:
        host: the address it listens on (127.0.0.1; the Kubernetes node's address when a
            portal pod must reach it).
        tls: serve HTTPS only with this certificate (a provider other hosts and pods
            reach); None: plain HTTP (only on loopback, as the site model requires).
    """

    def __init__(self, tmp: Path, realm: dict[str, Any], host: str = "127.0.0.1",
                 tls: Tls | None = None) -> None:
        self.host, self.tls = host, tls
        home = keycloak_home()
        if not (home / "bin" / "kc.sh").exists():
            raise RuntimeError(f"Keycloak is not unpacked at {home}: run bash scripts/setup.sh")
        jdk = java_home()
        if jdk is None:
            raise RuntimeError("no Java 21+ under /usr/lib/jvm: run bash scripts/setup.sh")
        self.home = tmp / "keycloak"
        shutil.copytree(home, self.home, symlinks=True)
        (self.home / "data" / "import").mkdir(parents=True)
        (self.home / "data" / "import" / "mlab-realm.json").write_text(json.dumps(realm))
        self.port = free_port()
        self.log = tmp / "keycloak.log"
        env = {**os.environ, "JAVA_HOME": jdk, "KC_BOOTSTRAP_ADMIN_USERNAME": "admin",
               "KC_BOOTSTRAP_ADMIN_PASSWORD": base64.b32encode(os.urandom(10)).decode(),
               "JAVA_OPTS_KC_HEAP": "-Xms64m -Xmx512m"}
        listen = ["--http-port", str(self.port)]
        if tls is not None:
            listen = ["--http-enabled=false", "--https-port", str(self.port),
                      "--https-certificate-file", str(tls.cert),
                      "--https-certificate-key-file", str(tls.key)]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [str(self.home / "bin" / "kc.sh"), "start-dev", "--http-host", host, *listen,
                 "--import-realm", "--http-management-port", str(free_port())],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    @property
    def issuer(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}/realms/{REALM}"

    def verify(self) -> ssl.SSLContext | bool:
        """httpx's ``verify`` for this server (its CA with TLS)."""
        return ssl.create_default_context(cafile=str(self.tls.ca)) if self.tls else True

    def wait(self, timeout: float = 240) -> float:
        """Wait until the realm's discovery document answers; return the seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Keycloak exited: {self.log.read_text()[-2000:]}")
            try:
                r = httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=2,
                              verify=self.verify())
                if r.status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"Keycloak not ready after {timeout} s: {self.log.read_text()[-2000:]}")

    def warm(self, portal_url: str, client_id: str = "mlab-portal") -> float:
        """Render the realm's login page once, with the theme files it links, as a
        browser's first visit would; return the seconds it took.

        After a start Keycloak compiles its page templates and loads its theme on the
        first login page (2.5 to 3.2 s of the first sign-in, docs/portal.md); a site
        warms it the same way (a startup probe or one request after a restart). The
        request is the portal's own authorization request (PKCE S256, its redirect URI),
        answered with the login form; nobody signs in.
        """
        import hashlib
        import html

        verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=")
        params = {"client_id": client_id, "response_type": "code", "scope": "openid",
                  "redirect_uri": portal_url + "/auth/callback", "state": "warm-up",
                  "code_challenge": challenge.decode(), "code_challenge_method": "S256"}
        start = time.monotonic()
        with httpx.Client(verify=self.verify(), timeout=60) as client:
            page = client.get(f"{self.issuer}/protocol/openid-connect/auth", params=params)
            page.raise_for_status()
            if 'id="kc-form-login"' not in page.text:
                raise RuntimeError(f"Keycloak's warm-up got no login form: {page.text[:300]}")
            origin = self.issuer.split("/realms/")[0]
            for ref in sorted(set(re.findall(r'(?:href|src)="(/resources/[^"]+)"', page.text))):
                client.get(origin + html.unescape(ref))
        return time.monotonic() - start

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


class Portal:
    """``mlab portal serve`` as a child process on 127.0.0.1:``port``."""

    def __init__(self, tmp: Path, site_file: Path, port: int, users_dir: Path,
                 backends: dict[str, str], client_secret: str | None = None,
                 extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.port = port
        self.audit = tmp / "portal-audit.log"
        self.log = tmp / "portal.log"
        argv = [str(Path(sys.executable).with_name("mlab")), "portal", "serve",
                "--site", str(site_file), "--host", "127.0.0.1", "--port", str(port),
                "--users-dir", str(users_dir), "--audit-log", str(self.audit)]
        if client_secret is not None:
            secret = tmp / "client-secret"
            secret.write_text(client_secret + "\n")
            secret.chmod(0o600)
            argv += ["--client-secret-file", str(secret)]
        for user, address in backends.items():
            argv += ["--backend", f"{user}={address}"]
        argv += list(extra_args)
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 60
        while b"listening on" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"portal did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def audit_records(self) -> list[dict[str, Any]]:
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Browser(DevTools):
    """Headless Chromium with a fresh profile and one blank tab (tests/access_clients.py)."""

    def __init__(self, tmp: Path, extra_flags: tuple[str, ...] = ()) -> None:
        super().__init__(tmp, "about:blank", ws_timeout=60, extra_flags=extra_flags)


def open_login_form(browser: Browser, portal_url: str,
                    marks: dict[str, float] | None = None) -> None:
    """Open the portal, press Sign in and wait for Keycloak's own login form.

    Args:
        marks: when given, gets ``time.monotonic()`` of ``portal_page`` (the sign-in button
            shown) and ``login_form`` (Keycloak's form shown).
    """
    marks = {} if marks is None else marks
    browser.goto(portal_url + "/")
    browser.wait_for("document.getElementById('signin') !== null")
    marks["portal_page"] = time.monotonic()
    browser.evaluate("document.getElementById('signin').click()")
    browser.wait_for("document.getElementById('kc-form-login') !== null", timeout=60)
    marks["login_form"] = time.monotonic()


def sign_in(browser: Browser, portal_url: str, user: str, password: str,
            marks: dict[str, float] | None = None) -> None:
    """Open the portal, press Sign in, fill Keycloak's own login form, wait for the page
    that says "MLab: <user>".

    Args:
        marks: when given, gets ``time.monotonic()`` of each step: ``portal_page`` (the
            sign-in button shown), ``login_form`` (Keycloak's form shown), ``submitted``,
            ``signed_in`` (the user's page).
    """
    marks = {} if marks is None else marks
    open_login_form(browser, portal_url, marks)
    browser.evaluate(
        f"document.getElementById('username').value = {json.dumps(user)};"
        f"document.getElementById('password').value = {json.dumps(password)};"
        "document.getElementById('kc-login').click(); true")
    marks["submitted"] = time.monotonic()
    browser.wait_for(f"location.href.startsWith({json.dumps(portal_url)}) && "
                     f"document.title.startsWith({json.dumps(user)})", timeout=60)
    marks["signed_in"] = time.monotonic()


def sign_in_password(browser: Browser, portal_url: str, user: str, password: str) -> None:
    """Sign in on a site without a provider: the portal's own form (the MLab password)."""
    browser.goto(portal_url + "/")
    browser.wait_for("document.getElementById('signin') !== null")
    browser.evaluate(
        f"document.querySelector('input[name=username]').value = {json.dumps(user)};"
        f"document.querySelector('input[name=password]').value = {json.dumps(password)};"
        "document.getElementById('signin').click(); true")
    browser.wait_for(f"document.title.startsWith({json.dumps(user)})", timeout=60)


def wait_novnc(browser: Browser, timeout: float = 40) -> None:
    """Wait for noVNC's connected state. Under heavy load headless Chromium sometimes leaves
    noVNC's page loading without a connection attempt; like a user, reload it (twice at
    most, as tests/e2e/test_image_access.py does).

    Raises:
        TimeoutError: not connected after the reloads.
    """
    connected = "document.documentElement.classList.contains('noVNC_connected')"
    for attempt in range(3):
        if attempt:
            browser.call("Page.reload", ignoreCache=True)
        try:
            browser.wait_for(connected, timeout=timeout / 3 if attempt < 2 else timeout)
            return
        except TimeoutError:
            if attempt == 2:
                raise


def open_desktop(browser: Browser, timeout: float = 40,
                 marks: dict[str, float] | None = None) -> None:
    """Press "Open desktop" and wait for noVNC's connected state (``marks``: ``novnc_page``
    when vnc.html is shown, ``connected``)."""
    marks = {} if marks is None else marks
    browser.evaluate("document.getElementById('open').click()")
    browser.wait_for("location.pathname.endsWith('vnc.html')", timeout=timeout)
    marks["novnc_page"] = time.monotonic()
    wait_novnc(browser, timeout)
    marks["connected"] = time.monotonic()
