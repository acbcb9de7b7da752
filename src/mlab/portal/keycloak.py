"""A Keycloak realm for the portal, as Keycloak's own realm export JSON (pure).

``mlab portal keycloak-realm --site SITE`` prints it for ``kc.sh import`` or the admin
console's "Create realm" (resource file); the tests import the same realm with test users.
It holds the portal's client (authorization code flow, PKCE S256, redirect URI
``<portal.url>/auth/callback``, a ``groups`` claim without the full path) and the realm's
brute-force detection: Keycloak, not the portal, sees the passwords of a site with a
provider, so it must lock an account after repeated failures.

Source of the fields: Keycloak's RealmRepresentation / ClientRepresentation (Admin REST API
reference, Keycloak 26) and "Brute force detection" in the Server Administration Guide.
"""

from __future__ import annotations

from typing import Any

CLIENT_ID = "mlab-portal"

BRUTE_FORCE = {
    "bruteForceProtected": True,
    "permanentLockout": False,
    "failureFactor": 5,  # failures before a temporary lockout
    "waitIncrementSeconds": 60,  # first lockout; grows with each further failure
    "maxFailureWaitSeconds": 900,
    "maxDeltaTimeSeconds": 43200,  # failures are forgotten after 12 h without one
    "quickLoginCheckMilliSeconds": 1000,  # two tries within 1 s: a machine, not a person
    "minimumQuickLoginWaitSeconds": 60,
}
"""The realm's brute-force detection (temporary lockouts, Keycloak's defaults made active)."""


def realm(name: str, portal_url: str, client_secret: str | None, *,
          client_id: str = CLIENT_ID, ssl_required: str = "external",
          groups: list[str] | None = None,
          users: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The realm export for the portal at ``portal_url``.

    Args:
        name: the realm name (the issuer is ``<keycloak>/realms/<name>``).
        portal_url: ``portal.url`` of the site, without a trailing slash.
        client_secret: the confidential client's secret; None: a public client (PKCE only).
        client_id: ``portal.oidc.clientId``.
        ssl_required: ``external`` (HTTPS except from private addresses), ``all`` or
            ``none`` (tests on loopback).
        groups: group names to create (``reviewerGroup``, ``adminGroup``).
        users: Keycloak UserRepresentations to create (tests).

    Returns:
        A RealmRepresentation as a dict (JSON-serialisable).
    """
    return {
        "realm": name, "enabled": True, "sslRequired": ssl_required, **BRUTE_FORCE,
        "groups": [{"name": g} for g in groups or []],
        "clients": [{
            "clientId": client_id, "enabled": True, "protocol": "openid-connect",
            "publicClient": client_secret is None,
            **({"secret": client_secret} if client_secret else {}),
            "standardFlowEnabled": True, "implicitFlowEnabled": False,
            "directAccessGrantsEnabled": False, "redirectUris": [f"{portal_url}/auth/callback"],
            "webOrigins": [portal_url],
            "attributes": {"pkce.code.challenge.method": "S256"},
            "protocolMappers": [{
                "name": "groups", "protocol": "openid-connect",
                "protocolMapper": "oidc-group-membership-mapper",
                "config": {"claim.name": "groups", "full.path": "false",
                           "id.token.claim": "true", "access.token.claim": "true",
                           "userinfo.token.claim": "true"},
            }],
        }],
        "users": users or [],
    }
