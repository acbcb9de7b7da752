"""The one certificate builder (mlab.certs) as its two users call it: the node's PKI
(kube-apiserver, kubelet and client identities) and the site CA (tests/unit/test_tls_render.py
covers the site's files). Real openssl verifies each chain and purpose."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlab.node import pki


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _openssl_verify(ca: Path, cert: Path, purpose: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca), "-purpose", purpose,
                           str(cert)], capture_output=True, text=True, check=False)


def test_node_pki_has_every_identity_signed_for_its_use(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path)
    ca = _load(tmp_path / "ca.crt")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "mlab-node-ca"
    for ident in pki.identities():
        path = tmp_path / f"{ident.name}.crt"
        cert = _load(path)
        cert.verify_directly_issued_by(ca)
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        want = ExtendedKeyUsageOID.SERVER_AUTH if ident.server else ExtendedKeyUsageOID.CLIENT_AUTH
        assert list(usage) == [want], ident.name
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == ident.cn
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        assert orgs == list(ident.groups), ident.name
        purpose = "sslserver" if ident.server else "sslclient"
        proc = _openssl_verify(tmp_path / "ca.crt", path, purpose)
        assert proc.returncode == 0 and ": OK" in proc.stdout, (ident.name, proc.stderr)
        assert (tmp_path / f"{ident.name}.key").stat().st_mode & 0o777 == 0o600


def test_apiserver_certificate_names_every_address_it_is_dialled_at(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path)
    cert = _load(tmp_path / "apiserver.crt")
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ident = next(i for i in pki.identities() if i.name == "apiserver")
    assert sans.get_values_for_type(x509.DNSName) == list(ident.dns)
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == list(ident.ips)
    client = _load(tmp_path / "admin.crt")
    try:
        client.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        raise AssertionError("a client certificate with no names got a subjectAltName")
    except x509.ExtensionNotFound:
        pass


def test_second_ensure_keeps_the_ca(tmp_path: Path) -> None:
    pki.ensure_pki(tmp_path)
    first = (tmp_path / "ca.crt").read_bytes()
    pki.ensure_pki(tmp_path)
    assert (tmp_path / "ca.crt").read_bytes() == first
