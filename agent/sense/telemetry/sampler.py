"""The sampler: runs the collectors, scans for AI processes every Nth time,
and turns two Samples into rates.

    sampler = open_sampler(Host())       # every system collector and the accelerators
    first = sampler.sample()
    time.sleep(1)
    second = sampler.sample()
    r = rates(first, second)             # {"cpu.util": 0.12, "disk.vda.read_bytes.rate": ...}
    sampler.close()

Accelerators plug in as one more Collector (hosttune.agent.sense.accel.select
builds it): `open_sampler` is the one way the daemon and the CLI build their
sampler, with or without it. Its `accel.<i>.*` names are in the catalogue
like every other metric.

Nothing here imports numpy or psutil: plain parsing of a few /proc files
re-read with pread is the cheapest way to a Sample (benchmarks/sample_cost.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.sample import AIProcess, Sample
from hosttune.agent.sense.telemetry.catalogue import RATE_SUFFIX, is_counter
from hosttune.agent.sense.telemetry.collector import Collector
from hosttune.agent.sense.telemetry.cpu import FIELDS as CPU_FIELDS
from hosttune.agent.sense.telemetry.cpu import CpuCollector
from hosttune.agent.sense.telemetry.disks import DiskCollector
from hosttune.agent.sense.telemetry.interrupts import InterruptsCollector
from hosttune.agent.sense.telemetry.load import LoadCollector
from hosttune.agent.sense.telemetry.memory import MemoryCollector, NumaMemoryCollector
from hosttune.agent.sense.telemetry.network import NetworkCollector
from hosttune.agent.sense.telemetry.pressure import PressureCollector
from hosttune.agent.sense.telemetry.processes import find_ai_processes, parse_stat
from hosttune.agent.sense.telemetry.vmstat import VmstatCollector

if TYPE_CHECKING:
    # for annotations only: importing it costs 17 ms and 0.9 MB (see open_sampler)
    from hosttune.agent.sense.accel.base import ProcessListing
    from hosttune.agent.sense.accel.select import AccelCollector

ProcessFinder = Callable[[Host], list[AIProcess]]

# A process born since the last scan gets the scan pulled forward once its
# resident memory reaches this: a job that starts after the daemon is then
# found within a sample or two of loading its framework and data, not up to
# a minute later. Smaller newcomers (shells, cron, compilers) cost one stat
# read a sample until they are this old, when the regular scan covers them.
EARLY_RSS = 128 << 20
YOUNG_SECONDS = 60.0
YOUNG_MAX = 256  # a fork storm is left to the regular scan


def system_collectors(host: Host) -> list[Collector]:
    """Every system collector, in the order they run."""
    return [
        CpuCollector(host),
        LoadCollector(host),
        MemoryCollector(host),
        NumaMemoryCollector(host),
        VmstatCollector(host),
        PressureCollector(host),
        DiskCollector(host),
        NetworkCollector(host),
        InterruptsCollector(host),
    ]


def process_summary(processes: Sequence[AIProcess]) -> dict[str, float]:
    """The ai.* gauges that stand for the process list in a flat Sample."""
    rss = sum(p.rss_bytes for p in processes)
    huge = sum(p.anon_huge_bytes for p in processes)
    out = {
        "ai.processes": float(len(processes)),
        "ai.accel_processes": float(sum(1 for p in processes if p.accel_devices)),
        "ai.rss_bytes": float(rss),
        "ai.anon_huge_bytes": float(huge),
        "ai.numa_nodes": float(max(
            (sum(1 for n in p.numa_pages.values() if n > 0) for p in processes), default=0)),
    }
    if rss:
        out["ai.anon_huge_ratio"] = huge / rss
    return out


class Sampler:
    """Takes Samples of one host. Collectors that fail are named in
    `Sample.errors` and the others still run.

    The AI-process scan runs on the first sample and then every
    `process_every`-th (0: never); samples in between carry the last scan's
    process list and ai.* gauges forward."""

    def __init__(
        self,
        host: Host,
        collectors: Sequence[Collector] | None = None,
        *,
        process_every: int = 5,
        find_processes: ProcessFinder = find_ai_processes,
    ) -> None:
        if process_every < 0:
            raise ValueError("process_every must be >= 0")
        self.host = host
        self.collectors: list[Collector] = (
            list(collectors) if collectors is not None else system_collectors(host)
        )
        self.process_every = process_every
        self._find_processes = find_processes
        self._count = 0
        self._processes: list[AIProcess] = []
        self._ai_values: dict[str, float] = {}
        self._last_scan: tuple[float, dict[int, float]] | None = None
        self._known_pids: set[int] = set()
        self._young: dict[int, float] = {}  # pid born since a scan -> when first seen
        self.early_scans = 0
        # set by open_sampler: the accelerator collector among `collectors`,
        # and what was left out and why ("accelerator telemetry off: ...")
        self.accel: AccelCollector | None = None
        self.notes: list[str] = []

    def sample(self) -> Sample:
        start = time.monotonic()
        values: dict[str, float] = {}
        errors: dict[str, str] = {}
        for collector in self.collectors:
            try:
                collector.collect(values)
            except HosttuneError as exc:
                errors[collector.name] = str(exc)
        if self.process_every and self._count % self.process_every == 0:
            self._scan_processes(start)
            self._known_pids = set(self.host.pids())
            self._young.clear()
        elif self.process_every and self._big_newcomer(start):
            self.early_scans += 1
            self._scan_processes(start)
        self._count += 1
        values.update(self._ai_values)
        derive_sample(values)
        values["sampler.seconds"] = time.monotonic() - start
        return Sample(monotonic=start, wall=time.time(), values=values,
                      processes=list(self._processes), errors=errors)

    def accel_processes(self) -> ProcessListing | None:
        """Which processes use which accelerator now, as the vendor backends
        list them (each backend's call bounded in time like a sample); None
        without an accelerator view. The role scanner asks for it at its full
        scans, not with every sample: it is one more library call per device
        (NVML, amdsmi) or the last `npu-smi info` table."""
        if self.accel is None:
            return None
        return self.accel.processes()

    def _scan_processes(self, now: float) -> None:
        processes = self._find_processes(self.host)
        ai = process_summary(processes)
        cpu_now = {p.pid: p.cpu_seconds for p in processes}
        if self._last_scan is not None:
            then, cpu_then = self._last_scan
            dt = now - then
            used = sum(max(0.0, cpu - cpu_then[pid])
                       for pid, cpu in cpu_now.items() if pid in cpu_then)
            if dt > 0:
                ai["ai.cpu_util"] = used / dt
        self._last_scan = (now, cpu_now)
        self._processes = processes
        self._ai_values = ai

    def _big_newcomer(self, now: float) -> bool:
        """Whether a process born since the last look holds EARLY_RSS or more;
        newcomers that do are not asked about again (the scan judged them)."""
        pids = set(self.host.pids())
        for pid in pids - self._known_pids:
            if len(self._young) < YOUNG_MAX:
                self._young[pid] = now
        self._known_pids = pids
        big = False
        for pid, seen in list(self._young.items()):
            if pid not in pids or now - seen > YOUNG_SECONDS:
                del self._young[pid]
                continue
            text = self.host.read_optional(f"/proc/{pid}/stat")
            stat = parse_stat(pid, text) if text else None
            if stat is not None and stat.rss_bytes >= EARLY_RSS:
                del self._young[pid]
                big = True
        return big

    def close(self) -> None:
        for collector in self.collectors:
            close = getattr(collector, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_sampler(
    host: Host,
    *,
    process_every: int = 5,
    accelerators: bool = True,
    backends: Sequence[str] | None = None,
    pcie_every: int = 1,
    find_processes: ProcessFinder = find_ai_processes,
) -> Sampler:
    """The sampler of one process (the daemon, a CLI command, a recording):
    every system collector, then the accelerator collector unless
    `accelerators` is False, scanning AI processes every `process_every`-th
    sample (0: never).

    `find_processes` is the process scan (the daemon's shares one pass over
    /proc with its role scanner). `backends` and `pcie_every` go to
    AccelCollector (None: automatic choice; pass
    `backends_from_config(config.backends)`). An accelerator view that cannot
    start here is left out and said in `sampler.notes`; a system collector
    that cannot start raises as before."""
    collectors = system_collectors(host)
    accel = None
    notes = []
    if accelerators:
        # accel.select (logging, threading, sysfs backend): 17 ms and 0.9 MB, which a
        # sampler without accelerators (`hosttune status`) does not pay
        from hosttune.agent.sense.accel.select import AccelCollector

        try:
            accel = AccelCollector(host, backends, pcie_every=pcie_every)
        except (HosttuneError, OSError) as exc:
            notes.append(f"accelerator telemetry off: {exc}")
        else:
            collectors.append(accel)
    sampler = Sampler(host, collectors, process_every=process_every,
                      find_processes=find_processes)
    sampler.accel = accel
    sampler.notes = notes
    return sampler


def derive_sample(values: dict[str, float]) -> None:
    """Gauges computed from one sample's own values."""
    ncpu = values.get("cpu.count")
    load = values.get("load.1")
    if ncpu and load is not None:
        values["load.per_cpu"] = load / ncpu


def rates(prev: Sample, cur: Sample) -> dict[str, float]:
    """Counters of `cur` as `<name>.rate`, per second since `prev`; gauges of
    `cur` copied; then the derived gauges (cpu.util, cpu.<c>.util,
    disk.<dev>.util, ...).

    A counter missing from `prev`, or smaller than before (a reset, a wrap, a
    device that was replaced), gives no rate rather than a wrong one. A zero
    or negative interval gives no counter rates at all."""
    dt = cur.monotonic - prev.monotonic
    out: dict[str, float] = {}
    before = prev.values
    for name, value in cur.values.items():
        if is_counter(name):
            old = before.get(name)
            if old is None or dt <= 0 or value < old:
                continue
            out[name + RATE_SUFFIX] = (value - old) / dt
        else:
            out[name] = value
    derive_rates(out)
    return out


def _busy_fraction(r: dict[str, float], prefix: str) -> tuple[float, dict[str, float]] | None:
    parts = {f: r.get(f"{prefix}{f}{RATE_SUFFIX}") for f in CPU_FIELDS}
    if parts["idle"] is None or parts["user"] is None:
        return None
    got = {f: v for f, v in parts.items() if v is not None}
    total = sum(got.values())
    if total <= 0:
        return None
    busy = total - got.get("idle", 0.0) - got.get("iowait", 0.0)
    return min(1.0, max(0.0, busy / total)), {f: v / total for f, v in got.items()}


def derive_rates(r: dict[str, float]) -> None:
    """Gauges computed from rates (in place)."""
    found = _busy_fraction(r, "cpu.")
    if found is not None:
        util, shares = found
        r["cpu.util"] = util
        for field in ("user", "system", "iowait", "steal", "softirq"):
            if field in shares:
                r[f"cpu.{field}_ratio"] = shares[field]
    suffix = ".idle" + RATE_SUFFIX
    busy_suffix = ".busy_seconds" + RATE_SUFFIX
    for name in [n for n in r if n.endswith(suffix) or n.endswith(busy_suffix)]:
        if name.startswith("cpu.") and name.count(".") == 3:
            prefix = name[: -len(suffix) + 1]  # "cpu.3."
            found = _busy_fraction(r, prefix)
            if found is not None:
                r[prefix + "util"] = found[0]
        elif name.startswith("disk.") and name.endswith(busy_suffix):
            prefix = name[: -len(busy_suffix)]
            r[prefix + ".util"] = min(1.0, max(0.0, r[name]))


def sample_window(sampler: Sampler, interval: float, count: int,
                  sleep: Callable[[float], None] = time.sleep) -> list[Sample]:
    """`count` samples `interval` seconds apart (measured from the start of
    each sample, so collection time does not stretch the window)."""
    if count < 1:
        raise ValueError("count must be >= 1")
    samples = [sampler.sample()]
    for _ in range(count - 1):
        delay = samples[-1].monotonic + interval - time.monotonic()
        if delay > 0:
            sleep(delay)
        samples.append(sampler.sample())
    return samples


def watch_rates(sampler: Sampler, interval: float,
          sleep: Callable[[float], None] = time.sleep) -> Iterator[tuple[Sample, dict[str, float]]]:
    """Endless (sample, rates since the previous sample), one per interval."""
    prev = sampler.sample()
    while True:
        delay = prev.monotonic + interval - time.monotonic()
        if delay > 0:
            sleep(delay)
        cur = sampler.sample()
        yield cur, rates(prev, cur)
        prev = cur


def window_rates(samples: Sequence[Sample]) -> dict[str, float]:
    """Rates over a whole window: counters from its first to its last sample
    (their mean rate), gauges as in the last sample."""
    if not samples:
        return {}
    return rates(samples[0], samples[-1])
