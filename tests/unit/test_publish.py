"""The Redis commands of a publish, as plain data: which sketches a publish adds visitors to."""

from __future__ import annotations

from streamproc.store.publish import sketch_keys


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
