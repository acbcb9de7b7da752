"""The rendered portal's wake on Kubernetes (``portal.wake``) and its provider CA
(``portal.oidc.caBundleSecret``): the rights rendered (a Role that may only get and scale
the site's HomePod Deployments), the edges (only the portal reaches the API server and the
provider), the podman translation, and :mod:`mlab.cull.incluster` against a real HTTPS
server that speaks the Scale subresource (the Kubernetes API is the protocol boundary; the
real API server is tests/node/test_node_portal.py)."""

from __future__ import annotations

import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from mlab.cull.incluster import InCluster, wake
from mlab.errors import DeployError, SiteError, UsageError
from mlab.render import render_site
from mlab.render.common import labels
from mlab.site import parse_site
from mlab.verify.policy_eval import Endpoint, allowed

API = "10.0.0.1"


def _site(wake: bool = True, **cluster: Any):
    return parse_site({
        "name": "t", "users": [{"name": "alice"}, {"name": "bob"}],
        "access": {"officeCIDRs": ["10.20.0.0/16"]},
        "cluster": {"apiServerCIDRs": [f"{API}/32"], **cluster},
        "portal": {"enabled": True, "url": "https://portal.test", "wake": wake,
                   "oidc": {"issuer": "https://sso.test/realms/lab", "clientId": "mlab-portal",
                            "caBundleSecret": "idp-ca", "cidrs": ["10.30.0.10/32"]}},
    })


def _objects(site) -> dict[str, dict[str, Any]]:
    return {f"{o['kind']}/{o['metadata']['name']}": o for o in render_site(site).files["portal.yaml"]}


