"""Rendered output of every example site matches tests/golden/<site file stem>/.

Regenerate only on purpose (see tests/unit/conftest.py) and review the diff.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mlab.render import render_site, render_texts
from mlab.secrets import password_keys
from mlab.site import load_site

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_golden(path: Path, update_golden: bool) -> None:
    site = load_site(path)
    passwords = {key: f"golden-{key}-not-a-secret" for key in password_keys(site)}
    texts = render_site(site, passwords).texts(with_secrets=True)
    # `mlab render` writes one user at a time (render_texts): the same bytes.
    assert render_texts(site, passwords, with_secrets=True) == texts
    assert list(render_texts(site, passwords, with_secrets=True)) == list(texts)
    folder = GOLDEN / path.stem
    if update_golden:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.yaml"):
            old.unlink()
        for name, text in texts.items():
            (folder / name).write_text(text, encoding="utf-8")
        return
    assert folder.is_dir(), f"{folder} missing: run with MLAB_UPDATE_GOLDEN=1 and review it"
    assert sorted(p.name for p in folder.glob("*.yaml")) == sorted(texts)
    for name, text in texts.items():
        expected = (folder / name).read_text(encoding="utf-8")
        assert text == expected, f"{path.name} -> {name} differs from {folder / name}"


def test_benchmark_runs() -> None:
    """The benchmark script keeps working (tiny size; timings are not asserted)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_render.py"),
                           "--users", "20", "--samples", "1"], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "baseline: CSafeLoader + CSafeDumper" in proc.stdout
    assert "mlab render --out-dir (20 users)" in proc.stdout


def test_render_texts_carries_the_site_ca_certificates(tmp_path: Path) -> None:
    """`mlab render --out-dir` (render_texts) writes the same TLS Secrets as render_site."""
    from site_kit import local_site

    from mlab.tls import load_or_create

    site = local_site(tls={"mode": "site-ca"}, portal={"enabled": True,
                                                      "url": "https://127.0.0.1:8443"})
    tls = load_or_create(site, tmp_path)
    assert tls is not None
    passwords = {key: f"golden-{key}-not-a-secret" for key in password_keys(site)}
    texts = render_site(site, passwords, tls).texts(with_secrets=True)
    assert render_texts(site, passwords, with_secrets=True, tls=tls) == texts
    assert "kubernetes.io/tls" in texts["secrets.yaml"]
