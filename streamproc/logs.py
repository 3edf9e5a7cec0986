"""Rate-limited logging: one line per state change, not one per retry.

With the broker gone, aiokafka logs each reconnect attempt of each client (~110 error lines a
second). :class:`RateLimitFilter` lets the first warning or error of each *kind* (logger, level,
message template) through, counts the repeats for ``window_s`` and then logs one summary line; a
kind not seen within the window passes at once. Info lines are not limited: in aiokafka and Faust
they are the state changes ("Discovered coordinator", "Setting newly assigned partitions"), which
repeat whenever the state does, and the floods are warnings and errors.

It is a handler filter because a filter on a logger does not see the records its child loggers
propagate (``aiokafka`` vs ``aiokafka.conn``); :func:`install` puts one on each handler of the
root logger, and must run again whenever something (Faust's worker) replaces those handlers.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_S = 60.0
# Our own loggers already log state changes only (and bad events once per reason).
EXEMPT = ("streamproc",)
_MAX_KINDS = 1000  # beyond this many kinds in one window, records pass unlimited
_DIGITS = re.compile(r"\d+")

Kind = tuple[str, int, str]


def kind_of(record: logging.LogRecord) -> Kind:
    """Logger, level and message template; digits are masked for messages formatted upfront."""
    return record.name, record.levelno, _DIGITS.sub("#", str(record.msg))


@dataclass
class _Window:
    started: float
    suppressed: int = 0
    last: logging.LogRecord | None = None


class RateLimitFilter(logging.Filter):
    """Pass the first record of each kind per ``window_s``; summarise the rest in one record.

    A summary is due once the window of its kind is over; it is handed to ``emit`` (the handler
    this filter sits on, see :func:`install`) before the record being filtered, so during an
    outage it appears about ``window_s`` after the first line. Records below ``level``, and those
    of loggers under ``exempt``, are never limited.

    Args:
        emit: where summaries go; they carry the logger and level of the records they count.
        now: a monotonic clock, injected by tests.
    """

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        *,
        window_s: float = WINDOW_S,
        level: int = logging.WARNING,
        exempt: tuple[str, ...] = EXEMPT,
        now: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.emit = emit
        self.window_s = window_s
        self.level = level
        self.exempt = exempt
        self.now = now
        self._windows: dict[Kind, _Window] = {}
        self._next_due = float("inf")
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno < self.level
            or getattr(record, "rate_limit_summary", False)
            or _exempt(record.name, self.exempt)
        ):
            return True
        with self._lock:
            now = self.now()
            due = self._take_due(now)
            key = kind_of(record)
            window = self._windows.get(key)
            passes = window is None
            if window is not None:
                window.suppressed += 1
                window.last = record
            elif len(self._windows) < _MAX_KINDS:
                self._windows[key] = _Window(now)
                self._next_due = min(self._next_due, now + self.window_s)
        for summary in due:
            self.emit(summary)
        return passes

    def _take_due(self, now: float) -> list[logging.LogRecord]:
        """Close the windows that are over; return summaries of those that suppressed any."""
        if now < self._next_due:
            return []
        over = [key for key, w in self._windows.items() if w.started + self.window_s <= now]
        summaries = []
        for key in over:
            window = self._windows.pop(key)
            if window.last is not None:
                summaries.append(_summary(window, elapsed_s=now - window.started))
        starts = [w.started for w in self._windows.values()]
        self._next_due = min(starts, default=float("inf")) + self.window_s
        return summaries


def _summary(window: _Window, *, elapsed_s: float) -> logging.LogRecord:
    last = window.last
    assert last is not None
    try:
        text = last.getMessage()
    except Exception:  # bad %-arguments: the handler would report it, a filter must not raise
        text = str(last.msg)
    return logging.makeLogRecord(
        {
            "name": last.name,
            "levelno": last.levelno,
            "levelname": last.levelname,
            "msg": "%d similar messages suppressed in the last %.0f s; the last: %s",
            "args": (window.suppressed, elapsed_s, text),
            "rate_limit_summary": True,
        }
    )


def _exempt(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def install(logger: logging.Logger | None = None, *, window_s: float = WINDOW_S) -> None:
    """Add a :class:`RateLimitFilter` to each handler of ``logger`` (the root) lacking one.

    Each handler gets its own filter: one shared by two handlers would count every record twice.
    """
    target = logging.getLogger() if logger is None else logger
    for handler in target.handlers:
        if not any(isinstance(f, RateLimitFilter) for f in handler.filters):
            handler.addFilter(RateLimitFilter(handler.handle, window_s=window_s))
