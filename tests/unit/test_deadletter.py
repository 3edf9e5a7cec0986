"""Dead letters: headers that read back, and records that fit the dead-letter topic."""

from __future__ import annotations

import hashlib

import pytest

from streamproc.deadletter import DETAIL_MAX_BYTES, DeadLetter, Truncation, clip, fit

LIMIT = 524_288  # the default of dead_letter_max_bytes


def letter(**overrides: object) -> DeadLetter:
    fields: dict[str, object] = {
        "reason": "too_large",
        "detail": "message of 10000000 bytes exceeds the limit of 65536",
        "field": None,
        "topic": "shop.clickstream",
        "partition": 3,
        "offset": 42,
        "timestamp_ms": 1_790_000_000_000,
    }
    fields.update(overrides)
    return DeadLetter(**fields)  # type: ignore[arg-type]


def test_small_messages_are_kept_as_they_are() -> None:
    assert fit(b"s-1", b"{}", max_bytes=LIMIT) == (b"s-1", b"{}", [])
    assert fit(None, None, max_bytes=LIMIT) == (None, None, [])
    exact = b"x" * (LIMIT - 3)
    assert fit(b"s-1", exact, max_bytes=LIMIT) == (b"s-1", exact, [])


def test_a_large_value_is_cut_and_says_so() -> None:
    value = b"v" * 10_000_000
    key, cut, headers = fit(b"s-1", value, max_bytes=LIMIT)
    assert key == b"s-1" and cut == value[: LIMIT - 3]
    assert dict(headers) == {
        "streamproc.truncated": b"true",
        "streamproc.original_key_size": b"3",
        "streamproc.original_value_size": b"10000000",
        "streamproc.original_sha256": hashlib.sha256(value).hexdigest().encode(),
    }


@pytest.mark.parametrize(
    ("key_size", "value_size", "kept"),
    [
        (600_000, 100, (LIMIT - 100, 100)),  # the key gives way, the value stays whole
        (600_000, 600_000, (LIMIT // 2, LIMIT // 2)),  # both huge: half each
        (200_000, 600_000, (200_000, LIMIT - 200_000)),  # a key under half the limit stays
        (LIMIT + 1, 0, (LIMIT, 0)),
    ],
)
def test_a_huge_key_is_cut_too(key_size: int, value_size: int, kept: tuple[int, int]) -> None:
    key, value = b"k" * key_size, b"v" * value_size
    cut_key, cut_value, headers = fit(key, value, max_bytes=LIMIT)
    assert cut_key is not None and cut_value is not None
    assert (len(cut_key), len(cut_value)) == kept
    assert len(cut_key) + len(cut_value) <= LIMIT
    assert dict(headers)["streamproc.original_key_size"] == str(key_size).encode()


def test_record_carries_the_letter_and_the_truncation_and_reads_back() -> None:
    value = b"v" * 1_000_000
    key, cut, headers = letter().record(b"s-1", value, max_bytes=LIMIT)
    assert key == b"s-1" and cut is not None and len(cut) == LIMIT - 3
    read = DeadLetter.from_headers(headers)
    assert read == letter(truncation=Truncation(3, 1_000_000, hashlib.sha256(value).hexdigest()))
    assert DeadLetter.from_headers(read.headers()) == read


def test_record_of_a_fitting_message_has_only_the_letters_headers() -> None:
    assert letter().record(b"s-1", b"{}", max_bytes=LIMIT) == (b"s-1", b"{}", letter().headers())
    assert DeadLetter.from_headers(letter().headers()).truncation is None


def test_detail_is_capped_at_1_kib() -> None:
    detail = "unknown page_view event_type '" + "é" * 30_000 + "'"
    headers = dict(letter(detail=detail, field="$.event_type").headers())
    sent = headers["streamproc.detail"]
    assert len(sent) <= DETAIL_MAX_BYTES
    assert sent.decode().startswith("unknown page_view event_type 'éé")  # whole characters
    assert sent.decode().endswith("…")
    assert DeadLetter.from_headers(headers.items()).detail == sent.decode()


def test_clip() -> None:
    assert clip("short") == "short"
    assert clip("x" * DETAIL_MAX_BYTES) == "x" * DETAIL_MAX_BYTES
    assert clip("x" * 5000, 10) == "x" * 7 + "…"
    assert len(clip("€" * 1000, 100).encode()) <= 100


def test_text_that_is_not_utf8_still_makes_headers() -> None:
    """A detail quoting a lone surrogate must not make the worker fail to send."""
    headers = dict(letter(detail="bad \udc80 text").headers())
    assert headers["streamproc.detail"] == b"bad \\udc80 text"
