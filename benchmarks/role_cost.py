"""What per-process roles cost: CPU time of one process scan (full: every
pid's stat; partial: the chosen groups only) and of one classification (job
features of every examined job over a 30 s window of 5 s scans, the role
forest without numpy, the composition), on a synthetic /proc tree of
`--procs` processes (default 500: 5 PyTorch jobs, 15 busy non-AI processes,
the rest idle daemons and shells, built in a temporary directory) and on the
live host.

    python benchmarks/role_cost.py [--procs 500] [--repeat 20]
    python benchmarks/role_cost.py --host-tools 120

Prints one JSON object; times are CPU seconds of this process
(time.process_time), medians over --repeat. `--host-tools S` instead runs
the daemon's host side (`HostTools`: a sample every 5 s, a classification
every 6; the role scanner's full scan shares the sampler's process scan,
every 5th sample) for S seconds twice at the same time, with roles and without, in
two fresh interpreters, and prints each one's CPU seconds per minute and
RSS: the roles' share of the daemon's cost under the same load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.cpu import clock_ticks
from hosttune.agent.sense.telemetry.proc_evidence import ProcessScanner, evidence_row
from hosttune.models import roles as R

_MAPS_LINE = "7f{:06x}000-7f{:06x}fff r-xp 00000000 08:01 {} {}\n"


def stat_line(pid: int, comm: str, pgrp: int, utime: int, start: int) -> str:
    rest = ["S", 1, pgrp, pgrp, 0, -1, 0, 0, 0, 0, 0, utime, utime // 10, 0, 0, 20, 0, 4, 0,
            start, 1 << 30, 20000] + [0] * 30
    return f"{pid} ({comm}) " + " ".join(str(x) for x in rest) + "\n"


def build(root: Path, procs: int) -> list[tuple[int, str, int]]:
    """A /proc tree; returns (pid, kind, pgrp) of every process."""
    (root / "proc" / "net").mkdir(parents=True)
    (root / "proc" / "uptime").write_text("1000.0 0\n")
    (root / "proc" / "stat").write_text("cpu  100 0 50 800 10 0 0 0 0 0\ncpu0 1\ncpu1 1\n")
    (root / "proc" / "net" / "tcp").write_text("header\n")
    torch_maps = "".join(_MAPS_LINE.format(i, i, i, f"/usr/lib/libfoo{i}.so")
                         for i in range(600))
    torch_maps += _MAPS_LINE.format(999, 999, 1, "/site-packages/torch/lib/libtorch_cpu.so")
    # (not libc<N>.so: "libc10" is one of PyTorch's own libraries)
    plain_maps = "".join(_MAPS_LINE.format(i, i, i, f"/usr/lib/libplain{i}.so")
                         for i in range(40))
    out = []
    for i in range(procs):
        pid = 1000 + i
        kind = "ai" if i < 5 else "busy" if i < 20 else "idle"
        pgrp = pid
        d = root / "proc" / str(pid)
        (d / "fd").mkdir(parents=True)
        (d / "stat").write_text(stat_line(pid, kind, pgrp, 0, 500 + i))
        (d / "cmdline").write_bytes(f"/usr/bin/{kind} --flag\0".encode())
        (d / "maps").write_text(torch_maps if kind == "ai" else plain_maps)
        (d / "status").write_text("Name:\tx\nRssAnon:\t 2048 kB\nRssFile:\t 1024 kB\n")
        (d / "smaps_rollup").write_text("AnonHugePages:\t 0 kB\n")
        (d / "io").write_text("rchar: 1\nwchar: 2\nsyscr: 3\nsyscw: 4\nread_bytes: 0\n"
                              "write_bytes: 0\n")
        for fd in range(12 if kind != "idle" else 4):
            (d / "fd" / str(fd)).symlink_to("/dev/null" if fd < 3 else f"/data/f{fd}")
        out.append((pid, kind, pgrp))
    return out


def tick(root: Path, table: list[tuple[int, str, int]], step: int) -> None:
    for pid, kind, pgrp in table:
        if kind != "idle":
            (root / "proc" / str(pid) / "stat").write_text(
                stat_line(pid, kind, pgrp, step * (300 if kind == "ai" else 100), 500 + pid - 1000))


HOST_TOOLS = r"""
import sys, tempfile, time
from pathlib import Path
from hosttune.agent.sense.host import Host
from hosttune.agent.service.daemon.host_access import HostTools
roles, seconds = sys.argv[1] == "on", float(sys.argv[2])
tools = HostTools(Host(), Path(tempfile.mkdtemp()), roles=roles)
tools.prepare()
samples, rates = [tools.sample()], []
t0, w0, n, label = time.process_time(), time.monotonic(), 0, None
while time.monotonic() - w0 < seconds:
    time.sleep(5)
    samples.append(tools.sample())
    rates.append(tools.rates(samples[-2], samples[-1]))
    samples, rates = samples[-7:], rates[-6:]
    n += 1
    if n % 6 == 0:
        label = tools.classify(samples, rates).label
