#!/usr/bin/env python3
"""What a per-process huge-page pass costs: CPU seconds and wall seconds per
GiB collapsed, over fresh processes holding private anonymous memory they
touched page by page (what PyTorch's CPU allocator leaves under THP madvise).

    sudo .venv/bin/python benchmarks/collapse_cost.py [--mib 1024] [--repeat 5]

Each round starts a holder, runs one collapse pass over it with bounds large
enough to finish (hosttune.tuners.procthp, journalled in a temporary
journal), and reads the pass's own thread CPU time (the kernel copies the
pages on the caller's account). Prints the median and range. Changes no
knob; the THP mode is checked unchanged.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from hosttune.agent.sense import procmem
from hosttune.agent.sense.host import Host
from hosttune.tuners import procthp
from hosttune.tuners.journal import Journal

HOLDER = ["-m", "hosttune.models.workloads.hold_anon"]
THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def one(mib: int, journal: Journal) -> tuple[float, float, float]:
    """(GiB collapsed, CPU seconds, wall seconds) of one pass over a fresh holder."""
    proc = subprocess.Popen([sys.executable, *HOLDER, str(mib)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        start = procmem.start_time(Host(), proc.pid)
        assert start is not None
        limits = procthp.CollapseLimits(max_bytes_per_pass=1 << 40, max_seconds_per_pass=600)
        report = procthp.collapse_pass(Host(), journal,
                                       [procthp.CollapseTarget(proc.pid, start, "holder")],
                                       limits, procthp.CollapseProgress(), reason="benchmark")
        (result,) = report.results
        return result.collapsed_mib / 1024, result.cpu_seconds, result.seconds
    finally:
        proc.kill()
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="memory per holder (1024)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    why = procmem.collapse_unsupported(Host())
    if why:
        print(f"collapse_cost: not available here: {why}", file=sys.stderr)
        return 2
    mode = Path(THP).read_text()
    cpu_per_gib, wall_per_gib = [], []
    with tempfile.TemporaryDirectory(prefix="hosttune-collapse-cost-") as tmp:
        journal = Journal(Path(tmp) / "journal.db")
        for _ in range(args.repeat):
            gib, cpu, wall = one(args.mib, journal)
            if gib <= 0:
                print("collapse_cost: nothing was collapsed", file=sys.stderr)
                return 1
            cpu_per_gib.append(cpu / gib)
            wall_per_gib.append(wall / gib)
        journal.close()
    if Path(THP).read_text() != mode:
        print("collapse_cost: the THP mode changed during the run", file=sys.stderr)
        return 1
    print(f"per-process huge pages, {args.repeat} passes over {args.mib} MiB each "
          f"(THP mode {mode.strip()}):")
    for name, values in (("CPU-s per GiB", cpu_per_gib), ("wall s per GiB", wall_per_gib)):
        print(f"  {name}: median {statistics.median(values):.3f} "
              f"(range {min(values):.3f}-{max(values):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
