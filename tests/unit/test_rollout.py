"""Which running HomePods `mlab up` keeps on their image (mlab.podman.rollout.held_pods)."""

from __future__ import annotations

import pytest

from mlab.podman.rollout import annotate, held_pods
from mlab.podman.translate import LABEL_SPEC, PodPlan

OLD, NEW = "reg:5000/mlab/homepod:aaaaaaaaaaaaaaaa", "reg:5000/mlab/homepod:bbbbbbbbbbbbbbbb"


def pod(name: str, component: str, user: str | None, spec: str) -> PodPlan:
    return PodPlan(name=name, component=component, user=user, manifest={}, networks=(),
                   ports=(), files=(), spec_hash=spec)


class OldPlan:
    """The site's plan on the old image: the specs the running pods were started with."""

    def __init__(self, specs: dict[str, str]) -> None:
        self.pods = [pod(n, "homepod", None, s) for n, s in specs.items()]


def running(spec: str, status: str = "Running") -> dict[str, object]:
    return {"Status": status, "Labels": {LABEL_SPEC: spec}}


CASES = [
    # (pod to play, current record, running image, restart users, old specs, held?)
    ("image only", pod("p-alice", "homepod", "alice", "new"), running("old-a"), OLD, (),
     {"p-alice": "old-a"}, True),
    ("restart asked", pod("p-alice", "homepod", "alice", "new"), running("old-a"), OLD,
     ("alice",), {"p-alice": "old-a"}, False),
    ("spec changed too", pod("p-alice", "homepod", "alice", "new"), running("hand-edited"),
     OLD, (), {"p-alice": "old-a"}, False),
    ("not running", pod("p-alice", "homepod", "alice", "new"), running("old-a", "Exited"), OLD,
     (), {"p-alice": "old-a"}, False),
    ("airlock moves", pod("p-airlock", "airlock", None, "new"), running("old-a"), OLD, (),
     {"p-airlock": "old-a"}, False),
    ("same image", pod("p-alice", "homepod", "alice", "new"), running("old-a"), NEW, (),
     {"p-alice": "old-a"}, False),
]


@pytest.mark.parametrize(("target", "record", "image", "restart", "old_specs", "held"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_held_pods(target: PodPlan, record: dict[str, object], image: str,
                   restart: tuple[str, ...], old_specs: dict[str, str], held: bool) -> None:
    asked: list[str] = []

    def plan_for(old: str) -> OldPlan:
        asked.append(old)
        return OldPlan(old_specs)

    out = held_pods([target], {target.name: record}, {target.name: image}, NEW,
                    plan_for, restart)  # type: ignore[arg-type]
    assert out == ({target.name: image} if held else {})
    assert len(asked) <= 1


def test_status_names_the_older_image_and_what_a_restart_loses() -> None:
    rows = [{"pod": "p-alice", "kind": "homepod"}, {"pod": "p-bob", "kind": "homepod"},
            {"pod": "p-airlock", "kind": "airlock"}]
    out = annotate(rows, NEW, {"p-alice": OLD, "p-bob": NEW, "p-airlock": OLD})
    assert out[0]["older_image"] == NEW and "outside /home" in out[0]["restart_loses"]
    assert "older_image" not in out[1] and "older_image" not in out[2]
    assert [r["image"] for r in out] == [OLD, NEW, OLD]
