"""Content-derived tags and destinations of `mlab image push` (pure parts)."""

from __future__ import annotations

from pathlib import Path

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


def test_registry_tls_options(tmp_path) -> None:
    from mlab.image.push import registry_tls

    with registry_tls(Image(plain_http=True)) as opts:
        assert opts == ["--tls-verify=false"]
    with registry_tls(Image()) as opts:
        assert opts == ["--tls-verify=true"]
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    (tmp_path / "ca.key").write_text("a stray key podman must not see")
    with registry_tls(Image(ca_file=str(ca))) as opts:
        assert opts[:2] == ["--tls-verify=true", "--cert-dir"]
        folder = Path(opts[2])
        assert sorted(p.name for p in folder.iterdir()) == ["ca.crt"]
        assert (folder / "ca.crt").read_text() == ca.read_text()
    assert not folder.exists()  # the copy lives only for the command
    with pytest.raises(UsageError, match=r"image.caFile: cannot read .*missing.pem"):
        with registry_tls(Image(ca_file=str(tmp_path / "missing.pem"))):
            pass


@pytest.mark.parametrize(("image", "message"), [
    ({"caFile": "ca.pem"}, "must be an absolute path"),
    ({"caFile": "/etc/ca.pem", "plainHttp": True}, "caFile is for a TLS registry"),
], ids=["relative", "with-plain-http"])
def test_ca_file_is_checked(image: dict, message: str) -> None:
    from mlab.errors import SiteError
    from mlab.site import parse_site

    with pytest.raises(SiteError, match=message):
        parse_site({"apiVersion": "mlab.io/v1", "name": "x", "image": image,
                    "users": [{"name": "a", "uid": 1001}]}, "site.yaml")
