"""Which result format a request asks for: ``?format=``, else its ``Accept`` header
(RFC 9110 section 12.5.1), else JSON.

Media ranges are ranked by quality (ties keep the client's order). A range with
``q=0`` refuses that type, also when a wildcard later in the header would admit it;
a wildcard picks the first format it covers that is not refused. A malformed or
out-of-range ``q`` makes its range count as refused rather than preferred.
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
    if not accept or not accept.strip():
        return "json"
    ranges = list(_parse_accept(accept))
    refused = {_BY_MEDIA[m] for m, q in ranges if q == 0 and m in _BY_MEDIA}
    for media, quality in sorted(ranges, key=lambda item: -item[1]):
        if quality == 0:
            continue
        offered = (_BY_MEDIA[media],) if media in _BY_MEDIA else _WILDCARDS.get(media, ())
        for name in offered:
            if name not in refused:
                return name
    raise NotAcceptable(
        f"cannot produce any of {accept!r}; offer one of {sorted(MEDIA_TYPES.values())}"
    )


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
