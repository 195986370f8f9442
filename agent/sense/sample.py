"""What one sampling pass sees: a flat mapping of metric name to number plus the
processes that look like AI work. Names come from the catalogue
(`hosttune.agent.sense.telemetry.catalogue`), the single list of metric names."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class AIProcess:
    """A process that looks like AI work, and why we think so."""

    pid: int
    comm: str
    cmdline: str
    # e.g. ("device:/dev/nvidia0", "lib:libtorch_cpu.so", "cmdline:torchrun")
    reasons: tuple[str, ...]
    cpus: tuple[int, ...] = ()
    rss_bytes: int = 0
    # NUMA node -> resident pages of that node (from numa_maps), empty if unknown
    numa_pages: dict[int, int] = field(default_factory=dict)
    # accelerator device files it holds open (/dev/nvidia0, /dev/davinci3, ...)
    accel_devices: tuple[str, ...] = ()
    # the process's own counters (cpu seconds, ...) for rate computation
    cpu_seconds: float = 0.0
    anon_huge_bytes: int = 0
    # private anonymous memory (smaps_rollup Anonymous): what a collapse can reach
    anon_bytes: int = 0
    # field 22 of /proc/PID/stat: with the pid, names this process for the boot
    start_time: str = ""


@dataclass
class Sample:
    """One sampling pass. `monotonic` orders samples and gives rate intervals;
    `wall` is for display and traces."""

    monotonic: float
    wall: float
    values: dict[str, float] = field(default_factory=dict)
    processes: list[AIProcess] = field(default_factory=list)
    # collectors that failed this pass: collector name -> one-line reason
    errors: dict[str, str] = field(default_factory=dict)
