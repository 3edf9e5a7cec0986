"""How long a record stays in the state: until the watermark passes its deadline, after which no
event the engine accepts can change it (``engine.py`` evicts it then, its contribution frozen)."""

from __future__ import annotations

from streamproc.kpi import absorb
from streamproc.kpi.batch import EngineSettings
from streamproc.kpi.epoch import MINUTE_MS
from streamproc.kpi.records import NONE, SessionRecord, TicketRecord


def deadline(key: str, record: SessionRecord | TicketRecord, settings: EngineSettings) -> int:
    """After this watermark no accepted event can change the record (state key ``key``): the
    latest of its events, plus what may still follow it (a session or cart timeout; an order or
    ticket retention), plus the maximum lateness."""
    s = settings
    if isinstance(record, SessionRecord):
        latest = _latest_mark(record.marks)
        for segment in record.segments:  # (loops, not lists: this runs for every record)
            if segment.end > latest:
                latest = segment.end
        for cart in record.carts:
            for event in cart.events:
                if event.t > latest:
                    latest = event.t
        for refund in record.refunds:
            if refund.t > latest:
                latest = refund.t
        latest += max(s.session_timeout_ms, s.abandonment_timeout_ms)
        for order in record.orders:
            for moment in (order.placed, order.cancelled):
                if moment is not None:
                    latest = max(latest, moment.t + s.order_retention_ms)
        return latest + s.max_lateness_ms
    times = [o.t for o in record.openings] + record.agent_replies + record.resolutions
    times += [sv.t for sv in record.surveys] + [record.escalated, _latest_mark(record.marks)]
    if record.lifecycle is not None:
        times.append(record.lifecycle.t)
    retention = s.ticket_retention_ms if key.startswith("t:") else 0
    return max(times, default=NONE) + retention + s.max_lateness_ms


def _latest_mark(marks: dict[str, int]) -> int:
    """The end of the latest minute with a marked event (absorb.mark), NONE without any: no
    event a record absorbed may outlive it."""
    if not marks:
        return NONE
    return max(absorb.mark_cell(key)[0] for key in marks) + MINUTE_MS - 1
