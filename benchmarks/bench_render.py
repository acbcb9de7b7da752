"""Benchmark: validate and render a 1,000-user site, beside PyYAML dumping the same objects.

Run: ``.venv/bin/python benchmarks/bench_render.py [--users N] [--repeat R]``.
Reports the best of R runs for: site validation (pydantic), rendering to objects, MLab's
YAML emitter, and, measured in the same run on the same objects, PyYAML's ``safe_dump_all``
with the C (libyaml) and the pure-Python dumper. Goal: validate + render + dump of 1,000
users under 2 s on the 2-core CI machine; the ratios are what to compare across machines.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import yaml

from mlab.render import render_site
from mlab.secrets import password_keys
from mlab.site import parse_site


def big_site(users: int) -> dict[str, Any]:
    """A site document with ``users`` users, each with its own NodePort Service ports."""
    return {
        "name": "bench",
        "namespace": "bench",
        "timezone": "Asia/Shanghai",
        "access": {"officeCIDRs": ["192.168.0.0/16", "172.17.0.0/16"]},
        "datasets": [{"name": "public", "claim": "public-dataset", "mountPath": "/opt/public"}],
        "users": [
            {
                "name": f"user{i:04d}",
                "uid": 2000 + i,
                "groups": ["ml"],
                "resources": {"requests": {"memory": "6Gi"}, "limits": {"memory": "24Gi"},
                              "gpus": i % 3},
                "placement": {"nodeSelector": {"pool": f"p{i % 8}"}},
                "volumes": [{"claim": f"scratch-{i:04d}", "mountPath": "/scratch"}],
            }
            for i in range(users)
        ],
    }


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Best wall time in seconds over ``repeat`` runs, and the last result."""
    times = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--k8s", action="store_true",
                        help="Also time kubernetes-validate on every object (slow: ~50 s "
                        "for 1,000 users, it reloads its schema per object).")
    args = parser.parse_args()

    doc = big_site(args.users)
    t_validate, site = best(lambda: parse_site(doc), args.repeat)
    passwords = {k: "bench-password" for k in password_keys(site)}
    t_render, rendered = best(lambda: render_site(site, passwords), args.repeat)
    t_dump, texts = best(lambda: rendered.texts(with_secrets=True), args.repeat)
    objs = [*(o for objs in rendered.files.values() for o in objs), *rendered.secrets]
    size = sum(len(t) for t in texts.values())

    def pyyaml(dumper: type) -> str:
        return yaml.dump_all(objs, Dumper=dumper, sort_keys=False, default_flow_style=False)

    t_cyaml, _ = best(lambda: pyyaml(yaml.CSafeDumper), args.repeat)
    t_pyyaml, _ = best(lambda: pyyaml(yaml.SafeDumper), max(1, args.repeat // 2))
    total = t_validate + t_render + t_dump
    t_k8s = None
    if args.k8s:
        import kubernetes_validate

        def k8s_validate() -> None:
            for obj in objs:
                kubernetes_validate.validate(obj, "1.31.0", strict=True)

        t_k8s, _ = best(k8s_validate, 1)
    print(f"users: {args.users}; objects: {len(objs)}; YAML: {size / 1e6:.1f} MB")
    print(f"validate site        {t_validate:7.3f} s")
    print(f"render objects       {t_render:7.3f} s")
    print(f"mlab dump_yaml       {t_dump:7.3f} s")
    print(f"total                {total:7.3f} s   goal < 2 s: {'met' if total < 2 else 'MISSED'}")
    print(f"PyYAML CSafeDumper   {t_cyaml:7.3f} s   dump_yaml is {t_cyaml / t_dump:5.2f}x its speed")
    print(f"PyYAML SafeDumper    {t_pyyaml:7.3f} s   dump_yaml is {t_pyyaml / t_dump:5.2f}x its speed")
    print(f"total / CSafeDumper  {total / t_cyaml:5.2f}")
    if t_k8s is not None:
        print(f"kubernetes-validate  {t_k8s:7.3f} s   (--strict 1.31, every object; offline check)")


if __name__ == "__main__":
    main()
