"""render_site follows docs/CONTRACTS.md: names, labels, env, mounts, no secrets in files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlab.render import FILES, dump_yaml, render_site
from mlab.secrets import password_keys
from mlab.site import load_site, parse_site

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
PASSWORDS = {"alice": "pw-alice-123", "bob": "pw-bob-456", "gemfield": "pw-gem-789",
             "airlock": "pw-airlock-0", "admin": "pw-admin-1",
             "mlab-publisher": "pw-publisher-2"}

LABEL_KEYS = ("app.kubernetes.io/name", "app.kubernetes.io/instance",
              "app.kubernetes.io/component", "app.kubernetes.io/managed-by")


def _passwords(site):
    return {key: f"pw-{key}-{i:04d}" for i, key in enumerate(password_keys(site))}


def _by(objs, kind, name):
    return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_files_and_labels(path: Path) -> None:
    site = load_site(path)
    rendered = render_site(site, _passwords(site))
    expected = [f for f in FILES if f != "portal.yaml" or site.portal.enabled]
    assert sorted(rendered.files) == sorted(expected)
    for objs in [*rendered.files.values(), rendered.secrets]:
        for obj in objs:
            labels = obj["metadata"]["labels"]
            assert [labels[k] for k in LABEL_KEYS][0:2] == ["mlab", site.name]
            assert labels["app.kubernetes.io/managed-by"] == "mlab"
            assert labels["app.kubernetes.io/component"] in ("homepod", "airlock", "code-service", "portal")
            assert obj["metadata"]["namespace"] == site.namespace
    for obj in rendered.files["homepod.yaml"]:
        assert obj["metadata"]["labels"]["mlab.io/user"] in [u.name for u in site.users]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_no_password_in_files(path: Path) -> None:
    site = load_site(path)
    passwords = _passwords(site)
    rendered = render_site(site, passwords)
    text = "".join(rendered.texts().values())
    for pw in passwords.values():
        assert pw not in text
    assert all(o["kind"] != "Secret" for objs in rendered.files.values() for o in objs)
    names = {s["metadata"]["name"] for s in rendered.secrets}
    assert {f"homepod-{u.name}-password" for u in site.users if not u.password_secret} <= names
    assert {"airlock-password", "code-service-admin"} <= names


def test_deterministic_and_round_trips() -> None:
    site = load_site(ROOT / "examples" / "local.yaml")
    one = render_site(site, PASSWORDS)
    two = render_site(load_site(ROOT / "examples" / "local.yaml"), dict(PASSWORDS))
    assert one.texts(True) == two.texts(True)
    for name, objs in one.files.items():
        assert list(yaml.safe_load_all(one.texts()[name])) == objs


def test_homepod_contract() -> None:
    site = load_site(ROOT / "examples" / "local.yaml")
    objs = render_site(site).files["homepod.yaml"]
    dep = _by(objs, "Deployment", "homepod-alice")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["MLAB_USER"] == "alice" and env["MLAB_UID"] == "1001"
    assert env["MLAB_MODE"] == "homepod" and env["MLAB_CLIPBOARD"] == "to-pod"
    assert env["MLAB_SSH_ACCESS"] == "shell"  # posture: reviewed
    assert env["MLAB_PASSWORD_FILE"] == "/etc/mlab/secret/password"
    assert env["MLAB_CODE_HOST"] == "code.mlab.local" and env["TZ"] == "UTC"
    assert env["MLAB_IMAGE"] == site.image.ref
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["password"]["secret"]["defaultMode"] == 0o444  # the user reads it
    assert "MLAB_PASSWORD" not in env
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/opt/public/airlock"]["readOnly"] is True
    assert mounts["/opt/outbox"]["subPath"] == "alice" and "readOnly" not in mounts["/opt/outbox"]
    assert mounts["/etc/mlab/secret"]["readOnly"] is True
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[mounts["/dev/shm"]["name"]]["emptyDir"]["medium"] == "Memory"
    assert vols[mounts["/home/alice"]["name"]]["persistentVolumeClaim"]["claimName"] == "home-alice"
    assert vols["password"]["secret"]["secretName"] == "homepod-alice-password"
    assert pod["dnsPolicy"] == "None" and pod["dnsConfig"]["nameservers"] == ["127.0.0.1"]
    assert pod["hostAliases"] == [{"ip": site.code_service_ip, "hostnames": ["code.mlab.local"]}]
    # Readiness without a connection to VNC (TigerVNC blacklists probe addresses).
    assert c["readinessProbe"]["exec"]["command"][-1].startswith("grep -sqE ':170C ")
    assert c["livenessProbe"]["httpGet"]["port"] == "novnc"
    svc = _by(objs, "Service", "homepod-alice")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {
        "vnc": 15901, "rdp": 13389, "novnc": 17031, "ssh": 12201}
    assert _by(objs, "PersistentVolumeClaim", "home-alice")["spec"]["resources"] == {
        "requests": {"storage": "10Gi"}}


def test_other_user_objects_absent() -> None:
    """Nothing of bob's is referenced from alice's pod."""
    site = load_site(ROOT / "examples" / "local.yaml")
    dep = _by(render_site(site).files["homepod.yaml"], "Deployment", "homepod-alice")
    text = dump_yaml([dep])
    assert "claimName: home-alice" in text and "bob" not in text


def test_code_service_contract() -> None:
    site = load_site(ROOT / "examples" / "local.yaml")
    objs = render_site(site).files["code-service.yaml"]
    svc = _by(objs, "Service", "code-service")
    assert svc["spec"]["clusterIP"] == site.code_service_ip
    assert svc["spec"]["ports"][0]["port"] == 80
    dep = _by(objs, "Deployment", "code-service")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["mlab", "code-service", "serve", "--data", "/var/lib/mlab/code",
                            "--site", "/etc/mlab/site.yaml", "--port", "8080"]
    assert {m["mountPath"] for m in c["volumeMounts"]} >= {
        "/etc/mlab/users", "/etc/mlab/admin", "/etc/mlab/site.yaml", "/var/lib/mlab/code"}
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    paths = [s["secret"]["items"][0]["path"] for s in vols["user-passwords"]["projected"]["sources"]]
    assert paths == ["alice/password", "bob/password", "airlock/password",
                     "mlab-publisher/password"]
    names = [s["secret"]["name"] for s in vols["user-passwords"]["projected"]["sources"]]
    assert names[-2:] == ["airlock-password", "export-publisher-password"]
    cm = _by(objs, "ConfigMap", "mlab-site")
    assert parse_site(yaml.safe_load(cm["data"]["site.yaml"])) == site
    assert _by(objs, "PersistentVolumeClaim", "code-service-data")


def test_existing_password_secret_not_generated() -> None:
    site = parse_site({"name": "s", "users": [{"name": "carol", "passwordSecret": "carol-pw"}]})
    rendered = render_site(site, {"carol": "x", "airlock": "y", "admin": "z", "mlab-publisher": "p"})
    assert "homepod-carol-password" not in {s["metadata"]["name"] for s in rendered.secrets}
    dep = _by(rendered.files["homepod.yaml"], "Deployment", "homepod-carol")
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["password"]["secret"]["secretName"] == "carol-pw"


def test_render_does_not_mutate_site() -> None:
    site = load_site(ROOT / "examples" / "seed-cluster.yaml")
    before = site.model_dump()
    render_site(site, PASSWORDS)
    assert site.model_dump() == before


def _references(dep: dict) -> set[str]:
    """Names of Secrets and claims a Deployment's pod uses, plus its outbox sub-path."""
    pod = dep["spec"]["template"]["spec"]
    refs = set()
    for vol in pod["volumes"]:
        if "secret" in vol:
            refs.add("secret:" + vol["secret"]["secretName"])
        if "persistentVolumeClaim" in vol:
            refs.add("claim:" + vol["persistentVolumeClaim"]["claimName"])
    for mount in pod["containers"][0]["volumeMounts"]:
        if mount["mountPath"] == "/opt/outbox":
            refs.add("outbox:" + mount.get("subPath", ""))
    return refs


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_users_share_nothing_private(path: Path) -> None:
    """No user's Secret, home or outbox appears in another user's pod."""
    from mlab.render.homepod import home_claim, password_secret_name

    site = load_site(path)
    objs = render_site(site).files["homepod.yaml"]
    for user in site.users:
        dep = _by(objs, "Deployment", f"homepod-{user.name}")
        refs = _references(dep)
        assert f"outbox:{user.name}" in refs
        for other in site.users:
            if other.name == user.name:
                continue
            private = {f"secret:{password_secret_name(other)}", f"claim:{home_claim(other)}",
                       f"outbox:{other.name}"}
            assert not refs & private, f"{user.name} gets {refs & private}"


