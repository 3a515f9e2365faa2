"""service/text.py: text every backend can store."""

from __future__ import annotations

import pytest

from service.text import storable, storable_or_none


@pytest.mark.parametrize(
    ("text", "stored"),
    [
        ("plain", "plain"),
        ("a\x00b", "a\ufffdb"),
        ("lone \ud800 surrogate", "lone \ufffd surrogate"),
        ("both\x00\udfff", "both\ufffd\ufffd"),
        ("émoji 😀 and 中文", "émoji 😀 and 中文"),
    ],
)
def test_storable(text: str, stored: str) -> None:
    assert storable(text) == stored
    assert storable(text).encode()


def test_none_stays_none() -> None:
    assert storable_or_none(None) is None
