"""What one telemetry Sample costs on this host, next to reading the same
files raw, and the RSS of a process that samples.

    .venv/bin/python benchmarks/sample_cost.py [--samples 500] [--process-samples 100] [--json]

Rows:
- system sample: Sampler.sample() with every system collector, no process scan
  (what the daemon does most intervals);
- raw open+read: open, read and close each file that sample reads (the
  budget in DESIGN.md: a full Sample <= 2x this);
- kept-fd reads: the same files read the sampler's way (preadv on kept-open
  fds into kept buffers) without parsing: the rest of a sample is parsing;
- sample with processes: the same plus the AI-process scan (every Nth sample
  in the daemon);
- raw process files: open+read of the per-process files that scan reads
  (cmdline and maps of every process; status, stat, smaps_rollup, numa_maps
  of the AI ones).

CPU time is this process's (CLOCK_PROCESS_CPUTIME_ID), wall time is
perf_counter; median and p90 over the runs, in microseconds. RSS is measured
in fresh interpreters (VmRSS after one sample), with and without numpy
imported first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from hosttune.agent.host import Host
from hosttune.agent.telemetry.processes import find_ai_processes, host_has_accel_devices
from hosttune.agent.telemetry.sampler import Sampler


def measure(fn: Callable[[], object], runs: int) -> dict[str, float]:
    cpu: list[float] = []
    wall: list[float] = []
    for _ in range(3):
        fn()  # warm up (first reads open the kept files)
    for _ in range(runs):
        c0, w0 = time.process_time_ns(), time.perf_counter_ns()
        fn()
        w1, c1 = time.perf_counter_ns(), time.process_time_ns()
        cpu.append((c1 - c0) / 1e3)
        wall.append((w1 - w0) / 1e3)
    return {
        "runs": runs,
        "cpu_us_median": statistics.median(cpu),
        "cpu_us_p90": statistics.quantiles(cpu, n=10)[-1],
        "wall_us_median": statistics.median(wall),
        "wall_us_p90": statistics.quantiles(wall, n=10)[-1],
    }


def system_paths(sampler: Sampler) -> list[str]:
    paths: list[str] = []
    for collector in sampler.collectors:
        get = getattr(collector, "paths", None)
        if callable(get):
            paths.extend(get())
    return paths


def read_raw(paths: Sequence[str]) -> None:
    for path in paths:
        try:
            with open(path, "rb") as fh:
                fh.read()
        except OSError:
            pass  # a process that ended meanwhile


class Preader:
    """The sampler's own way of reading (Host.kept: preadv into a kept
    buffer), without the parsing."""

    def __init__(self, host: Host, paths: Sequence[str]) -> None:
        self.files = [host.kept(p) for p in paths]

    def __call__(self) -> None:
        for kept in self.files:
            kept.read()

    def close(self) -> None:
        for kept in self.files:
            kept.close()


def process_paths(host: Host) -> list[str]:
    """The files find_ai_processes reads on this host, as it stands now."""
    ai = {p.pid for p in find_ai_processes(host)}
    paths = []
    for pid in host.pids():
        paths += [f"/proc/{pid}/cmdline", f"/proc/{pid}/maps"]
        if pid in ai:
            paths += [f"/proc/{pid}/{f}" for f in ("status", "stat", "smaps_rollup",
                                                      "numa_maps")]
    return paths


def rss_kib(numpy_first: bool) -> int:
    code = (
        ("import numpy\n" if numpy_first else "")
        + "from hosttune.agent.host import Host\n"
        "from hosttune.agent.telemetry.sampler import Sampler\n"
        "s = Sampler(Host(), process_every=1); s.sample(); s.sample()\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    return int(out.stdout.strip())


def bare_rss_kib() -> int:
    code = "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmRSS')][0])"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True)
    return int(out.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=500, help="runs of the system sample")
    ap.add_argument("--process-samples", type=int, default=100,
                    help="runs of the sample with the process scan")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    host = Host()
    rows: dict[str, dict[str, float]] = {}
    with Sampler(host, process_every=0) as sampler:
        paths = system_paths(sampler)
        rows["system sample"] = measure(sampler.sample, args.samples)
    rows["raw open+read"] = measure(lambda: read_raw(paths), args.samples)
    preader = Preader(host, paths)
    rows["kept-fd reads"] = measure(preader, args.samples)
    preader.close()
    with Sampler(host, process_every=1) as sampler:
        rows["sample with processes"] = measure(sampler.sample, args.process_samples)
    ppaths = process_paths(host)
    rows["raw system+process files"] = measure(lambda: read_raw(paths + ppaths),
                                               args.process_samples)
    ratio = rows["system sample"]["cpu_us_median"] / rows["raw open+read"]["cpu_us_median"]
    pratio = (rows["sample with processes"]["cpu_us_median"]
              / rows["raw system+process files"]["cpu_us_median"])
    h = {"cpus": os.cpu_count(), "processes": sum(1 for _ in host.pids()),
         "files_per_system_sample": len(paths), "process_files": len(ppaths),
         "fd_scan": host_has_accel_devices(host)}
    rss = {"bare python": bare_rss_kib(), "sampler": rss_kib(False),
           "sampler + numpy": rss_kib(True)}
    result = {
        "host": h,
        "rows": rows,
        "ratio_system_sample_to_raw_cpu": ratio,
        "ratio_process_sample_to_raw_cpu": pratio,
        "rss_kib": rss,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"host: {h['cpus']} CPUs, {h['processes']} processes, "
          f"{h['files_per_system_sample']} files per system sample, "
          f"{h['process_files']} per-process files, fd scan {'on' if h['fd_scan'] else 'off'}")
    print(f"{'':<26}{'runs':>6}{'cpu med':>10}{'cpu p90':>10}{'wall med':>10}{'wall p90':>10}"
          "   (us)")
    for name, r in rows.items():
        print(f"{name:<26}{r['runs']:>6.0f}{r['cpu_us_median']:>10.0f}{r['cpu_us_p90']:>10.0f}"
              f"{r['wall_us_median']:>10.0f}{r['wall_us_p90']:>10.0f}")
    print(f"system sample / raw open+read (cpu, median): {ratio:.2f}x  (budget <= 2x)")
    print(f"sample with processes / raw files (cpu, median): {pratio:.2f}x")
    print("RSS after sampling: " + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in rss.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
