"""Scans of the live host's processes as the role model reads them
(`hosttune.models.roles.Scan`): the evidence rows of `ProcessScanner` plus
the host's CPU counters, stamped with a monotonic clock."""

from __future__ import annotations

import collections
import logging
import os
import time
from typing import TYPE_CHECKING

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.cpu import clock_ticks
from hosttune.agent.sense.telemetry.proc_evidence import (
    AccelSource,
    ProcessScanner,
    evidence_row,
    host_cpu,
    uptime,
)
from hosttune.agent.sense.telemetry.processes import ProcTable
from hosttune.models.roles import HostVerdict, RoleModel, Scan

if TYPE_CHECKING:
    from hosttune.agent.sense.accel.select import AccelCollector

log = logging.getLogger("hosttune.roles")


def take_scan(host: Host, scanner: ProcessScanner, watch: tuple[int, ...] = ()) -> Scan:
    """One scan; hosttune's own process is left out (the command classifying
    is not the host's work). Only the process, not its group: a daemon
    started from a job's launch script (a container entrypoint, `hosttuned &
    python train.py`) shares the job's group, and leaving the group out hid
    the very job it was there for. Nor its children: a job can be one."""
    hz = clock_ticks()
    own = os.getpid()
    t = time.monotonic()
    busy, total, ncpu = host_cpu(host)
    scan = Scan(t=t, host_busy=busy / hz, host_total=total / hz, ncpu=ncpu, uptime=uptime(host))
    for ev in scanner.scan(watch):
        if ev.stat.pid != own:
            scan.procs[ev.key] = evidence_row(t, ev, hz)
    return scan


class RoleWatch:
    """Process scans kept alongside the host samples, and the role verdict
    over those of a window. The role model loads at the first verdict; when
    it cannot, `problem` says why and `verdict` answers None."""

    def __init__(self, host: Host, *, full_every: int = 1, keep: int = 64,
                 table: ProcTable | None = None, accel: AccelSource | None = None,
                 accelerators: bool = False) -> None:
        """`accel`: the per-process accelerator listing of a sampler the
        caller already runs (the daemon's); `accelerators`: without one, open
        an accelerator view of our own for the listing (a CLI command), closed
        by `close()`."""
        self.host = host
        self._collector: AccelCollector | None = None
        if accel is None and accelerators:
            accel = self._open_accel()
        self.scanner = ProcessScanner(host, full_every=full_every, table=table, accel=accel)
        self.scans: collections.deque[Scan] = collections.deque(maxlen=keep)
        self.problem: str | None = None
        self._model: RoleModel | None = None

    def _open_accel(self) -> AccelSource | None:
        # accel.select and the vendor backends: imported only by a caller that
        # wants the listing (17 ms, more with a vendor library)
        from hosttune.agent.sense.accel.select import AccelCollector
        from hosttune.agent.service.config import configured_backends

        try:
            self._collector = AccelCollector(self.host, configured_backends())
        except (HosttuneError, OSError) as exc:
            log.info("roles: no accelerator listing: %s", exc)
            return None
        return self._collector.processes

    @property
    def accel_problem(self) -> str | None:
        """Why the accelerator listing behind the last scans is missing or
        incomplete (a backend without permission, sysfs alone, ...)."""
        return self.scanner.accel_problem

    def close(self) -> None:
        if self._collector is not None:
            self._collector.close()
            self._collector = None

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
