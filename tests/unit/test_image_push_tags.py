"""Content-derived tags and destinations of `mlab image push` (pure parts)."""

from __future__ import annotations

import pytest

from mlab.errors import UsageError
from mlab.image.push import content_tag, destination
from mlab.site import Image

HASH = "0123456789abcdef"


@pytest.mark.parametrize(("ref", "tags", "want"), [
    (f"localhost/mlab/homepod:{HASH}", [], HASH),
    (f"localhost/mlab/homepod:pkg-{HASH}", [], f"pkg-{HASH}"),
    ("localhost/mlab/homepod:latest", ["localhost/mlab/homepod:latest",
                                       f"localhost/mlab/homepod:{HASH}"], HASH),
    ("localhost:5000/mlab/homepod:latest", [f"localhost:5000/mlab/homepod:pkg-{HASH}"],
     f"pkg-{HASH}"),
], ids=["hash", "pkg", "latest-resolved", "registry-port"])
def test_content_tag(ref: str, tags: list[str], want: str) -> None:
    assert content_tag(ref, tags) == want


def test_no_content_tag_is_refused() -> None:
    with pytest.raises(UsageError, match="names its content"):
        content_tag("example.com/x:latest", ["example.com/x:latest", "example.com/x:v2"])


def test_destination_needs_a_registry() -> None:
    assert destination(Image(repository="reg.example.com:5000/mlab/homepod"), HASH) == \
        f"reg.example.com:5000/mlab/homepod:{HASH}"
    with pytest.raises(UsageError, match="image.repository"):
        destination(Image(), HASH)
