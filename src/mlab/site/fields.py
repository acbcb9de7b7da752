"""The site model's building blocks: its constants, the field types and their checks
(CIDR, IP, DNS-1123 label, quantity, duration, time zone), the base :class:`Model` and
:func:`setting`."""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import zoneinfo
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)
from pydantic.alias_generators import to_camel

API_VERSION: Literal["mlab.io/v1"] = "mlab.io/v1"

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
"""RFC 1123 label as Kubernetes uses it for names (IsDNS1123Label): at most 63 characters."""

QUANTITY = re.compile(r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|Pi|M|G|T|P|E|Ei)?$")
"""A Kubernetes resource.Quantity in its common forms (``500m``, ``6Gi``, ``2``)."""

PUBLISHER_ACCOUNT = "mlab-publisher"
"""The code-service account of the export publisher (its own container next to the Airlock,
docs/requests.md): it may list exports and add notes, has no git access, and no person
logs in with it. Also its key in the password state."""

HOMEPOD_NETS_ENV = "MLAB_HOMEPOD_NETS"
"""The code service's environment variable naming the HomePods' addresses (comma-separated
CIDRs): the cluster's pod range on Kubernetes, each HomePod's address under podman
(``mlab.codeservice.reviewed``)."""
RESERVED_USERS = ("admin", "airlock", PUBLISHER_ACCOUNT)
"""User names that would clash with the password state's ``admin``, ``airlock`` and
publisher keys."""

PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16")
"""RFC 1918 private ranges and the RFC 3927 link-local range (cloud metadata 169.254.169.254)."""
PRIVATE_RANGES_V6 = (
    "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8", "64:ff9b::/96",
)
"""IPv6 ranges the internet edges exclude on a dual-stack cluster: unique local (RFC 4193,
the IPv6 private range), link-local (RFC 4291), the deprecated site-local range (RFC 3879),
multicast, and the NAT64 prefix (RFC 6052), through which an IPv6 peer names any IPv4
address, the private ranges above included. Not ``::ffff:0:0/96`` (IPv4-mapped): the API
server (v1.34) rejects it as an except of ``::/0`` ("must be a strict subset of `cidr`", Go
reads it as IPv4), and an IPv4-mapped address never goes on the wire as IPv6."""


def _cidr(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(f"not a CIDR like 10.0.0.0/8: {exc}") from None


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"not an IP address: {value!r}") from None


def _label(value: str) -> str:
    if not DNS1123_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return value


def _quantity(value: str | int) -> str:
    text = str(value)
    if not QUANTITY.match(text):
        raise ValueError(f"{text!r} is not a Kubernetes quantity like 6Gi, 500m or 2")
    return text


@functools.lru_cache(maxsize=1)
def _known_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _listed_timezone(name: str) -> bool:
    """Whether ``zoneinfo.available_timezones()`` lists ``name`` (a well-formed key) through
    a zoneinfo file, checked for this name alone, by the same rule: a file whose first bytes
    are ``TZif`` under a ``zoneinfo.TZPATH`` root, reached through real directories (the
    walk follows no directory links), not under ``right/`` or ``posix/``, not
    ``posixrules``. False means only "not found this way" (tzdata may still list it)."""
    parts = name.split("/")
    if name == "posixrules" or parts[0] in ("right", "posix"):
        return False
    for root in zoneinfo.TZPATH:
        path = root
        for part in parts[:-1]:
            path = os.path.join(path, part)
            if os.path.islink(path) or not os.path.isdir(path):
                break
        else:
            try:
                with open(os.path.join(path, parts[-1]), "rb") as f:
                    if f.read(4) == b"TZif":
                        return True
            except OSError:
                pass
    return False


def _timezone(value: str) -> str:
    """Accept a name of the IANA time zone database (what TZ in the pods takes).

    Checked against the zoneinfo files when this machine has them (Debian's tzdata); a
    machine without them accepts any well-formed name rather than rejecting every one.
    """
    if not re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", value):
        raise ValueError(f"{value!r} is not a time zone name like Asia/Shanghai or UTC")
    if _listed_timezone(value):
        # Listing the whole database opens its 600 files (0.03 s per site; issue 18).
        return value
    known = _known_timezones()
    if known and value not in known:
        raise ValueError(
            f"{value!r} is not in the IANA time zone database; use a name like Asia/Shanghai"
        )
    return value


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def duration_seconds(value: str) -> int | None:
    """Seconds of a duration like ``90s``, ``10m``, ``3h``, ``1h30m``, ``2d``; None for
    ``never``.

    Raises:
        ValueError: not such a duration (or zero).
    """
    if value == "never":
        return None
    match = _DURATION.match(value) if value else None
    if not match or not any(match.groups()):
        raise ValueError(f"{value!r} is not a duration like 90s, 10m, 3h, 1h30m, 2d or never")
    d, h, m, s = (int(g or 0) for g in match.groups())
    total = ((d * 24 + h) * 60 + m) * 60 + s
    if total <= 0:
        raise ValueError(f"{value!r} must be longer than zero (or never)")
    return total


def _duration(value: str) -> str:
    duration_seconds(value)
    return value


CIDR = Annotated[str, AfterValidator(_cidr)]
IP = Annotated[str, AfterValidator(_ip)]
Label = Annotated[str, AfterValidator(_label)]
Quantity = Annotated[str, AfterValidator(_quantity)]
Duration = Annotated[str, AfterValidator(_duration)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Model(BaseModel):
    """Base of every site model: camelCase keys, unknown keys rejected, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        frozen=True,
        validate_default=True,
    )


def setting(default: Any, description: str, *, shown: str | None = None, **bounds: Any) -> Any:
    """A site field with a default, its description ending in ``Default: <default>.``.

    Args:
        default: the value used when the site file leaves the field out.
        description: what the field means (the site reference, ``mlab site docs``, shows it).
        shown: how the default reads in the description when ``str(default)`` does not
            (``25`` for 25.0, ``4294967296 (4 GiB)``).
        **bounds: pydantic's numeric bounds (``ge``, ``gt``, ``le``).

    Returns:
        A pydantic ``Field``.
    """
    text = shown if shown is not None else str(default)
    return Field(default, description=f"{description} Default: {text}.", **bounds)


def _shared_default(model: type[Model]) -> Any:
    """A default factory that gives every user the same default ``model()`` instance.

    Site models are frozen and never mutated (rendering is pure), so one instance serves
    all users: on a 10,000-user site building a fresh one per user and field was about
    0.05 s of validation, and ``model_dump(exclude_defaults=True)`` (the code service's
    site ConfigMap) calls the factory again per user to compare, another 0.05 s (issue 18).
    """
    instance = model()
    return lambda: instance
