"""Whether this worker still owns its partitions: a lease on its consumer-group membership.

A worker stalled longer than the group's session timeout (stopped, swapped out, starved of CPU)
has lost its partitions to another worker without knowing it. When it wakes, the batch it held
would go on: its state to Redis (absolute values) and to the changelog, over what the new owner
wrote meanwhile. Nothing on the broker or in Redis refuses such a write, so the worker fences
itself: it writes only while its membership is known to hold.

The broker keeps a member at least ``session timeout`` after the last heartbeat it accepted, and
a rebalance, which begins after that heartbeat (it is answered "rebalancing" once one is under
way), waits for the member at least ``rebalance timeout``. So a membership holds until the send
time of its last accepted heartbeat (or group sync) plus the smaller of the two, less a margin
for the write to land. Past that, a write waits for the next accepted heartbeat; once the
coordinator's generation is no longer the one the partitions were assigned in (the broker no
longer knows the member, or a new assignment came), the write is dropped (``Fenced``): its batch
is not acked, and whoever owns the partition now reads it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from streamproc.errors import Fenced

logger = logging.getLogger(__name__)

HEARTBEAT_API_KEY = 12
SYNC_GROUP_API_KEY = 14


class Membership:
    """The lease of this worker's group membership, renewed by the accepted heartbeats of the
    consumer's group coordinator (``watch``); ``confirm`` guards every write of state."""

    POLL_S = 0.05

    def __init__(
        self,
        *,
        session_timeout_s: float,
        rebalance_timeout_s: float,
        heartbeat_interval_s: float,
        generation: Callable[[], int],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``generation``: the generation the worker's partitions were assigned in (Faust's
        ``consumer_generation_id``); ``clock``: monotonic seconds."""
        self.window_s = min(session_timeout_s, rebalance_timeout_s)
        # time for a write to land once confirmed; at least one heartbeat fits in the rest
        self.margin_s = max(0.0, min(3.0, (self.window_s - heartbeat_interval_s) / 2))
        self.assigned_generation = generation
        self.clock = clock
        self.coordinator: Any = None  # aiokafka's GroupCoordinator, once the consumer started
        self.renewed_at: float | None = None  # send time of the last accepted heartbeat or sync
        self.renewed_generation: int | None = None

    def watch(self, coordinator: Any) -> None:
        """Renew the lease from ``coordinator``'s accepted heartbeats and group syncs (its
        requests all go through ``_send_req``; called on the consumer's thread)."""
        send = coordinator._send_req

        async def send_req(request: Any) -> Any:
            sent_at, generation = self.clock(), coordinator.generation
            response = await send(request)
            renews = request.API_KEY in (HEARTBEAT_API_KEY, SYNC_GROUP_API_KEY)
            if renews and getattr(response, "error_code", None) == 0:
                self.renewed_at, self.renewed_generation = sent_at, generation
            return response

        coordinator._send_req = send_req
        self.coordinator = coordinator

    def holds_until(self) -> float | None:
        """Until when (``clock``) the membership is known to hold, margin deducted."""
        if self.renewed_at is None:
            return None
        return self.renewed_at + self.window_s - self.margin_s

    def generation(self) -> int:
        """The generation this worker's partitions were assigned in."""
        return self.assigned_generation()

    def lost(self, generation: int) -> str | None:
        """Why the partitions assigned in ``generation`` may have moved to another worker, if
        the group says so."""
        assigned = self.assigned_generation()
        current = None if self.coordinator is None else self.coordinator.generation
        if assigned != generation:
            return f"its partitions were assigned again (generation {assigned})"
        if current is not None and current != generation:
            return f"the group is at generation {current}, not {generation}"
        return None

    async def confirm(self, what: str, generation: int) -> None:
        """Return while the membership of ``generation`` holds; wait while it is not known (a
        heartbeat is late); raise ``Fenced`` once the group has moved on."""
        waited = False
        while True:
            if (why := self.lost(generation)) is not None:
                raise Fenced(f"{what} is dropped: {why}")
            until = self.holds_until()
            if until is not None and self.clock() < until and self.renewed_generation == generation:
                if waited:
                    logger.info("%s goes on: a heartbeat was accepted again", what)
                return
            if not waited:
                waited = True
                logger.warning(
                    "%s waits: no heartbeat accepted in the last %.1f s, this worker may no "
                    "longer own its partitions",
                    what,
                    self.window_s - self.margin_s,
                )
            await asyncio.sleep(self.POLL_S)
