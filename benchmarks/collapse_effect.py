#!/usr/bin/env python3
"""What one collapse pass does for a running job, measured within the job's
own run: its rate before the pass against its rate after it, in the same
process.

    sudo .venv/bin/python benchmarks/collapse_effect.py embedding [--repeats 3]

The job (`effect_workloads.py WORKLOAD --stream`) starts under the host's
THP mode; `--at` seconds into it one pass collapses its memory
(hosttune.tuners.procthp, bounds large enough to finish, a temporary
journal); the ratio is the median rate over `--after` to the end against
the median over 3 s to `--at`. Between runs this VM's memory speed varies
more than the effect (see the README's end-to-end table), within a run it
is steady: this is the action alone, free of that draw. Changes no knob;
the THP mode is checked unchanged.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from hosttune.agent.sense import procmem
from hosttune.agent.sense.host import Host
from hosttune.tuners import procthp
from hosttune.tuners.journal import Journal

# the same stream jobs and rates as the end-to-end rows (a script's folder is
# on its path, the repo that makes `benchmarks` a package is not)
sys.path.append(str(Path(__file__).resolve().parents[1]))
from benchmarks.effectiveness import JobRun, run_job

THP = "/sys/kernel/mm/transparent_hugepage/enabled"
UNBOUNDED = procthp.CollapseLimits(max_bytes_per_pass=64 << 30, max_seconds_per_pass=120)


def collapse(pid: int, journal: Journal) -> str:
    start = procmem.start_time(Host(), pid)
    if start is None:
        return "the job had exited"
    report = procthp.collapse_pass(Host(), journal,
                                   [procthp.CollapseTarget(pid, start, "job", "benchmark")],
                                   UNBOUNDED, procthp.CollapseProgress(), reason="benchmark")
    if report.unsupported is not None:
        raise SystemExit(f"collapse_effect: {report.unsupported}")
    return report.results[0].summary()


def one(workload: str, seconds: float, at: float, after: float, journal: Journal
        ) -> tuple[float, float, str]:
    """(rate before, rate after, what the pass did) of one run."""
    done: list[str] = []
    workers: list[threading.Thread] = []

    def start_pass(run: JobRun) -> None:
        # beside the job, which keeps printing its rates while the pass runs
        workers.append(threading.Thread(target=lambda: done.append(collapse(run.pid, journal))))
        workers[0].start()

    job = run_job(workload, seconds, 1.0, at=(at, start_pass))
    for worker in workers:
        worker.join()
    before, later = job.between(3.0, at), job.between(after, math.inf)
    if before is None or later is None:
        raise SystemExit("collapse_effect: the job printed too few rates")
    return before, later, done[0] if done else "no pass"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("workload", help="an effect_workloads.py --stream job: gather, "
                        "embedding, training, numpy")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=45.0, help="how long each job runs")
    parser.add_argument("--at", type=float, default=15.0, help="the pass, seconds into the job")
    parser.add_argument("--after", type=float, default=25.0,
                        help="the rate after: from this many seconds into the job")
    args = parser.parse_args(argv)
    if procmem.collapse_unsupported(Host()) is not None:
        print(f"collapse_effect: {procmem.collapse_unsupported(Host())}", file=sys.stderr)
        return 2
    thp = Path(THP).read_text()
    ratios = []
    with tempfile.TemporaryDirectory(prefix="collapse-effect-") as tmp:
        journal = Journal(Path(tmp) / "journal.db")
        for n in range(args.repeats):
            before, later, did = one(args.workload, args.seconds, args.at, args.after, journal)
            ratios.append(later / before)
            print(f"run {n + 1}: {before:.2f} -> {later:.2f} ({later / before:.3f}); pass: {did}",
                  flush=True)
    if Path(THP).read_text() != thp:
        raise SystemExit("collapse_effect: the THP mode changed during the run")
    ratios.sort()
    print(f"{args.workload}: after/before median {statistics.median(ratios):.3f} "
          f"({ratios[0]:.3f}-{ratios[-1]:.3f}) over {len(ratios)} runs; THP "
          f"{thp.split('[')[1].split(']')[0]} throughout")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
