"""``mlab portal keycloak-realm``: the realm MLab gives Keycloak has the portal's client
(PKCE S256, the callback URI, groups without the full path) and brute-force detection on;
bad input is one line naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from mlab.cli.main import main


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


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
    code, out, err = _run(capsys, "portal", "keycloak-realm", "--site", str(site),
                          "--client-secret-file", str(secret))
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
    code, out, err = _run(capsys, "portal", "keycloak-realm", "--site", str(site))
    assert code == 2 and "portal.oidc is not set" in err and "Traceback" not in err
