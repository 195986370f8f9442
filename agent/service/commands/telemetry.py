"""`hosttune telemetry`: what the host is doing now, as rates, grouped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.service.commands.options import (
    JSON_OPTION,
    ROOT_OPTION,
    add_command,
    echo_lines,
    emit_json,
    fail,
    host_root,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hosttune.agent.sense.accel.select import AccelCollector

_WATCH = typer.Option(None, "--watch", "-w", min=0.1, max=3600.0,
                      help="Repeat every SECONDS (also the rate interval) until --count "
                           "reports or Ctrl-C.")
_COUNT = typer.Option(None, "--count", "-n", min=1, help="Number of reports (default 1, "
                      "or unbounded with --watch).")
_INTERVAL = typer.Option(1.0, "--interval", "-i", min=0.05, max=3600.0,
                         help="Seconds between the two samples of one report.")
_TOP = typer.Option(8, "--top", min=1, help="How many of the busiest IRQs to show.")
_NO_ACCEL = typer.Option(False, "--no-accel", help="Leave accelerator backends out.")


def register(app: typer.Typer) -> None:
    add_command(app, "telemetry", telemetry_command)


def telemetry_command(  # noqa: PLR0917 (typer maps parameters to options)
    watch: float | None = _WATCH,
    count: int | None = _COUNT,
    interval: float = _INTERVAL,
    root: Path | None = ROOT_OPTION,
    top: int = _TOP,
    no_accel: bool = _NO_ACCEL,
    json_out: bool = JSON_OPTION,
) -> None:
    """Show what the host is doing now, as rates grouped by subsystem.

    CPU, memory, vmstat/THP, pressure, disks, network, interrupts,
    accelerators, and the processes that look like AI work (with their CPU
    affinity and memory per NUMA node). With --root, one sample of that tree
    is shown: its counters as totals, not rates."""
    # the sampler: 100 ms, not for --help
    from hosttune.agent.sense.telemetry.sampler import open_sampler, watch_rates
    from hosttune.agent.service.render import telemetry as report

    host = Host(host_root(root))
    try:
        # The CLI scans processes at every sample: it takes few samples.
        sampler = open_sampler(host, process_every=1, accelerators=not no_accel,
                               backends=_backends())
    except HosttuneError as exc:
        raise fail(str(exc)) from None
    accel = sampler.accel

    with sampler:
        if root is not None:
            sample = sampler.sample()
            if json_out:
                emit_json(report.to_json(sample.values, sample, has_rates=False, interval=None))
            else:
                echo_lines(report.render_lines(sample.values, sample.processes, sample.errors,
                                               has_rates=False, top_irqs=top,
                                               accel_lines=_accel_lines(accel, sample.values)))
            return

        step = watch if watch is not None else interval
        reports = count if count is not None else (None if watch is not None else 1)
        try:
            for done, (cur, r) in enumerate(watch_rates(sampler, step), start=1):
                if json_out:
                    data = report.to_json(r, cur, has_rates=True, interval=step)
                    if reports == 1:
                        emit_json(data)
                    else:
                        typer.echo(json.dumps(data, sort_keys=True))
                else:
                    if done > 1:
                        typer.echo("")
                    echo_lines(report.render_lines(r, cur.processes, cur.errors,
                                                   has_rates=True, interval=step, top_irqs=top,
                                                   accel_lines=_accel_lines(accel, r)))
                if reports is not None and done >= reports:
                    break
        except KeyboardInterrupt:
            return


def _accel_lines(accel: AccelCollector | None, values: Mapping[str, float]) -> list[str]:
    from hosttune.agent.service.render.accel import telemetry_lines  # see telemetry_command

    if accel is None:
        return []
    return telemetry_lines(accel.devices(), values)


def _backends() -> list[str] | None:
    """The configured accelerator backends; automatic when the config cannot
    be read (the telemetry view does not depend on it)."""
    from hosttune.agent.service.config import configured_backends  # see telemetry_command

    try:
        return configured_backends()
    except HosttuneError:
        return None
