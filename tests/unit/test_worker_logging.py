"""The worker process as set up: no DEBUG record built on the hot path, fewer collections.

At WARNING, Faust's terminal spinner used to set the root logger to DEBUG, and every message
sent built a debug record in aiokafka and Faust (6 % of a worker's time)."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import faust
import pytest

from streamproc.cli.pipeline import tune_gc, worker_class
from streamproc.config import Settings

# loggers that log at DEBUG for every message sent or received
HOT = ("aiokafka.producer.producer", "aiokafka.conn", "faust.topics", "faust.transport.consumer")


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    factory = logging.getLogRecordFactory()
    try:
        yield
    finally:
        logging.setLogRecordFactory(factory)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.mark.parametrize("level", ["info", "warning", "error"])
def test_no_debug_record_is_built_on_the_hot_path(level: str, restored_logging: None) -> None:
    app = faust.App(f"logging-{level}", autodiscover=False, web_enabled=False)
    worker = worker_class()(app, loglevel=level, redirect_stdouts=False, quiet=True)
    worker._setup_logging()  # what the worker does first when it starts
    built: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        built.append(record)
        return record

    logging.setLogRecordFactory(counting)
    for name in HOT:
        logging.getLogger(name).debug("Sending (key=%s value=%s) to %s", b"k", b"v", "tp")
    assert built == []
    logging.getLogger(HOT[0]).log(logging.getLevelName(level.upper()), "still logged")
    assert len(built) == 1


def test_the_worker_collects_garbage_less_often() -> None:
    before = gc.get_threshold()
    try:
        tune_gc(Settings().gc_gen0_threshold)
        assert gc.get_threshold() == (250_000, *before[1:])
    finally:
        gc.set_threshold(*before)