cpu = time.process_time() - t0
rss = int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
print(json.dumps({"roles": roles, "cpu_s_per_min": round(60 * cpu / (time.monotonic() - w0), 4),
                  "rss_mib": round(rss, 1), "last_verdict": label,
                  "numpy_loaded": "numpy" in sys.modules}))
"""


def host_tools(seconds: float) -> int:
    code = "import json\n" + HOST_TOOLS
    procs = [subprocess.Popen([sys.executable, "-c", code, mode, str(seconds)],
                              stdout=subprocess.PIPE, text=True) for mode in ("on", "off")]
    for p in procs:
        out, _ = p.communicate()
        print(out.strip())
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, default=500)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--host-tools", type=float, default=None, metavar="SECONDS")
    args = p.parse_args()
    if args.host_tools:
        return host_tools(args.host_tools)
    hz = clock_ticks()
    model = R.RoleModel()
    result: dict[str, object] = {"procs": args.procs}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        table = build(root, args.procs)
        host = Host(root)
        full: list[float] = []
        partial: list[float] = []
        classify: list[float] = []
        sc = ProcessScanner(host, full_every=5)
        t0 = time.process_time()
        sc.scan()  # the first sight of every process: its maps and command line read once
        first = time.process_time() - t0
        for r in range(args.repeat):
            scans = []
            for step in range(6):
                tick(root, table, r * 10 + step + 1)
                passes = sc.table.passes
                t0 = time.process_time()
                evs = sc.scan()
                # a full scan is the one that took a pass over every pid
                (full if sc.table.passes > passes else partial).append(
                    time.process_time() - t0)
                s = R.Scan(t=5.0 * step, host_busy=10.0 * step, host_total=10.0 * step,
                           ncpu=2, uptime=1000.0 + 5 * step)
                for ev in evs:
                    s.procs[ev.key] = evidence_row(5.0 * step, ev, hz)
                scans.append(s)
            t0 = time.process_time()
            verdict = model.verdict(scans)
            classify.append(time.process_time() - t0)
        result["synthetic"] = {
            "first_scan_ms": round(1000 * first, 3),
            "full_scan_ms": round(1000 * statistics.median(full), 3),
            "partial_scan_ms": round(1000 * statistics.median(partial), 3),
            "classification_ms": round(1000 * statistics.median(classify), 3),
            "jobs_examined": len(verdict.roles), "verdict": verdict.label,
            "cpu_s_per_min_at_5s_full_every_5": round(
                12 * (statistics.median(full) + 4 * statistics.median(partial)) / 5
                + 2 * statistics.median(classify), 4),
        }
    live = Host()
    pids = sum(1 for _ in live.pids())
    sc = ProcessScanner(live)  # full_every 1: every scan reads every pid
    sc.scan()
    times = []
    for _ in range(args.repeat):
        t0 = time.process_time()
        sc.scan()
        times.append(time.process_time() - t0)
    result["live"] = {"pids": pids, "full_scan_ms": round(1000 * statistics.median(times), 3)}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
