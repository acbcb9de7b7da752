"""The culling rule (mlab.cull.policy) and its site fields, on activity readings."""

from __future__ import annotations

import pytest

from mlab.cull.kube import rbac_objects
from mlab.cull.local import annotate_status
from mlab.cull.policy import decide, limits_for
from mlab.errors import SiteError
from mlab.site import duration_seconds, parse_site


def _site(**culling: object) -> object:
    return parse_site({"name": "s", "culling": culling, "users": [
        {"name": "alice"},
        {"name": "gpu", "uid": 1001, "resources": {"gpus": 1}},
        {"name": "keep", "uid": 1002, "culling": {"idleAfter": "never"}},
        {"name": "long", "uid": 1003, "culling": {"idleAfter": "8h"}},
    ]})


def reading(idle: float | None, cpu: float = 0.0, gpu: float | None = None) -> dict:
    return {"input_idle_s": idle, "uptime_s": 50000.0, "cpu_percent": cpu,
            "cpu_top": {"comm": "python3", "percent": cpu} if cpu else None,
            "gpu": None if gpu is None else {"count": 1, "util_percent": gpu}}


def test_durations() -> None:
    assert duration_seconds("90s") == 90
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("2d") == 172800
    assert duration_seconds("never") is None
    for bad in ("", "3 h", "0s", "h", "10x"):
        with pytest.raises(ValueError):
            duration_seconds(bad)


def test_bad_duration_names_the_field() -> None:
    with pytest.raises(SiteError, match=r"culling\.idleAfter"):
        parse_site({"name": "s", "culling": {"idleAfter": "soon"}})


def test_limits_defaults_gpu_and_per_user() -> None:
    site = _site()
    assert limits_for(site, "alice", False).idle_after == 4 * 3600
    assert limits_for(site, "alice", True).idle_after == 3600  # GPUs go back first
    assert limits_for(site, "keep", True).idle_after is None
    assert limits_for(site, "long", True).idle_after == 8 * 3600
    assert limits_for(_site(enabled=False), "alice", False).idle_after is None


def test_warn_then_cull_and_input_cancels() -> None:
    lim = limits_for(_site(idleAfter="10m", warnBefore="2m"), "alice", False)
    assert decide(reading(100), lim, None, 1000).action == "keep"
    assert decide(reading(8 * 60), lim, None, 1000).action == "warn"
    # Warned at t=1000; still idle at t=1120 with 10 min idle: cull.
    assert decide(reading(8 * 60 + 60), lim, 1000, 1060).action == "keep"
    d = decide(reading(600), lim, 1000, 1120)
    assert d.action == "cull" and "no input for 10m" in d.reason
    # Input during the warning: cancelled.
    assert decide(reading(3), lim, 1000, 1100).action == "unwarn"
    # Never culls without having warned first, however idle.
    assert decide(reading(99999), lim, None, 1000).action == "warn"


def test_busy_cpu_or_gpu_keeps_it_and_cancels_a_warning() -> None:
    lim = limits_for(_site(idleAfter="10m", warnBefore="2m"), "alice", False)
    d = decide(reading(99999, cpu=97.5), lim, None, 1000)
    assert d.action == "keep" and "CPU 97.5" in d.reason and "python3" in d.reason
    assert decide(reading(99999, cpu=97.5), lim, 900, 1000).action == "unwarn"
    assert decide(reading(99999, cpu=24.9), lim, None, 1000).action == "warn"
    assert decide(reading(99999, gpu=55), lim, None, 1000).reason.startswith("busy: GPU 55")
    assert decide(reading(99999, gpu=9), lim, None, 1000).action == "warn"
    starved = reading(99999, cpu=3.0)
    starved["cpu_top"] = {"comm": "train", "percent": 99.0, "used_percent": 3.0}
    assert decide(starved, lim, None, 1000).reason.startswith("busy: CPU train wants 99")


def test_no_display_counts_from_container_start() -> None:
    lim = limits_for(_site(idleAfter="10m"), "alice", False)
    r = reading(None)
    r["uptime_s"] = 30
    assert decide(r, lim, None, 0).action == "keep"
    r["uptime_s"] = 3000
    assert decide(r, lim, None, 0).action == "warn"


def test_rbac_scales_only_the_sites_homepods() -> None:
    _sa, role, binding = rbac_objects(_site())
    apps = role["rules"][0]
    assert apps["resourceNames"] == ["homepod-alice", "homepod-gpu", "homepod-keep", "homepod-long"]
    assert "deployments/scale" in apps["resources"]
    assert all("delete" not in r["verbs"] and "*" not in r["verbs"] for r in role["rules"])
    assert binding["subjects"][0]["name"] == "mlab-culler"


def test_status_marks_culled_homepods_only() -> None:
    rows = [{"name": "homepod-alice", "kind": "homepod", "user": "alice", "state": "Exited"},
            {"name": "homepod-bob", "kind": "homepod", "user": "bob", "state": "Running"},
            {"name": "airlock", "kind": "airlock", "user": None, "state": "Exited"}]
    record = {"at": 1.0, "reason": "idle: no input for 4h00m (limit 4h00m)"}
    out = annotate_status(rows, {"alice": record, "bob": record})
    assert out[0]["state"] == ("Exited (culled: idle: no input for 4h00m (limit 4h00m); "
                               "`mlab wake alice`)")
    assert out[0]["culled"] == record
    assert out[1] == rows[1] and out[2] == rows[2]


def test_rbac_is_valid_kubernetes(tmp_path) -> None:
    import subprocess
    import sys
    from pathlib import Path

    from mlab.cull.kube import rbac_yaml

    f = tmp_path / "rbac.yaml"
    f.write_text(rbac_yaml(_site()))
    exe = Path(sys.executable).with_name("kubernetes-validate")
    proc = subprocess.run([str(exe), "-k", "1.29.0", "--strict", str(f)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("passed") + proc.stderr.count("passed") == 3
