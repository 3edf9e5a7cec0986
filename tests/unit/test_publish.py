"""The Redis commands of a publish, as plain data: which sketches a publish adds visitors to."""

from __future__ import annotations

from streamproc.store.contracts import ExactVisitors
from streamproc.store.publish import REMEMBERED_MAX, PublishCommands, sketch_keys


def test_each_visitor_goes_to_its_stores_sketch_and_to_the_store_all() -> None:
    presence = {
        (0, "a", "", "v1"),
        (0, "a", "device:mobile", "v1"),
        (0, "b", "", "v2"),
        (0, "c", "", "v1"),
        (60_000, "a", "", "v3"),
    }

    assert dict(sketch_keys(presence)) == {
        (0, "a", ""): {"v1"},
        (0, "a", "device:mobile"): {"v1"},
        (0, "b", ""): {"v2"},
        (0, "c", ""): {"v1"},
        (60_000, "a", ""): {"v3"},
        (0, "all", ""): {"v1", "v2"},
        (0, "all", "device:mobile"): {"v1"},
        (60_000, "all", ""): {"v3"},
    }


def test_nothing_present_makes_no_sketch() -> None:
    assert not sketch_keys(set())


def _publisher() -> PublishCommands:
    return PublishCommands(
        lambda *parts: ":".join(map(str, parts)),
        exact=ExactVisitors(),
        retention_s=86400,
        add_visitors_sha="",
    )


def test_a_key_s_retention_is_set_once_within_the_hour() -> None:
    commands = _publisher()
    commands.begin()
    assert commands._expires("k")
    commands.ran()

    commands.begin()
    assert not commands._expires("k")
    assert commands.expiring == []


def test_a_backfill_s_keys_are_remembered_within_bounds_the_latest_kept() -> None:
    """Keys are per minute of event time: a backfill writes an hour's worth in seconds. Past
    ``REMEMBERED_MAX`` the oldest are forgotten at once (not one key per new key, each time a
    copy of them all) and the latest are still known."""
    commands = _publisher()
    batches = 3 * REMEMBERED_MAX // 1000
    for batch in range(batches):
        commands.begin()
        for i in range(1000):
            assert commands._expires(f"k:{batch}:{i}")  # a new key: its EXPIRE is due
        commands.ran()
        assert len(commands._expired) <= REMEMBERED_MAX + 1000
        assert len(commands._expired) >= min(REMEMBERED_MAX // 2, 1000 * (batch + 1))

    commands.begin()
    assert not commands._expires(f"k:{batches - 1}:999")  # the latest: no EXPIRE again
    assert commands._expires("k:0:0")  # forgotten: its EXPIRE again, nothing worse
