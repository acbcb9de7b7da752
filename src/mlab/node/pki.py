"""The node's certificates and keys: one CA, a certificate per identity, the service-account key.

Invariant: :func:`identities` is the one table of who talks to whom; a certificate's
subject is the Kubernetes identity (CN = user, O = groups) the API server's x509
authenticator reads (https://kubernetes.io/docs/reference/access-authn-authz/authentication/#x509-client-certificates),
and RBAC grants it what the built-in roles (``system:kube-controller-manager``,
``system:kube-scheduler``, ``system:node-proxier``, the Node authorizer) or
:mod:`mlab.node.addons` give. Keys are ECDSA P-256 (fast to make, accepted by every
component). Generation is pure (bytes out); :func:`ensure_pki` writes the files once and
keeps them, so a second ``mlab node up`` presents the same CA.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from mlab import certs
from mlab.node import layout

VALIDITY = datetime.timedelta(days=3650)


@dataclass(frozen=True)
class Identity:
    """One certificate: ``name`` (file stem), subject CN/O, server or client use, SANs."""

    name: str
    cn: str
    groups: tuple[str, ...] = ()
    server: bool = False
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = field(default=())


def identities() -> list[Identity]:
    """Every certificate the node uses (the CA excepted)."""
    svc = ("kubernetes", "kubernetes.default", "kubernetes.default.svc",
           f"kubernetes.default.svc.{layout.CLUSTER_DOMAIN}", "localhost")
    return [
        Identity("apiserver", "kube-apiserver", server=True, dns=svc,
                 ips=(layout.NODE_IP, layout.KUBERNETES_SERVICE_IP, "127.0.0.1")),
        Identity("apiserver-kubelet-client", "kube-apiserver-kubelet-client",
                 ("system:masters",)),
        Identity("admin", "mlab-admin", ("system:masters",)),
        Identity("controller-manager", "system:kube-controller-manager"),
        Identity("scheduler", "system:kube-scheduler"),
        Identity("kubelet", f"system:node:{layout.NODE_NAME}", ("system:nodes",)),
        Identity("kubelet-serving", layout.NODE_NAME, server=True,
                 dns=(layout.NODE_NAME,), ips=(layout.NODE_IP,)),
        Identity("kube-proxy", "system:kube-proxy"),
        Identity("kube-router", "system:kube-router"),
    ]


def make_ca() -> tuple[bytes, bytes]:
    """A new self-signed CA (:func:`mlab.certs.make_ca`). Returns (certificate PEM, key PEM)."""
    return certs.make_ca(certs.subject("mlab-node-ca"), VALIDITY.days)


def make_cert(ident: Identity, ca_cert_pem: bytes, ca_key_pem: bytes) -> tuple[bytes, bytes]:
    """A certificate for ``ident`` signed by the CA (:func:`mlab.certs.issue`). Returns
    (certificate PEM, key PEM)."""
    return certs.issue(ca_cert_pem, ca_key_pem, certs.subject(ident.cn, ident.groups),
                       VALIDITY.days, server=ident.server, names=[*ident.dns, *ident.ips])


def make_service_account_key() -> tuple[bytes, bytes]:
    """The key that signs service-account tokens. Returns (public PEM, private PEM)."""
    key = certs.new_key("ec")
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pub, certs.key_pem(key)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(mode)
    tmp.replace(path)


def ensure_pki(pki: Path) -> None:
    """Write the CA, every identity's ``NAME.crt``/``NAME.key`` and ``sa.pub``/``sa.key``
    under ``pki`` where missing (keys mode 0600). Existing files are kept."""
    ca_crt, ca_key = pki / "ca.crt", pki / "ca.key"
    if not (ca_crt.exists() and ca_key.exists()):
        cert, key = make_ca()
        _write(ca_key, key, 0o600)
        _write(ca_crt, cert, 0o644)
    ca_cert_pem, ca_key_pem = ca_crt.read_bytes(), ca_key.read_bytes()
    for ident in identities():
        crt, key_path = pki / f"{ident.name}.crt", pki / f"{ident.name}.key"
        if crt.exists() and key_path.exists():
            continue
        cert, key = make_cert(ident, ca_cert_pem, ca_key_pem)
        _write(key_path, key, 0o600)
        _write(crt, cert, 0o644)
    if not (pki / "sa.key").exists():
        pub, priv = make_service_account_key()
        _write(pki / "sa.key", priv, 0o600)
        _write(pki / "sa.pub", pub, 0o644)
