"""Text that every backend can hold. PostgreSQL text and JSON cannot store NUL, and
no UTF-8 column can store a lone UTF-16 surrogate; both can reach us from DuckDB's
error messages, a pipeline's progress message or a result's column names."""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def encodable(text: str) -> bool:
    """False when ``text`` holds a lone surrogate, which UTF-8 cannot encode."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def storable(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD."""
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT)
    if not encodable(text):
        text = "".join(REPLACEMENT if "\ud800" <= c <= "\udfff" else c for c in text)
    return text


def storable_or_none(text: str | None) -> str | None:
    return None if text is None else storable(text)
