"""`mlab image build --refresh`: the dated tag of a refreshed base (pure part; the build
itself: tests/e2e/test_image_refresh.py)."""

from __future__ import annotations

import datetime as dt

from mlab.image.build import refresh_tag


def test_refresh_tag_names_recipe_and_utc_time() -> None:
    when = dt.datetime(2026, 12, 5, 18, 7, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    assert refresh_tag("0123456789abcdef" * 4, when) == "0123456789abcdef-r202612051007"
