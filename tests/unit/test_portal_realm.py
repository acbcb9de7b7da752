"""``mlab portal keycloak-realm``: the realm MLab gives Keycloak has the portal's client
(PKCE S256, the callback URI, groups without the full path) and brute-force detection on;
bad input is one line naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from cli_runner import mlab


def _site(tmp_path: Path, portal: dict) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"apiVersion": "mlab.io/v1", "name": "lab",
                                    "users": [{"name": "alice"}], "portal": portal}))
    return path


def test_realm_has_the_client_and_brute_force_detection(tmp_path: Path, capsys) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    site = _site(tmp_path, {"enabled": True, "url": "https://mlab.example.org", "oidc": {
        "issuer": "https://sso.example.org/realms/lab", "clientId": "mlab-portal",
        "clientSecretSecret": "portal-oidc", "reviewerGroup": "mlab-reviewers"}})
    code, out, err = mlab("portal", "keycloak-realm", "--site", str(site),
                          "--client-secret-file", str(secret), capsys=capsys)
    assert code == 0, err
    realm = json.loads(out)
    assert realm["realm"] == "lab" and realm["sslRequired"] == "external"
    assert realm["bruteForceProtected"] is True and realm["failureFactor"] == 5
    assert realm["permanentLockout"] is False
    (client,) = realm["clients"]
    assert client["redirectUris"] == ["https://mlab.example.org/auth/callback"]
    assert client["secret"] == "s3cret" and client["publicClient"] is False
    assert client["attributes"]["pkce.code.challenge.method"] == "S256"
    assert client["directAccessGrantsEnabled"] is False
    assert [g["name"] for g in realm["groups"]] == ["mlab-reviewers"]


def test_realm_needs_a_provider(tmp_path: Path, capsys) -> None:
    site = _site(tmp_path, {"enabled": True, "url": "https://mlab.example.org"})
    code, out, err = mlab("portal", "keycloak-realm", "--site", str(site), capsys=capsys)
    assert code == 2 and "portal.oidc is not set" in err and "Traceback" not in err
