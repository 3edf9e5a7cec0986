"""State recovery a fetched batch at a time (worker/recovery.py), on Faust's own table and
recovery objects: the same store contents and the same progress as Faust's per-message path."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, NamedTuple, cast

import faust
import pytest
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from streamproc.worker import recovery
from streamproc.worker.state import TableState


class Record(NamedTuple):
    """The fields of an aiokafka ConsumerRecord that recovery reads."""

    partition: int
    offset: int
    key: bytes
    value: bytes | None


@pytest.fixture
def app() -> Iterator[faust.App]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield faust.App("recovery-test", autodiscover=False, web_enabled=False)
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _table(app: faust.App) -> Any:
    return app.Table("state", key_type=str, value_type=bytes, partitions=4)


def _records(
    table: Any, partition: int, start: int, items: list[tuple[str, bytes | None]]
) -> list[Record]:
    topic = table.changelog_topic
    return [
        Record(partition, start + i, topic.prepare_key(key, table.key_serializer)[0], value)
        for i, (key, value) in enumerate(items)
    ]


def _recovering(
    app: faust.App, table: Any, highwaters: dict[int, int]
) -> tuple[Any, dict[int, TP]]:
    """Faust's recovery as ``_restart_recovery`` leaves it before reading: offsets at -1."""
    rec = cast(Any, app.tables).recovery  # the TableManager; its type has no .recovery
    tps = {p: TP(table.changelog_topic.get_topic_name(), p) for p in highwaters}
    for partition, tp in tps.items():
        rec.active_tps.add(tp)
        rec.tp_to_table[tp] = table
        rec.active_offsets[tp] = -1
        rec.active_highwaters[tp] = highwaters[partition]
    rec._set_recovery_started()
    return rec, tps


def test_a_batch_lands_in_the_store_as_faust_would_apply_it(app: faust.App) -> None:
    table = _table(app)
    rec, tps = _recovering(app, table, {0: 4, 1: 0})
    batch = _records(
        table, 0, 0, [("0|a", b"1"), ("0|b", b"2"), ("0|a", b"3"), ("0|b", None), ("0|c", b"4")]
    )
    assert recovery.take(rec, tps[0], batch)
    assert dict(table.data.items()) == {"0|a": b"3", "0|c": b"4"}
    assert rec.active_offsets[tps[0]] == 4
    # partition 1 is still behind: the recovery goes on
    assert rec.in_recovery and not rec.signal_recovery_end.is_set()

    faust_way = _table(faust.App("recovery-test-faust", autodiscover=False, web_enabled=False))
    faust_way.data.apply_changelog_batch(
        [_Event(r) for r in batch], to_key=faust_way._to_key, to_value=faust_way._to_value
    )
    assert dict(faust_way.data.items()) == dict(table.data.items())
    assert faust_way.data._key_partition == table.data._key_partition


def test_records_already_read_are_skipped_and_the_last_one_ends_recovery(app: faust.App) -> None:
    table = _table(app)
    rec, tps = _recovering(app, table, {2: 2})
    assert recovery.take(rec, tps[2], _records(table, 2, 0, [("2|x", b"old"), ("2|y", b"y")]))
    assert rec.in_recovery
    # a fetch that overlaps what was read: only offset 2 is new
    again = _records(table, 2, 0, [("2|x", b"stale"), ("2|y", b"stale"), ("2|x", b"new")])
    assert recovery.take(rec, tps[2], again)
    assert dict(table.data.items()) == {"2|x": b"new", "2|y": b"y"}
    assert not rec.in_recovery and not app.in_recovery
    assert rec.signal_recovery_end.is_set()


def test_other_partitions_and_times_keep_fausts_path(app: faust.App) -> None:
    table = _table(app)
    rec, tps = _recovering(app, table, {0: 0})
    other = TP(table.changelog_topic.get_topic_name(), 3)  # not being recovered
    assert not recovery.take(rec, other, _records(table, 3, 0, [("3|a", b"1")]))
    rec._set_recovery_ended()
    assert not recovery.take(rec, tps[0], _records(table, 0, 0, [("0|a", b"1")]))
    assert len(table.data) == 0


class _Event:
    """What Faust's memory store reads of a changelog event."""

    def __init__(self, record: Record) -> None:
        self.key = record.key.decode().strip('"')
        self.value = record.value
        self.message = record


def test_the_changelog_keys_the_worker_writes_are_faust_s(app: faust.App) -> None:
    """``TableState.changelog_key`` makes the bytes Faust's serializer would, its own way for
    most keys: recovery (Faust's key decoding) reads them back."""
    table = _table(app)
    state = TableState(table, batch_bytes=1 << 20, lease=cast(Any, None))
    loads_key = table.app.serializers.loads_key

    @settings(max_examples=300)
    @given(
        key=st.one_of(
            st.text(),
            st.from_regex(r"\A[0-9]\|[sotm]:[ -~]{0,40}\Z"),  # engine keys, printable ASCII
        )
    )
    def check(key: str) -> None:
        written = state.changelog_key(key)
        assert written == table.changelog_topic.prepare_key(key, table.key_serializer)[0]
        assert loads_key(table.key_type, written, serializer=table.key_serializer) == key

    check()
