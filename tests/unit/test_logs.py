"""RateLimitFilter: first of a kind passes, repeats are counted, one summary per window."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from streamproc import logs
from streamproc.cli import common


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


UNABLE = "Unable connect to node with id %s: %s"


def record(
    msg: str = UNABLE, *args: object, name: str = "aiokafka.client", level: int = logging.ERROR
) -> logging.LogRecord:
    """A record as aiokafka's client logs it when the broker is gone (by default)."""
    args = args or ((1, "refused") if msg == UNABLE else ())
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def summaries() -> list[logging.LogRecord]:
    return []


@pytest.fixture
def limiter(clock: Clock, summaries: list[logging.LogRecord]) -> logs.RateLimitFilter:
    return logs.RateLimitFilter(summaries.append, window_s=60, now=clock)


def test_first_passes_repeats_are_suppressed_then_summarised(
    limiter: logs.RateLimitFilter, clock: Clock, summaries: list[logging.LogRecord]
) -> None:
    assert limiter.filter(record()) is True
    passed = []
    for n in range(1, 480):  # eight a second for a minute, each with other arguments
        clock.t += 0.125
        passed.append(limiter.filter(record(UNABLE, n, "x")))
    assert not any(passed[:-1]) and summaries == []

    clock.t += 0.125  # 60 s after the first: the window is over
    assert limiter.filter(record()) is True
    [summary] = summaries
    assert summary.name == "aiokafka.client" and summary.levelno == logging.ERROR
    assert summary.getMessage() == (
        "479 similar messages suppressed in the last 60 s; "
        "the last: Unable connect to node with id 479: x"
    )
    # The record that passed opened a new window: its repeats are suppressed again.
    clock.t += 1
    assert limiter.filter(record()) is False


def test_other_kinds_pass_at_once(limiter: logs.RateLimitFilter, clock: Clock) -> None:
    assert limiter.filter(record()) is True
    clock.t += 1
    assert limiter.filter(record()) is False
    # Another template, logger or level is another kind: the state change shows at once.
    assert limiter.filter(record("Reconnected to %s", "node 1")) is True
    assert limiter.filter(record(name="aiokafka.conn")) is True
    assert limiter.filter(record(level=logging.WARNING)) is True


def test_info_lines_are_state_changes_and_never_limited(limiter: logs.RateLimitFilter) -> None:
    joined = record("Discovered coordinator %s for group %s", 1, "g", level=logging.INFO)
    assert limiter.filter(joined) is True
    assert limiter.filter(joined) is True  # the broker came back: the same line, a new event


def test_digits_in_preformatted_messages_do_not_make_new_kinds(
    limiter: logs.RateLimitFilter,
) -> None:
    assert limiter.filter(record("drift of 0.25 s on timer 3")) is True
    assert limiter.filter(record("drift of 1.75 s on timer 12")) is False
    assert limiter.filter(record("drift of 2 s on another timer")) is True


def test_a_window_without_repeats_needs_no_summary(
    limiter: logs.RateLimitFilter, clock: Clock, summaries: list[logging.LogRecord]
) -> None:
    assert limiter.filter(record()) is True
    clock.t += 61
    assert limiter.filter(record()) is True
    assert summaries == []


def test_summary_is_due_whatever_kind_comes_next(
    limiter: logs.RateLimitFilter, clock: Clock, summaries: list[logging.LogRecord]
) -> None:
    limiter.filter(record())
    limiter.filter(record())
    limiter.filter(record())
    clock.t += 75
    assert (
        limiter.filter(record("Heartbeat failed: %s", "rejoining", level=logging.WARNING)) is True
    )
    [summary] = summaries
    assert summary.getMessage().startswith("2 similar messages suppressed in the last 75 s")


def test_our_own_loggers_are_not_limited(limiter: logs.RateLimitFilter) -> None:
    ours = [record("Redis is unavailable", name="streamproc.worker.tasks") for _ in range(3)]
    assert all(limiter.filter(r) for r in ours)
    assert limiter.filter(record(name="streamprocessor")) is True
    assert limiter.filter(record(name="streamprocessor")) is False  # not ours: only a prefix


def test_bad_arguments_in_a_suppressed_record_do_not_raise(
    limiter: logs.RateLimitFilter, clock: Clock, summaries: list[logging.LogRecord]
) -> None:
    limiter.filter(record("%d items", "not a number"))
    limiter.filter(record("%d items", "not a number"))
    clock.t += 60
    limiter.filter(record("other"))
    assert summaries[0].getMessage().endswith("the last: %d items")


@pytest.fixture
def root_handlers() -> Iterator[list[logging.Handler]]:
    """The root logger with one stream handler of its own, restored afterwards."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = [logging.StreamHandler(io.StringIO())]
    yield root.handlers
    root.handlers, root.level = saved, level


def test_install_filters_records_propagated_from_child_loggers(
    root_handlers: list[logging.Handler],
) -> None:
    stream = io.StringIO()
    root_handlers.append(logging.StreamHandler(stream))
    logs.install()
    logs.install()  # a no-op: one filter per handler
    for handler in root_handlers:
        assert sum(isinstance(f, logs.RateLimitFilter) for f in handler.filters) == 1
    child = logging.getLogger("aiokafka.conn.test_logs")  # has no handler and no filter
    for _ in range(100):
        child.error("Unable connect to node with id %s", 1)
    logging.getLogger("streamproc.test_logs").error("ours")
    assert stream.getvalue().splitlines() == ["Unable connect to node with id 1", "ours"]


def test_summary_goes_to_the_handler_the_filter_is_on(
    root_handlers: list[logging.Handler], clock: Clock
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RateLimitFilter(handler.handle, window_s=60, now=clock))
    root_handlers[:] = [handler]
    child = logging.getLogger("faust.test_logs")
    for _ in range(5):
        child.warning("Timer woke up too late")
    clock.t += 60
    child.warning("Timer woke up too late")
    assert stream.getvalue().splitlines() == [
        "Timer woke up too late",
        "4 similar messages suppressed in the last 60 s; the last: Timer woke up too late",
        "Timer woke up too late",
    ]


def test_cli_logging_is_rate_limited(root_handlers: list[logging.Handler]) -> None:
    # exporter, produce, simulate, dev: the worker's hook is tested with a real worker.
    common.configure_logging("info")
    [handler] = logging.getLogger().handlers
    assert any(isinstance(f, logs.RateLimitFilter) for f in handler.filters)
