"""streamproc/kpi/schedule.py: when the engine looks at its records again."""

from __future__ import annotations

from streamproc.kpi.schedule import Schedule


def test_records_come_due_once_in_time_order_and_leave_the_schedule() -> None:
    schedule = Schedule()
    for full, when in (("0|s:b", 20), ("0|s:a", 10), ("0|s:c", 30)):
        schedule.set(full, when)
    assert list(schedule.due(5)) == []
    assert list(schedule.due(20)) == ["0|s:a", "0|s:b"]
    assert schedule.when == {"0|s:c": 30}
    assert list(schedule.due(20)) == []  # each once


def test_a_record_moved_later_keeps_its_entry_and_comes_due_at_its_new_time() -> None:
    schedule = Schedule()
    schedule.set("0|s:a", 10)
    schedule.set("0|s:a", 25)  # later: no entry of its own
    assert len(schedule.heap) == 1
    assert list(schedule.due(10)) == []  # its old entry comes too early: queued again
    assert list(schedule.due(25)) == ["0|s:a"]


def test_a_record_moved_earlier_or_dropped() -> None:
    schedule = Schedule()
    schedule.set("0|s:a", 30)
    schedule.set("0|s:a", 10)  # earlier: a new entry; the old one is superseded
    schedule.set("0|s:b", 10)
    schedule.drop("0|s:b")
    assert list(schedule.due(10)) == ["0|s:a"]
    assert list(schedule.due(30)) == []  # the superseded entry and the dropped record


def test_superseded_entries_are_compacted_away() -> None:
    schedule = Schedule()
    for step in range(3000):  # every record moved earlier again and again
        schedule.set(f"0|s:{step % 10}", 100_000 - step)
    assert len(schedule.when) == 10
    assert len(schedule.heap) <= 10 * 5 // 4 + 1024 + 1
    assert sorted(schedule.due(100_000)) == [f"0|s:{n}" for n in range(10)]
    assert schedule.when == {}
