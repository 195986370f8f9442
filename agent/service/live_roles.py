"""Scans of the live host's processes as the role model reads them
(`hosttune.models.roles.Scan`): the evidence rows of `ProcessScanner` plus
the host's CPU counters, stamped with a monotonic clock."""

from __future__ import annotations

import time

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.cpu import clock_ticks
from hosttune.agent.sense.telemetry.proc_evidence import (
    ProcessScanner,
    evidence_row,
    host_cpu,
    uptime,
)
from hosttune.models.roles import Scan


def take_scan(host: Host, scanner: ProcessScanner, watch: tuple[int, ...] = ()) -> Scan:
    hz = clock_ticks()
    t = time.monotonic()
    busy, total, ncpu = host_cpu(host)
    scan = Scan(t=t, host_busy=busy / hz, host_total=total / hz, ncpu=ncpu, uptime=uptime(host))
    for ev in scanner.scan(watch):
        scan.procs[ev.key] = evidence_row(t, ev, hz)
    return scan
