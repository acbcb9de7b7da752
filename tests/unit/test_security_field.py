"""The site's ``security`` section (SECURITY.md): where holes are reported, and the reward."""

from __future__ import annotations

import pytest

from mlab.errors import SiteError
from mlab.site import parse_site


def test_report_address_is_shown_and_defaults_to_the_admin() -> None:
    site = parse_site({"name": "s", "security": {"report": "mailto:sec@example.com",
                                                 "reward": "30 yuan"}})
    assert site.security.where() == "mailto:sec@example.com"
    assert site.security.reward == "30 yuan"
    assert "admin" in parse_site({"name": "s"}).security.where()


def test_unknown_security_key_names_the_field() -> None:
    with pytest.raises(SiteError, match="security"):
        parse_site({"name": "s", "security": {"contact": "x"}})
