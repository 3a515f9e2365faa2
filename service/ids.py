"""Opaque, time-sortable identifiers (ULID layout: 48-bit ms time + 80 random bits)."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        value, rem = divmod(value, 32)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


def new_id(now: float | None = None) -> str:
    """A 26-character id; ids made later sort after ids made earlier (to the ms)."""
    ms = int((time.time() if now is None else now) * 1000)
    return _encode(ms, 10) + _encode(secrets.randbits(80), 16)


def looks_like_id(value: str) -> bool:
    return len(value) == 26 and all(c in _ALPHABET for c in value)
