"""What a backfill reads and where it keeps its state: times, name, offset ranges, environment.

A backfill is identified by its name, which is also its namespace: the Redis key prefix, the
worker app and consumer group (``{name}-worker``), the worker's internal topics and changelog, and
its own dead-letter topic (``{name}.dlq``). The plan (time range, topics, the offset range of
every partition) is stored in Redis under the name, so ``--resume`` needs nothing but the name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from streamproc import times
from streamproc.config import TOPIC_FIELDS, Settings
from streamproc.errors import BackfillError

TopicPart = tuple[str, int]


def parse_time(text: str, *, now: datetime) -> datetime:
    """``2026-11-20T06:00:00Z`` (RFC 3339, with an offset), ``2026-11-20`` (midnight UTC),
    ``now``, or a duration before now: ``7d``, ``36h``, ``-90m``."""
    try:
        # "7d" means 7 days ago, as "-7d" does here and for simulate --start
        return times.parse_time(text, now=now, dates=True, unsigned_ago=True)
    except ValueError as exc:
        raise BackfillError(
            f"{exc}; use RFC 3339 like 2026-11-20T06:00:00Z, a date, or a duration ago like 7d"
        ) from None


def default_name(since_ms: int, until_ms: int, topics: Iterable[str], read: Iterable[str]) -> str:
    """``bf-20261119T000000Z-20261122T000000Z-1a2b3c``: the range, and a hash of the input
    topics and of the ones read, so two deployments or topic subsets never share a namespace."""
    digest = hashlib.sha1(("\n".join(topics) + "|" + "\n".join(read)).encode()).hexdigest()
    return f"bf-{_compact(since_ms)}-{_compact(until_ms)}-{digest[:6]}"


def _compact(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y%m%dT%H%M%SZ")


def consumer_group(name: str) -> str:
    """The worker's Faust app id, hence its consumer group (``app.create_app``)."""
    return f"{name}-worker"


def changelog_topic(name: str) -> str:
    """The changelog of the workers' state table (``app.create_app``: table ``state``)."""
    return f"{consumer_group(name)}-state-changelog"


def dead_letter_topic(name: str) -> str:
    return f"{name}.dlq"


def _key(tp: TopicPart) -> str:
    return f"{tp[0]}:{tp[1]}"


def _tp(key: str) -> TopicPart:
    topic, _, partition = key.rpartition(":")
    return topic, int(partition)


@dataclass(frozen=True)
class Plan:
    """One backfill: the records of every input partition in ``[starts, ends)``.

    Attributes:
        topics: all input topics (clickstream, cart, orders, tickets), as the workers consume them.
        read: the topics whose ranges are read; the others get an empty range.
        lookup: how many boundaries each method found: ``broker`` (a verified ListOffsets
            answer) or ``scan``; and ``extended``: partitions whose range runs past the first
            record stamped at or after its end (records stamped within it follow; offsets.py).
        finished_ms: wall clock when every partition was read to its end; None while running.
    """

    name: str
    since_ms: int
    until_ms: int
    topics: tuple[str, ...]
    read: tuple[str, ...]
    partitions: int
    starts: dict[TopicPart, int]
    ends: dict[TopicPart, int]
    lookup: dict[str, int] = field(default_factory=dict)  # method -> boundaries found so
    created_ms: int = 0
    finished_ms: int | None = None

    @property
    def records(self) -> int:
        """Records in the ranges: every event the backfill reads."""
        return sum(self.ends[tp] - self.starts[tp] for tp in self.starts)

    def partition_records(self, partition: int) -> int:
        return sum(self.ends[tp] - self.starts[tp] for tp in self.starts if tp[1] == partition)

    def finished(self, at_ms: int) -> Plan:
        return replace(self, finished_ms=at_ms)

    def to_json(self) -> bytes:
        doc = {
            "name": self.name,
            "since_ms": self.since_ms,
            "until_ms": self.until_ms,
            "topics": list(self.topics),
            "read": list(self.read),
            "partitions": self.partitions,
            "starts": {_key(tp): o for tp, o in sorted(self.starts.items())},
            "ends": {_key(tp): o for tp, o in sorted(self.ends.items())},
            "lookup": self.lookup,
            "created_ms": self.created_ms,
            "finished_ms": self.finished_ms,
        }
        return json.dumps(doc, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Plan:
        doc = json.loads(raw)
        return cls(
            name=doc["name"],
            since_ms=doc["since_ms"],
            until_ms=doc["until_ms"],
            topics=tuple(doc["topics"]),
            read=tuple(doc["read"]),
            partitions=doc["partitions"],
            starts={_tp(k): int(v) for k, v in doc["starts"].items()},
            ends={_tp(k): int(v) for k, v in doc["ends"].items()},
            lookup=dict(doc.get("lookup", {})),
            created_ms=doc.get("created_ms", 0),
            finished_ms=doc.get("finished_ms"),
        )


def worker_env(settings: Settings, name: str, *, bootstrap: str, redis_url: str) -> dict[str, str]:
    """Environment of the backfill's worker processes: its own namespace and dead-letter topic
    (``dead_letter_topic``), the same input topics and every other setting as this process."""
    named = settings.with_namespace(name, topics=False).model_copy(
        update={"bootstrap_servers": bootstrap, "redis_url": redis_url}
    )
    return named.env(*TOPIC_FIELDS, "bootstrap_servers", "redis_url")
