"""The site CA (``tls.mode: site-ca``): made once per site, kept with the site's passwords.

Invariant: ``<state>/<site>/tls/`` (directory 0700, keys 0600) holds ``ca.crt``/``ca.key``
and one certificate and key per holder (``code-service``, ``homepod-<user>``). The CA is
never replaced once made (clients trust it); a holder's certificate is issued again only
when the names it must cover change or it is within :data:`RENEW_DAYS` of expiry, so
rendering twice gives the same Secrets. Files are written atomically under a lock, like
``passwords.json`` (:mod:`mlab.secrets`).

Certificates follow RFC 5280 with the CA/Browser Forum's shape for server certificates
(subjectAltName with every name, serverAuth, a CA with ``pathlen:0``), which git (curl),
pip, Chromium, TigerVNC's GnuTLS, websockify and xrdp accept.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from mlab.atomic import write_atomic
from mlab.errors import MlabError
from mlab.secrets import state_root
from mlab.site import Site
from mlab.topology import CLUSTER_DOMAIN, LOOPBACK

CA_DAYS = 3650
"""Days the site CA is valid."""
CERT_DAYS = 825
"""Days a server certificate is valid (the CA/Browser Forum's former ceiling)."""
RENEW_DAYS = 30
"""A certificate this close to expiry is issued again at the next render."""
CODE_SERVICE = "code-service"
"""The code service's holder name (its files: ``code-service.crt``/``.key``)."""


@dataclass(frozen=True)
class Issued:
    """One certificate and its key, PEM text.

    Attributes:
        cert: the certificate (PEM).
        key: its private key (PEM, PKCS#8, unencrypted).
    """

    cert: str
    key: str


@dataclass(frozen=True)
class SiteTls:
    """What the renderer needs: the CA certificate and each holder's certificate.

    Attributes:
        ca: the CA certificate (PEM); what clients trust.
        issued: holder name (``code-service``, ``homepod-<user>``) to its certificate.
    """

    ca: str
    issued: dict[str, Issued]


def tls_dir(site: Site, state_dir: Path | None = None) -> Path:
    """``<state root>/<site name>/tls``."""
    return state_root(state_dir) / site.name / "tls"


def ca_path(site: Site, state_dir: Path | None = None) -> Path:
    """The site CA's certificate file, the one clients trust (``GIT_SSL_CAINFO``)."""
    return tls_dir(site, state_dir) / "ca.crt"


def holders(site: Site) -> list[str]:
    """Who gets a certificate: the code service (``site-ca`` mode only; ``secret`` mode
    brings its own), the Airlock when enabled (its VNC and noVNC) and every HomePod
    (``homepod-<user>``: its VNC, noVNC and RDP)."""
    out = [CODE_SERVICE] if site.tls.mode == "site-ca" else []
    out += ["airlock"] if site.airlock.enabled else []
    return out + [f"homepod-{u.name}" for u in site.users]


def names(site: Site, holder: str) -> list[str]:
    """The subjectAltNames of ``holder``'s certificate, sorted.

    The names offices use: ``tls.names``, ``access.bindAddress`` (unless 0.0.0.0 or ::),
    the Services' ``externalIPs``, ``localhost`` and 127.0.0.1; the code service also gets
    ``codeService.host``, its clusterIP and its in-cluster DNS names (:func:`service_names`).
    """
    out = {"localhost", LOOPBACK, *site.tls.names}
    bind = ipaddress.ip_address(site.access.bind_address)
    if not bind.is_unspecified:
        out.add(str(bind))
    if holder == CODE_SERVICE:
        out |= {site.code_service.host, site.code_service_ip,
                *site.code_service.service.external_ips, *service_names(site, CODE_SERVICE)}
    elif holder == "airlock":
        out |= set(site.airlock.service.external_ips)
    else:
        user = next((u for u in site.users if f"homepod-{u.name}" == holder), None)
        if user is not None:
            out |= set(user.service.external_ips)
    return sorted(out)


def service_names(site: Site, service: str) -> list[str]:
    """The in-cluster DNS names of the Service ``service`` (Kubernetes DNS specification,
    https://github.com/kubernetes/dns/blob/master/docs/specification.md): ``<service>``,
    ``<service>.<namespace>``, ``<service>.<namespace>.svc`` and
    ``<service>.<namespace>.svc.cluster.local`` (the default cluster domain, the MLab node's;
    a cluster with another domain adds its name to ``tls.names``)."""
    ns = f"{service}.{site.namespace}"
    return [service, ns, f"{ns}.svc", f"{ns}.svc.{CLUSTER_DOMAIN}"]


def _x509():  # type: ignore[no-untyped-def]
    """``cryptography.x509``, imported on first use (rendering without TLS never loads it)."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - a dependency of mlab
        raise MlabError("tls.mode site-ca needs the cryptography package",
                        hint="pip install cryptography") from None
    return x509


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _make_ca(site: Site) -> Issued:
    _x509()  # the one clear line when cryptography is missing
    from mlab import certs

    cert, key = certs.make_ca(certs.subject(f"MLab site CA {site.name}", ["MLab"]), CA_DAYS,
                              path_length=0, digital_signature=False, key_id=True)
    return Issued(cert.decode(), key.decode())


def _issue(site: Site, ca: Issued, holder: str, alt: list[str]) -> Issued:
    x509 = _x509()
    from mlab import certs

    code = holder == CODE_SERVICE
    # Desktops get RSA: xrdp's and TigerVNC's TLS are known to work with it on Debian 12.
    cert, key = certs.issue(
        ca.cert.encode(), ca.key.encode(), certs.subject(f"{holder}.{site.name}", ["MLab"]),
        CERT_DAYS, server=True, names=alt, key_kind="ec" if code else "rsa",
        key_usage=x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=not code,
            data_encipherment=False, key_agreement=code, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False),
        authority_key_id=True)
    return Issued(cert.decode(), key.decode())


def _current(issued: Issued, alt: list[str]) -> bool:
    """Whether ``issued`` covers exactly ``alt`` and is not near expiry."""
    x509 = _x509()
    cert = x509.load_pem_x509_certificate(issued.cert.encode())
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = sorted([str(v) for v in ext.get_values_for_type(x509.DNSName)]
                  + [str(v) for v in ext.get_values_for_type(x509.IPAddress)])
    left = cert.not_valid_after_utc - _now()
    return have == sorted(alt) and left > datetime.timedelta(days=RENEW_DAYS)


def _read(directory: Path, stem: str) -> Issued | None:
    crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    try:
        return Issued(crt.read_text(encoding="ascii"), key.read_text(encoding="ascii"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise MlabError(f"{directory}: cannot read the site's TLS files: {exc}") from None


def _write(directory: Path, stem: str, issued: Issued) -> None:
    write_atomic(directory / f"{stem}.key", issued.key, mode=0o600)
    write_atomic(directory / f"{stem}.crt", issued.cert, mode=0o644)


def load_or_create(site: Site, state_dir: Path | None = None) -> SiteTls | None:
    """The site CA and every holder's certificate, made or renewed as needed.

    Args:
        site: a validated site.
        state_dir: the state root (``mlab.secrets.state_root``); None: the default.

    Returns:
        None when ``tls.mode`` is ``off``; else the CA and the certificates of
        :func:`holders`.

    Raises:
        MlabError: the TLS directory cannot be read or written, or a file in it is not a
            certificate or key (one line naming it).
    """
    if not site.tls.enabled:
        return None
    directory = tls_dir(site, state_dir)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
    except OSError as exc:
        raise MlabError(f"{directory}: cannot create the site's TLS directory: "
                        f"{exc.strerror}") from None
    with FileLock(str(directory / ".lock")):
        ca = _read(directory, "ca")
        if ca is None:
            ca = _make_ca(site)
            _write(directory, "ca", ca)
        issued: dict[str, Issued] = {}
        for holder in holders(site):
            alt = names(site, holder)
            have = _read(directory, holder)
            try:
                ok = have is not None and _current(have, alt)
            except ValueError:
                raise MlabError(f"{directory / (holder + '.crt')}: not a PEM certificate",
                                hint="delete it; the next render issues a new one") from None
            if not ok:
                have = _issue(site, ca, holder, alt)
                _write(directory, holder, have)
            assert have is not None
            issued[holder] = have
    return SiteTls(ca=ca.cert, issued=issued)


def trust_hint(site: Site, state_dir: Path | None = None) -> str:
    """How a user trusts the site CA: its path and the git, pip, curl and browser commands."""
    ca = ca_path(site, state_dir)
    return "\n".join([
        f"site CA: {ca}",
        f"  git:     git config --global http.sslCAInfo {ca}   (or GIT_SSL_CAINFO={ca})",
        f"  pip:     pip config set global.cert {ca}   (or PIP_CERT={ca})",
        f"  curl:    curl --cacert {ca} https://...",
        f"  mlab:    SSL_CERT_FILE={ca} mlab request ...",
        f"  browser: import {ca} as an authority (Chromium: Settings > Privacy and security >"
        " Security > Manage certificates > Authorities; Firefox: Settings > Certificates)",
        f"  VNC:     vncviewer X509CA={ca} HOST::PORT;  RDP: xfreerdp /sec:tls and accept the"
        " certificate the site CA signed",
    ])
