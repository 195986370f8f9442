"""What one telemetry Sample costs on this host, next to reading the same
files raw, and the RSS of a process that samples.

    .venv/bin/python benchmarks/sample_cost.py [--samples 500] [--process-samples 100] [--json]

Rows:
- system sample: Sampler.sample() with every system collector, no process scan
  (what the daemon does most intervals; `open_sampler(host, accelerators=False,
  process_every=0)`);
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
imported first. `--repeat K` measures the system sample and the raw reads K
times, interleaved, and reports the median of the K ratios.

Then a synthetic /proc/interrupts of a big host (224 CPUs, 1000 rows, most
vectors idle; `--irq-cpus`, `--irq-rows`), parsed whole (what every read cost
before the collector kept its table) and through the kept table when 10% and
when all of the rows changed since the last read. The collector's files are
read back to back here, so on this host few rows change between two samples;
at the daemon's 5 s interval more do: the "all rows changed" line is the bound.
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
from functools import partial

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.interrupts import IrqTable, parse_interrupts
from hosttune.agent.sense.telemetry.processes import find_ai_processes, host_has_accel_devices
from hosttune.agent.sense.telemetry.sampler import Sampler, open_sampler


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
        + "from hosttune.agent.sense.host import Host\n"
        "from hosttune.agent.sense.telemetry.sampler import open_sampler\n"
        "s = open_sampler(Host(), accelerators=False, process_every=1); s.sample(); s.sample()\n"
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


def synthetic_interrupts(cpus: int, rows: int, changed: float, seed: int) -> tuple[str, str]:
    """Two reads of a big host's /proc/interrupts: `changed` of the rows
    differ between them (every column of a changed row moves)."""
    import random

    rng = random.Random(seed)
    counts = [[rng.randrange(10**9) if rng.random() < 0.05 else 0 for _ in range(cpus)]
              for _ in range(rows)]
    names = [str(24 + i) for i in range(rows - 4)] + ["LOC", "RES", "CAL", "TLB"]
    moved = set(rng.sample(range(rows), round(rows * changed)))
    later = [[n + rng.randrange(1, 10**4) for n in row] if i in moved else row
             for i, row in enumerate(counts)]

    def render(table: list[list[int]]) -> str:
        out = ["   " + "".join(f"{'CPU' + str(c):>11}" for c in range(cpus))]
        for name, row in zip(names, table, strict=True):
            out.append(f"{name:>4}:" + "".join(f"{n:>11}" for n in row)
                       + "  IR-PCI-MSIX-0000:3b:00.0  12-edge      mlx5_comp12@pci:0000:3b:00.0")
        return "\n".join(out) + "\n"

    return render(counts), render(later)


def big_interrupts_rows(cpus: int, rows: int, runs: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    first, _ = synthetic_interrupts(cpus, rows, 0.0, 0)
    out["full parse"] = measure(lambda: parse_interrupts(first), runs)
    for label, changed in (("kept table, 10% rows changed", 0.1),
                           ("kept table, all rows changed", 1.0)):
        a, b = synthetic_interrupts(cpus, rows, changed, 0)
        table = IrqTable()
        texts = [a, b]
        turn = [0]

        def step(table: IrqTable = table, texts: list[str] = texts,
                 turn: list[int] = turn) -> None:
            turn[0] ^= 1
            table.update(texts[turn[0]])

        out[label] = measure(step, runs)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=500, help="runs of the system sample")
    ap.add_argument("--process-samples", type=int, default=100,
                    help="runs of the sample with the process scan")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure system sample and raw reads this many times (median ratio)")
    ap.add_argument("--irq-cpus", type=int, default=224)
    ap.add_argument("--irq-rows", type=int, default=1000)
    ap.add_argument("--irq-runs", type=int, default=30, help="runs of each big-interrupts row")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    host = Host()
    rows: dict[str, dict[str, float]] = {}
    ratios: list[float] = []
    for _ in range(max(1, args.repeat)):
        with open_sampler(host, accelerators=False, process_every=0) as sampler:
            paths = system_paths(sampler)
            rows["system sample"] = measure(sampler.sample, args.samples)
        rows["raw open+read"] = measure(partial(read_raw, paths), args.samples)
        ratios.append(rows["system sample"]["cpu_us_median"]
                      / rows["raw open+read"]["cpu_us_median"])
    preader = Preader(host, paths)
    rows["kept-fd reads"] = measure(preader, args.samples)
    preader.close()
    with open_sampler(host, accelerators=False, process_every=1) as sampler:
        rows["sample with processes"] = measure(sampler.sample, args.process_samples)
    ppaths = process_paths(host)
    rows["raw system+process files"] = measure(lambda: read_raw(paths + ppaths),
                                               args.process_samples)
    ratio = statistics.median(ratios)
    big = big_interrupts_rows(args.irq_cpus, args.irq_rows, args.irq_runs)
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
        "ratios_system_sample_to_raw_cpu": ratios,
        "big_interrupts": {"cpus": args.irq_cpus, "rows": args.irq_rows, "rows_us": big},
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
    print(f"system sample / raw open+read (cpu, median): {ratio:.2f}x  (budget <= 2x)"
          + (f"; median of {len(ratios)}: " + " ".join(f"{r:.2f}" for r in ratios)
             if len(ratios) > 1 else ""))
    print(f"sample with processes / raw files (cpu, median): {pratio:.2f}x")
    print("RSS after sampling: " + ", ".join(f"{k} {v / 1024:.1f} MiB" for k, v in rss.items()))
    print(f"synthetic /proc/interrupts, {args.irq_cpus} CPUs x {args.irq_rows} rows "
          "(cpu us, median / p90):")
    for name, r in big.items():
        print(f"  {name:<30}{r['cpu_us_median']:>10.0f}{r['cpu_us_p90']:>10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
