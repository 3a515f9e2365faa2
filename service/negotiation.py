"""Which result format a request asks for: ``?format=``, else its ``Accept`` header
(RFC 9110 section 12.5.1), else JSON.

Each format takes its quality from the most specific media range that matches it
(``text/csv`` before ``text/*`` before ``*/*``), so ``application/json;q=0.1, */*``
prefers the other formats and ``q=0`` on a type refuses it whatever a wildcard says.
The highest quality wins; ties go to the range the client listed first, then to
the order of MEDIA_TYPES. A malformed or out-of-range ``q`` counts as refused rather
than preferred; empty list elements are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from service.errors import NotAcceptable

MEDIA_TYPES = {
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "arrow": "application/vnd.apache.arrow.stream",
}
_ALIASES = {
    "application/jsonl": "ndjson",
    "application/x-parquet": "parquet",
    "application/parquet": "parquet",
    "application/vnd.apache.arrow.file": "arrow",
}
_BY_MEDIA = {media: name for name, media in MEDIA_TYPES.items()} | _ALIASES
# What each wildcard covers, in order of preference.
_WILDCARDS = {
    "*/*": ("json", "ndjson", "csv", "parquet", "arrow"),
    "application/*": ("json", "ndjson", "parquet", "arrow"),
    "text/*": ("csv",),
}
_QVALUE = re.compile(r"0(\.\d{0,3})?|1(\.0{0,3})?")


def negotiate(accept: str | None, fmt: str | None) -> str:
    """The format name (a key of MEDIA_TYPES) for this request, or NotAcceptable."""
    if fmt is not None:
        if fmt not in MEDIA_TYPES:
            raise NotAcceptable(f"format must be one of {sorted(MEDIA_TYPES)}, not {fmt!r}")
        return fmt
    ranges = list(_parse_accept(accept or ""))
    if not ranges:
        return "json"
    # (-quality, position in the header, our preference, name): the smallest wins
    ranked = [
        (-q, at, i, name)
        for i, name in enumerate(MEDIA_TYPES)
        for q, at in [_quality(name, ranges)]
    ]
    negative_quality, *_, name = min(ranked)
    if negative_quality < 0:
        return name
    raise NotAcceptable(
        f"cannot produce any of {accept!r}; offer one of {sorted(MEDIA_TYPES.values())}"
    )


def _quality(name: str, ranges: list[tuple[str, float]]) -> tuple[float, int]:
    """(quality, position in the header) of the most specific range matching ``name``;
    (0, 0) when none does."""
    best: tuple[int, float, int] | None = None  # (specificity, quality, position)
    for position, (media, quality) in enumerate(ranges):
        specificity = _specificity(media, name)
        if specificity < 0:
            continue
        if best is None or (specificity, quality) > best[:2]:
            best = (specificity, quality, position)
    return (best[1], best[2]) if best is not None else (0.0, 0)


def _specificity(media: str, name: str) -> int:
    """2 for the format's own type (or an alias), 1 for ``type/*``, 0 for ``*/*``;
    -1 when the range does not cover the format."""
    if _BY_MEDIA.get(media) == name:
        return 2
    if name in _WILDCARDS.get(media, ()):
        return 1 if media != "*/*" else 0
    return -1


def _parse_accept(accept: str) -> Iterator[tuple[str, float]]:
    for part in accept.split(","):
        media, *options = (p.strip() for p in part.split(";"))
        if not media:
            continue
        quality = 1.0
        for option in options:
            key, _, value = option.partition("=")
            if key.strip().lower() == "q":
                value = value.strip()
                quality = float(value) if _QVALUE.fullmatch(value) else 0.0
        yield media.lower(), quality
