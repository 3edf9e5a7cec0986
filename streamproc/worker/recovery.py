"""State recovery a fetched batch at a time.

Faust restores a table from its changelog a message at a time: the conductor decodes each
message into an event, queues it, and its recovery loop takes the events one by one, each with
a timer, two formatted debug lines and a check of every partition's progress. A worker
restarted holding 100 k open sessions spent most of its restart there. ``take`` applies the
records one fetch brought of a changelog partition being recovered to the table at once, and
moves Faust's recovery on as its loop would: the partition's offset, then the end of recovery
once every partition has reached its highwater. Records of other topics, or that arrive while no
recovery reads the partition, keep Faust's path.
"""

from __future__ import annotations

import time
from typing import Any

from faust.stores.memory import Store as MemoryStore
from faust.types import TP


def take(recovery: Any, tp: TP, records: list[Any]) -> bool:
    """Apply ``records`` (aiokafka ConsumerRecords in offset order) of changelog partition ``tp``
    to its table if Faust's ``recovery`` is reading ``tp`` now; False when it is not (the caller
    delivers them Faust's way)."""
    if not recovery.in_recovery or tp not in recovery.active_tps:
        return False
    table = recovery.tp_to_table[tp]
    if not isinstance(table.data, MemoryStore) or table._on_changelog_event is not None:
        return False  # what ``_apply`` does is the memory store's, without event callbacks
    started = time.monotonic()
    # Events Faust's loop buffered (none, unless a recovery began on its path) go first, and are
    # in the table before the recovery can end below (Faust's loop flushes before it ends too).
    recovery.flush_buffers()
    offsets = recovery.active_offsets
    seen = offsets.get(tp)
    fresh = records if seen is None else [r for r in records if r.offset > seen]
    if fresh:
        _apply(table, fresh)
        offsets[tp] = fresh[-1].offset
        now = time.monotonic()
        recovery._active_events_received_at[tp] = now
        # its estimate of the time left: seconds a record, one sample a batch
        recovery._processing_times.append((now - started) / len(fresh))
        if len(recovery._processing_times) > recovery.num_samples_required_for_estimate:
            recovery._processing_times.popleft()
    if not recovery.need_recovery():  # as Faust's loop after every event
        recovery._set_recovery_ended()
        recovery.signal_recovery_end.set()
    return True


def _apply(table: Any, records: list[Any]) -> None:
    """What ``Table.apply_changelog_batch`` does for these records on the memory store: the last
    value of each key wins, an empty value deletes it, each key remembers its partition (the
    store drops the keys of partitions no longer assigned after a recovery)."""
    store = table.data  # faust.stores.memory.Store
    data, partitions = store.data, store._key_partition
    loads_key = table.app.serializers.loads_key
    key_type, serializer = table.key_type, table.key_serializer
    for record in records:
        key = table._to_key(loads_key(key_type, record.key, serializer=serializer))
        partitions[key] = record.partition
        if record.value is None:
            data.pop(key, None)
            partitions.pop(key, None)
        else:
            data[key] = table._to_value(record.value)
