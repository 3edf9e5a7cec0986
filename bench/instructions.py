"""Instructions a pass of ``bench/pipeline.py`` (or ``bench/engine.py``) executes per message,
counted by callgrind: steady where CPU times are not.

    python bench/instructions.py [--bench pipeline|engine] [--events 120000] TREE [TREE ...]

On a shared machine the CPU time of the same code moves by 10 % and more between runs, more
than most single changes save; the instructions it executes move by less than 0.01 %. For each
source tree (the root of a checkout: its ``streamproc/`` and ``bench/`` are used), the bench
runs under ``valgrind --tool=callgrind`` twice, making one pass and two passes over the same
input, with ``PYTHONHASHSEED=0`` (else set and dict layouts differ from run to run): the
difference is one pass, without start-up and without making the traffic. Two trees run at a
time; each run takes a few minutes (callgrind runs Python some 50 times slower).

Instructions are not time: a change that saves memory traffic (cache misses) shows less here
than on a clock, one that trades instructions for a C call more. Compare versions with it, and
confirm a kept change with ``bench/throughput.py``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_COLLECTED = re.compile(rb"Collected : (\d+)")


def collected(tree: Path, bench: str, events: int, passes: int, out: Path) -> int:
    """Instructions of one run of ``tree``'s bench making ``passes`` passes (callgrind writes
    its file to ``out``)."""
    env = {
        **os.environ,
        "PYTHONHASHSEED": "0",
        "PYTHONSAFEPATH": "1",
        "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'bench'}",
    }
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        sys.executable,
        str(tree / "bench" / f"{bench}.py"),
        "--events",
        str(events),
        "--repeat",
        str(passes),
    ]
    done = subprocess.run(command, env=env, capture_output=True, check=False)
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = done.stderr.decode(errors="replace").splitlines()[-15:]
        raise SystemExit(f"{tree}: {' '.join(command[:2])} failed:\n" + "\n".join(tail))
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", type=Path, help="checkout roots to compare")
    parser.add_argument("--bench", choices=("pipeline", "engine"), default="pipeline")
    parser.add_argument("--events", type=int, default=120_000)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    trees = [tree.resolve() for tree in args.trees]
    for tree in trees:
        if not (tree / "bench" / f"{args.bench}.py").is_file():
            raise SystemExit(f"{tree}: no bench/{args.bench}.py")
    print(f"bench/{args.bench}.py, {args.events:,} events, {len(trees)} trees; minutes each")
    with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(2) as pool:
        jobs = {
            (tree, passes): pool.submit(
                collected, tree, args.bench, args.events, passes, Path(scratch) / f"{i}-{passes}"
            )
            for i, tree in enumerate(trees)
            for passes in (1, 2)
        }
        first = None
        for tree in trees:
            one_pass = jobs[tree, 2].result() - jobs[tree, 1].result()
            per_message = one_pass / args.events
            first = first or per_message
            print(
                f"{tree}: {one_pass:,} instructions a pass, {per_message:,.0f} a message "
                f"({per_message / first - 1:+.2%} against the first)"
            )


if __name__ == "__main__":
    main()
