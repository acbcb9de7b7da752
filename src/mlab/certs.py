"""Certificates on ``cryptography``: a CA, and a certificate it issues (pure: PEM bytes out).

The one certificate builder of MLab: the site CA and its server certificates
(:mod:`mlab.tls`) and the node's CA and component certificates (:mod:`mlab.node.pki`) are
both made here; the callers choose the subject, lifetime and usages and keep the files.
Shapes follow RFC 5280 (basicConstraints critical, keyUsage critical when present,
subjectAltName with every name the client dials: an IP address entry for an address, a DNS
entry otherwise). Certificates start five minutes in the past, so a clock a little behind
accepts them.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyKind = Literal["ec", "rsa"]
"""``ec``: ECDSA P-256; ``rsa``: RSA 2048 (exponent 65537)."""
BACKDATE = datetime.timedelta(minutes=5)
"""How far before now a certificate starts."""


def subject(cn: str, orgs: Sequence[str] = ()) -> x509.Name:
    """A subject name: an O attribute per entry of ``orgs`` (a Kubernetes identity's groups),
    then CN."""
    return x509.Name([*(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def new_key(kind: KeyKind = "ec") -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    """A new private key of ``kind`` (:data:`KeyKind`)."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    """``key`` as PEM, PKCS#8, unencrypted."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def alt_names(names: Iterable[str]) -> list[x509.GeneralName]:
    """subjectAltName entries in order: an IP address entry for an address, else DNS."""
    out: list[x509.GeneralName] = []
    for n in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            out.append(x509.DNSName(n))
    return out


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def make_ca(name: x509.Name, days: int, path_length: int | None = None,
            digital_signature: bool = True, key_id: bool = False) -> tuple[bytes, bytes]:
    """A new self-signed CA (ECDSA P-256, SHA-256).

    Args:
        name: its subject and issuer (:func:`subject`).
        days: validity in days.
        path_length: basicConstraints ``pathlen`` (0: it signs only end certificates;
            None: no limit).
        digital_signature: keyUsage digitalSignature besides keyCertSign and cRLSign.
        key_id: add the subjectKeyIdentifier extension.

    Returns:
        (certificate PEM, key PEM).
    """
    key = new_key("ec")
    now = _now()
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=digital_signature, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    )
    if key_id:
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)


def issue(ca_cert_pem: bytes, ca_key_pem: bytes, name: x509.Name, days: int, *,
          server: bool, names: Iterable[str] = (), key_kind: KeyKind = "ec",
          key_usage: x509.KeyUsage | None = None,
          authority_key_id: bool = False) -> tuple[bytes, bytes]:
    """A certificate for a new key, signed by the CA (SHA-256).

    Args:
        ca_cert_pem: the CA's certificate (PEM).
        ca_key_pem: the CA's key (PEM, unencrypted).
        name: the subject (:func:`subject`).
        days: validity in days.
        server: extendedKeyUsage serverAuth, else clientAuth.
        names: subjectAltName entries (:func:`alt_names`); none: no extension.
        key_kind: the new key's kind.
        key_usage: a critical keyUsage extension; None: none.
        authority_key_id: add the authorityKeyIdentifier of the CA's key.

    Returns:
        (certificate PEM, key PEM).

    Raises:
        ValueError: the CA's certificate or key is not PEM.
    """
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = new_key(key_kind)
    now = _now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder().subject_name(name).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    sans = alt_names(names)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if authority_key_id:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem(key)
