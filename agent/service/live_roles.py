"""Scans of the live host's processes as the role model reads them
(`hosttune.models.roles.Scan`): the evidence rows of `ProcessScanner` plus
the host's CPU counters, stamped with a monotonic clock."""

from __future__ import annotations

import collections
import os
import time

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.cpu import clock_ticks
from hosttune.agent.sense.telemetry.proc_evidence import (
    ProcessScanner,
    evidence_row,
    host_cpu,
    uptime,
)
from hosttune.agent.sense.telemetry.processes import ProcTable
from hosttune.models.roles import HostVerdict, RoleModel, Scan


def take_scan(host: Host, scanner: ProcessScanner, watch: tuple[int, ...] = ()) -> Scan:
    """One scan; hosttune's own process group is left out (the command
    classifying is not the host's work)."""
    hz = clock_ticks()
    own = os.getpgrp()
    t = time.monotonic()
    busy, total, ncpu = host_cpu(host)
    scan = Scan(t=t, host_busy=busy / hz, host_total=total / hz, ncpu=ncpu, uptime=uptime(host))
    for ev in scanner.scan(watch):
        if ev.stat.pgrp != own:
            scan.procs[ev.key] = evidence_row(t, ev, hz)
    return scan


class RoleWatch:
    """Process scans kept alongside the host samples, and the role verdict
    over those of a window. The role model loads at the first verdict; when
    it cannot, `problem` says why and `verdict` answers None."""

    def __init__(self, host: Host, *, full_every: int = 1, keep: int = 64,
                 table: ProcTable | None = None) -> None:
        self.host = host
        self.scanner = ProcessScanner(host, full_every=full_every, table=table)
        self.scans: collections.deque[Scan] = collections.deque(maxlen=keep)
        self.problem: str | None = None
        self._model: RoleModel | None = None

    def scan(self) -> None:
        self.scans.append(take_scan(self.host, self.scanner))

    def model(self) -> RoleModel | None:
        if self._model is None and self.problem is None:
            try:
                self._model = RoleModel()
            except (HosttuneError, OSError) as exc:
                self.problem = f"no role model: {exc}"
        return self._model

    def verdict(self, since: float | None = None) -> HostVerdict | None:
        """The verdict over the scans taken at or after monotonic `since`
        (all kept scans by default); None without a model or two scans."""
        scans = [s for s in self.scans if since is None or s.t >= since - 0.5]
        model = self.model()
        if model is None or len(scans) < 2:
            return None
        return model.verdict(scans)