def test_airlock_reaches_code_service() -> None:
    """The Airlock's publisher logs in to the code service by host name (docs/requests.md)."""
    site = load_site(ROOT / "examples" / "local.yaml")
    dep = _by(render_site(site).files["airlock.yaml"], "Deployment", "airlock")
    spec = dep["spec"]["template"]["spec"]
    assert spec["hostAliases"] == [{"ip": site.code_service_ip, "hostnames": [site.code_service.host]}]
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["MLAB_CODE_HOST"] == site.code_service.host
    assert env["MLAB_IMAGE"] == site.image.ref
    assert env["MLAB_USER"] == site.airlock.user


def test_no_airlock_no_airlock_account() -> None:
    """With the Airlock disabled no airlock password is projected into the code service."""
    site = parse_site({"name": "s", "airlock": {"enabled": False}, "users": [{"name": "carol"}]})
    objs = render_site(site).files["code-service.yaml"]
    dep = _by(objs, "Deployment", "code-service")
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    names = [s["secret"]["name"] for s in vols["user-passwords"]["projected"]["sources"]]
    assert names == ["homepod-carol-password"]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_pod_reading_the_site_rolls_when_it_changes(path: Path) -> None:
    """A pod that mounts ``mlab-site`` (subPath: never updated in place) carries the hash of
    that very ConfigMap, and a changed site changes it; a Deployment that does not mount it
    carries none (no restart for nothing). The portal lacked it: a changed issuer left the
    running portal on the old one (CI, session 7)."""
    import hashlib

    site = load_site(path)
    objs = [o for f in render_site(site, _passwords(site)).files.values() for o in f]
    text = _by(objs, "ConfigMap", "mlab-site")["data"]["site.yaml"]
    readers = []
    for dep in (o for o in objs if o["kind"] == "Deployment"):
        tpl = dep["spec"]["template"]
        mounts = {v.get("configMap", {}).get("name") for v in tpl["spec"].get("volumes", [])}
        note = tpl["metadata"].get("annotations", {}).get("mlab.io/site-sha256")
        if "mlab-site" in mounts:
            readers.append(dep["metadata"]["name"])
            assert note == hashlib.sha256(text.encode()).hexdigest()[:16], dep["metadata"]["name"]
        else:
            assert note is None, dep["metadata"]["name"]
    assert "code-service" in readers
    assert ("portal" in readers) == site.portal.enabled

    changed = site.model_copy(update={"users": site.users[:-1]})
    again = [o for f in render_site(changed, _passwords(changed)).files.values() for o in f]
    for name in readers:
        before = _by(objs, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        after = _by(again, "Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert before["mlab.io/site-sha256"] != after["mlab.io/site-sha256"], name
