"""Turning the OpenMetrics file into Prometheus TSDB blocks with ``promtool``, and what to do with
them (prometheus-notes §5: blocks are moved into the server's data directory by hand, retention
applies to them, the last three hours are the head block's)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from streamproc.errors import BackfillError

HEAD_BLOCK_S = 3 * 3600  # Prometheus' head block: "not safe to backfill data from the last 3 hours"
DEFAULT_RETENTION_DAYS = 15


@dataclass(frozen=True)
class Blocks:
    directory: Path
    names: list[str]  # ULIDs of the blocks promtool wrote


def create_blocks(openmetrics: Path, directory: Path, *, promtool: str | None = None) -> Blocks:
    """``promtool tsdb create-blocks-from openmetrics FILE DIR``; BackfillError when it fails."""
    binary = promtool or shutil.which("promtool")
    if binary is None:
        raise BackfillError(
            "promtool not found on PATH (Debian: apt-get install --no-install-recommends "
            "prometheus); the OpenMetrics file is written, run promtool on it yourself"
        )
    directory.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(directory))
    command = [
        binary,
        "tsdb",
        "create-blocks-from",
        "openmetrics",
        str(openmetrics),
        str(directory),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-2000:]
        raise BackfillError(f"promtool failed (exit {done.returncode}): {output}")
    names = sorted(n for n in os.listdir(directory) if n not in before and (directory / n).is_dir())
    return Blocks(directory, names)


def next_steps(blocks: Blocks, *, first_s: int, last_s: int, now_s: float) -> list[str]:
    """What the user does next, with the numbers of this backfill."""
    age_days = math.ceil((now_s - first_s) / 86400)
    where = blocks.directory
    prefix = _common_prefix(blocks.names)
    steps = [
        f"{len(blocks.names)} TSDB blocks in {where}. Next:",
        "1. Move them into the Prometheus data directory (its --storage.tsdb.path; Debian "
        f"/var/lib/prometheus/metrics2): mv {where}/{prefix}* <data dir>/ and give them to the "
        "server's user (Debian: chown -R prometheus:prometheus <data dir>).",
        "2. A running server loads them at its next block reload (about a minute) or restart. "
        "Overlapping blocks are merged at compaction (Prometheus >= 2.39; older servers need "
        "--storage.tsdb.allow-overlapping-blocks).",
        f"3. Retention applies to backfilled blocks: the oldest sample is {age_days} days old, so "
        f"--storage.tsdb.retention.time must be more than {age_days}d (default "
        f"{DEFAULT_RETENTION_DAYS}d) or they are deleted at the next compaction.",
        '4. The series carry source="backfill": the live ones never collide with them; panels '
        'that aggregate away "source" show both. Recording rules over this range: promtool tsdb '
        "create-blocks-from rules --start ... --end ..., one pass per rule dependency level.",
    ]
    if age_days > DEFAULT_RETENTION_DAYS:
        steps.append(
            f"Warning: older than the default retention ({DEFAULT_RETENTION_DAYS}d): raise it "
            "before moving the blocks in."
        )
    if last_s > now_s - HEAD_BLOCK_S:
        steps.append(
            "Warning: samples within the last 3 hours overlap the server's head block, where "
            "backfilling is not safe; backfill ranges that end at least 3 hours ago."
        )
    return steps


def _common_prefix(names: list[str]) -> str:
    """The longest common start of the block names (ULIDs), for one ``mv`` glob."""
    if not names:
        return ""
    first, last = min(names), max(names)
    size = 0
    while size < len(first) and first[size] == last[size]:
        size += 1
    return first[:size]