def test_wake_renders_a_role_that_scales_only_homepods() -> None:
    objs = _objects(_site())
    role = objs["Role/mlab-portal"]
    names = ["homepod-alice", "homepod-bob"]
    assert role["rules"] == [
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "resourceNames": names,
         "verbs": ["get", "patch"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": names,
         "verbs": ["get"]},
    ]
    binding = objs["RoleBinding/mlab-portal"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mlab-portal",
                                    "namespace": "mlab"}]
    pod = objs["Deployment/portal"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "mlab-portal" and pod["automountServiceAccountToken"]
    command = pod["containers"][0]["command"]
    assert command[command.index("--wake") + 1] == "in-cluster"
    assert command[command.index("--idp-ca-file") + 1] == "/etc/mlab/portal/idp-ca.crt"
    sources = next(v for v in pod["volumes"] if v["name"] == "portal-secrets")["projected"]["sources"]
    assert {"name": "idp-ca", "items": [{"key": "ca.crt", "path": "idp-ca.crt"}]} in [
        s["secret"] for s in sources]


def test_without_wake_the_portal_has_no_rights_and_no_token() -> None:
    objs = _objects(_site(wake=False))
    assert [k for k in objs if k.split("/")[0] in ("ServiceAccount", "Role", "RoleBinding")] == []
    pod = objs["Deployment/portal"]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and "serviceAccountName" not in pod
    assert "--wake" not in pod["containers"][0]["command"]
    policies = {o["metadata"]["name"] for o in render_site(_site(wake=False)).files["network.yaml"]}
    assert "portal-to-api-server" not in policies


def test_wake_needs_the_api_servers_addresses() -> None:
    with pytest.raises(SiteError, match=r"portal\.wake.*cluster\.apiServerCIDRs"):
        parse_site({"name": "t", "users": [{"name": "alice"}],
                    "portal": {"enabled": True, "wake": True}})


def test_only_the_portal_reaches_the_api_server_and_the_provider() -> None:
    site = _site(apiServerPort=6443)
    policies = render_site(site).files["network.yaml"]
    portal = Endpoint("10.244.9.6", "mlab", labels(site, "portal"))
    homepod = Endpoint("10.244.9.7", "mlab", labels(site, "homepod", "alice"))
    assert allowed(policies, portal, Endpoint(API), 6443)[0]
    assert not allowed(policies, portal, Endpoint(API), 10250)[0]
    assert not allowed(policies, portal, Endpoint("10.0.0.2"), 6443)[0]
    assert allowed(policies, portal, Endpoint("10.30.0.10"), 443)[0]
    for port in (6443, 443):
        assert not allowed(policies, homepod, Endpoint(API), port)[0]
        assert not allowed(policies, homepod, Endpoint("10.30.0.10"), port)[0]


def test_podman_translation_asks_the_host_instead_of_the_in_cluster_wake() -> None:
    from mlab.podman.translate import _portal_on_host

    spec: dict[str, Any] = {
        "containers": [{"command": ["mlab", "portal", "serve", "--port", "8443",
                                    "--wake", "in-cluster", "--share", "/s"],
                        "volumeMounts": []}],
        "volumes": []}
    _portal_on_host(parse_site({"name": "t"}), spec, {}, "/state")
    command = spec["containers"][0]["command"]
    assert "in-cluster" not in command and "--share" in command
    assert command.count("--wake") == 1
    assert command[command.index("--wake") + 1] == "host"


def test_portal_options_are_set_by_flag_in_place_or_appended() -> None:
    from mlab.render.portal import set_options, wake_args

    rendered = ["mlab", "portal", "serve", "--port", "8443", *wake_args("in-cluster")]
    got = set_options(rendered, [*wake_args("host", "/w"), "--port", "9443"])
    assert got == ["mlab", "portal", "serve", "--port", "9443", "--wake", "host",
                   "--wake-dir", "/w"]
    assert rendered[-1] == "in-cluster"  # not mutated


def test_idp_ca_file_that_is_no_bundle_is_one_line(tmp_path: Path) -> None:
    from mlab.portal.app import idp_tls_context

    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate\n")
    with pytest.raises(UsageError, match="--idp-ca-file"):
        idp_tls_context(bad)


class FakeApiServer:
    """An HTTPS server answering the Scale subresource of two Deployments (alice's at
    ``replicas``; any other name: 403 as RBAC answers), recording each request."""

    def __init__(self, tmp: Path, replicas: int) -> None:
        from mlab.node.pki import Identity, make_ca, make_cert

        ca, ca_key = make_ca()
        cert, key = make_cert(Identity("api", "api", server=True, ips=("127.0.0.1",)), ca, ca_key)
        for name, data in (("ca.crt", ca), ("tls.crt", cert), ("tls.key", key)):
            (tmp / name).write_bytes(data)
        (tmp / "token").write_text("tok-123\n")
        self.requests: list[tuple[str, str, str, str, bytes]] = []
        self.replicas = replicas
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((self.command, self.path,
                                       self.headers.get("Authorization", ""),
                                       self.headers.get("Content-Type", ""), body))
                if not self.path.endswith("/deployments/homepod-alice/scale"):
                    self._answer(403, {"kind": "Status", "message": f"deployments.apps "
                                       f"\"{self.path.split('/')[-2]}\" is forbidden"})
                    return
                if self.command == "PATCH":
                    outer.replicas = json.loads(body)["spec"]["replicas"]
                self._answer(200, {"kind": "Scale", "spec": {"replicas": outer.replicas}})

            do_GET = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp / "tls.crt", tmp / "tls.key")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.api = InCluster.from_pod(
            {"KUBERNETES_SERVICE_HOST": "127.0.0.1",
             "KUBERNETES_SERVICE_PORT": str(self.server.server_address[1])}, tmp)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_in_cluster_wake_scales_a_culled_homepod_and_audits(tmp_path: Path) -> None:
    fake = FakeApiServer(tmp_path, replicas=0)
    try:
        audit = tmp_path / "audit.jsonl"
        assert wake(_site(), "alice", fake.api, audit) is True
        assert fake.replicas == 1
        (get, _, auth, _, _), (patch, path, _, ctype, body) = fake.requests
        assert (get, patch) == ("GET", "PATCH") and auth == "Bearer tok-123"
        assert path == "/apis/apps/v1/namespaces/mlab/deployments/homepod-alice/scale"
        assert ctype == "application/merge-patch+json"
        assert json.loads(body) == {"spec": {"replicas": 1}}
        record = json.loads(audit.read_text())
        assert {k: record[k] for k in ("event", "user", "deployment", "was_culled")} == {
            "event": "wake", "user": "alice", "deployment": "homepod-alice", "was_culled": True}
        # A running HomePod is left alone (no patch), and audited as not culled.
        assert wake(_site(), "alice", fake.api, audit) is False
        assert [r[0] for r in fake.requests] == ["GET", "PATCH", "GET"]
    finally:
        fake.close()


def test_in_cluster_refusal_is_one_line_and_unknown_users_are_refused(tmp_path: Path) -> None:
    fake = FakeApiServer(tmp_path, replicas=1)
    try:
        with pytest.raises(DeployError, match=r"scale deployment code-service: API server "
                           r"answered 403: .*forbidden"):
            fake.api.scale("mlab", "code-service", 0)
        with pytest.raises(UsageError, match="'carol' is not a user"):
            wake(_site(), "carol", fake.api)
    finally:
        fake.close()
    with pytest.raises(UsageError, match="no ServiceAccount token"):
        InCluster.from_pod({}, tmp_path / "nowhere")
