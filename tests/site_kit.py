"""The sites the unit tests render: examples/local.yaml (changed or not), with fixed passwords.

One place for what several test modules did each in their own way: load the local site,
render it with a fixed password per account (never the machine's stored ones), and hand
the result to the podman translation with fixed subnets. The ``local_rendered`` fixture
(tests/unit/conftest.py) is the plain case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mlab.podman.translate import Plan, translate, wanted_networks
from mlab.render import Rendered, render_site
from mlab.secrets import password_keys
from mlab.site import Site, parse_site

ROOT = Path(__file__).resolve().parents[1]
LOCAL_SITE = ROOT / "examples" / "local.yaml"


def local_data() -> dict[str, Any]:
    """examples/local.yaml as a fresh dict, to change before :func:`parse_site`."""
    data: dict[str, Any] = yaml.safe_load(LOCAL_SITE.read_text(encoding="utf-8"))
    return data


def local_site(**changes: Any) -> Site:
    """examples/local.yaml with ``changes`` replacing its top-level keys."""
    data = local_data()
    data.update(changes)
    return parse_site(data)


def fixed_passwords(site: Site) -> dict[str, str]:
    """One fixed password per account of ``site``: ``pw-<account>-0123456789``."""
    return {k: f"pw-{k}-0123456789" for k in password_keys(site)}


def render_fixed(site: Site) -> Rendered:
    """``site`` rendered with :func:`fixed_passwords`."""
    return render_site(site, fixed_passwords(site))


def fixed_subnets(site: Site) -> dict[str, str]:
    """A fixed /24 for each podman network of ``site`` (10.89.250.0/24 downwards)."""
    return {n: f"10.89.{250 - i}.0/24" for i, (n, _, _) in enumerate(wanted_networks(site))}


def translate_fixed(site: Site, state: str = "/state", rendered: Rendered | None = None,
                    **options: Any) -> Plan:
    """``site`` rendered with fixed passwords (or ``rendered``, already so) and translated
    for podman with fixed subnets; ``options`` go to
    :func:`mlab.podman.translate.translate` (``host_ca``, ...)."""
    rendered = rendered or render_fixed(site)
    return translate(site, rendered.files, rendered.secrets, fixed_subnets(site), state,
                     **options)
