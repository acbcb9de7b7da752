"""`mlab init`, `mlab site schema|check` and `mlab render`: outputs, exit codes, atomicity."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml
from cli_runner import mlab

from mlab.site import load_site

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed-cluster.yaml"


@pytest.fixture(autouse=True)
def _state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLAB_STATE_DIR", str(tmp_path / "state"))


BAD = {
    "unknown-key": ({"users": [{"name": "a", "colour": "red"}]}, "users[0].colour: unknown key"),
    "bad-cidr": ({"access": {"officeCIDRs": ["10.0.0.0/33"]}}, "access.officeCIDRs[0]: not a CIDR"),
    "duplicate-user": ({"users": [{"name": "a"}, {"name": "a"}]}, "users[1].name: duplicate user"),
    "not-dns-1123": ({"users": [{"name": "Alice_1"}]}, "users[0].name: 'Alice_1' is not a DNS-1123"),
    "port-clash": (
        {"users": [{"name": "a", "service": {"externalIPs": ["192.0.2.7"]}},
                   {"name": "b", "service": {"externalIPs": ["192.0.2.7"]}}]},
        "users[1].service.ports.vnc: port 5900 on external IP 192.0.2.7 is already claimed",
    ),
    "gpu-fraction": ({"users": [{"name": "a", "resources": {"gpus": 1.5}}]},
                     "users[0].resources.gpus: must be a whole number"),
    "gpu-negative": ({"users": [{"name": "a", "resources": {"gpus": -2}}]},
                     "users[0].resources.gpus: must be a whole number"),
    "gpu-text": ({"users": [{"name": "a", "resources": {"gpus": "two"}}]},
                 "users[0].resources.gpus: must be a whole number"),
}


@pytest.mark.parametrize("case", sorted(BAD), ids=sorted(BAD))
def test_bad_input_exits_2_and_writes_nothing(case: str, tmp_path: Path, capsys) -> None:
    data, expected = BAD[case]
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"name": "bad", **data}))
    fresh = tmp_path / "fresh"
    code, out, err = mlab("render", "--site", str(site), "--out-dir", str(fresh), capsys=capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], err
    assert not fresh.exists() and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.yaml"]
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "homepod.yaml").write_text("old\n")
    code, _, err = mlab("render", "--site", str(site), "--out-dir", str(existing), capsys=capsys)
    assert code == 2 and [p.name for p in existing.iterdir()] == ["homepod.yaml"]
    assert (existing / "homepod.yaml").read_text() == "old\n"
    code, _, err2 = mlab("site", "check", "--site", str(site), capsys=capsys)
    assert code == 2 and expected in err2


def test_bad_input_real_process(tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    site.write_text("name: bad\nusers: [{name: a}, {name: a}]\n")
    proc = mlab("render", "--site", str(site), "--out-dir", str(tmp_path / "out"),
                env={"MLAB_STATE_DIR": str(tmp_path / "st")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"mlab: error: {site}: users[1].name: duplicate user 'a' (also users[0])"]
    assert not (tmp_path / "out").exists()


def test_render_to_dir(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, _, err = mlab("render", "--site", str(SEED), "--out-dir", str(out), capsys=capsys)
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["airlock.yaml", "code-service.yaml", "homepod.yaml", "network.yaml",
                     "secrets.yaml"]
    assert stat.S_IMODE((out / "secrets.yaml").stat().st_mode) == 0o600
    first = {n: (out / n).read_bytes() for n in names}
    code, _, _ = mlab("render", "--site", str(SEED), "--out-dir", str(out), capsys=capsys)
    assert code == 0 and {n: (out / n).read_bytes() for n in names} == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    passwords = json.loads((tmp_path / "state" / "seed" / "passwords.json").read_text())
    for name in names[:-1]:
        assert passwords["gemfield"] not in first[name].decode()
    assert passwords["gemfield"] in first["secrets.yaml"].decode()


def test_render_stdout_hides_secrets_unless_asked(tmp_path: Path, capsys) -> None:
    code, out, _ = mlab("render", "--site", str(SEED), capsys=capsys)
    assert code == 0
    kinds = [d["kind"] for d in yaml.safe_load_all(out) if d]
    assert "Secret" not in kinds and "NetworkPolicy" in kinds
    code, out, _ = mlab("render", "--site", str(SEED), "--with-secrets", capsys=capsys)
    assert [d["kind"] for d in yaml.safe_load_all(out) if d].count("Secret") == 4  # + the publisher


def test_render_output_is_a_file(tmp_path: Path, capsys) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    code, _, err = mlab("render", "--site", str(SEED), "--out-dir", str(target), capsys=capsys)
    assert code == 1 and "not a directory" in err and target.read_text() == "x"


def test_init_writes_valid_example_and_refuses_overwrite(tmp_path: Path, capsys) -> None:
    target = tmp_path / "site.yaml"
    code, _, _ = mlab("init", "--out-file", str(target), capsys=capsys)
    assert code == 0
    site = load_site(target)
    assert site.users and "#" in target.read_text()
    target.write_text("mine\n")
    code, _, err = mlab("init", "--out-file", str(target), capsys=capsys)
    assert code == 2 and "already exists" in err and target.read_text() == "mine\n"
    code, _, _ = mlab("init", "--out-file", str(target), "--force", capsys=capsys)
    assert code == 0 and load_site(target).name == site.name


def test_old_o_spelling_still_writes_with_one_warning_line(tmp_path: Path, capsys) -> None:
    """`-o PATH` (before `--out-dir`/`--out-file`) works for one release, with one line."""
    out = tmp_path / "out"
    code, _, err = mlab("render", "--site", str(SEED), "-o", str(out), capsys=capsys)
    assert code == 0 and (out / "homepod.yaml").is_file()
    assert err.splitlines()[0] == ("mlab: warning: -o/--output PATH is deprecated (-o is the "
                                   "output format); use --out-dir")
    code, _, err = mlab("init", "-o", str(tmp_path / "s.yaml"), capsys=capsys)
    assert code == 0 and load_site(tmp_path / "s.yaml").users
    assert err.splitlines()[0].endswith("use --out-file")
    code, _, err = mlab("render", "--site", str(SEED), "-o", str(out), "--out-dir", str(out),
                        capsys=capsys)
    assert code == 2 and err.strip() == (
        "mlab: error: -o and --out-dir both given (give only --out-dir)")


def test_site_from_environment_like_the_flag(tmp_path: Path, capsys,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """--site resolves the same way in every command: the flag, else $MLAB_SITE."""
    monkeypatch.setenv("MLAB_SITE", str(SEED))
    code, out, err = mlab("site", "check", capsys=capsys)
    assert code == 0, err
    assert out.strip() == f"{SEED}: ok (site seed, namespace mlab2, 1 user(s))"


def test_schema_is_json_and_closed(capsys) -> None:
    code, out, _ = mlab("site", "schema", capsys=capsys)
    assert code == 0
    schema = json.loads(out)
    assert schema["additionalProperties"] is False
    assert all(d.get("additionalProperties") is False for d in schema["$defs"].values()
               if d.get("type") == "object")
    props = schema["properties"]
    assert {"name", "namespace", "users", "airlock", "codeService", "dns"} <= set(props)


def test_check_ok(capsys) -> None:
    code, out, _ = mlab("site", "check", "--site", str(SEED), capsys=capsys)
    assert code == 0 and "ok" in out


@pytest.mark.parametrize("data,expected", [
    ({"users": [{"name": "a"}, {"name": "b", "volumes": [{"claim": "home-a", "mountPath": "/x"}]}]},
     "users[1].volumes[0].claim: 'home-a' is the home of user 'a'"),
    ({"users": [{"name": "a", "volumes": [{"claim": "outbox", "mountPath": "/x"}]}]},
     "users[0].volumes[0].claim: 'outbox' is the airlock share or outbox claim"),
    ({"users": [{"name": "admin"}]}, "users[0].name: 'admin' is reserved"),
    ({"users": [{"name": "a", "service": {"ports": {"vnc": 22}}}]},
     "users[0].service.ports.ssh: port 22 is also used for vnc"),
    ({"airlock": {"proxy": {"http": "http://u:pw@proxy:3128"}}},
     "airlock.proxy: http: the proxy URL holds a password"),
], ids=["other-home", "outbox-claim", "reserved-name", "port-twice", "proxy-password"])
def test_more_bad_input(data: dict, expected: str, tmp_path: Path, capsys) -> None:
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"name": "bad", **data}))
    code, _, err = mlab("site", "check", "--site", str(site), capsys=capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert "pw" not in err.replace("proxy", "")
