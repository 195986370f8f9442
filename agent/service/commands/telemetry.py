"""`hosttune telemetry`: what the host is doing now, as rates, grouped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hosttune.agent.service.commands.output import JSON_OPTION, emit_json, fail

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hosttune.agent.sense.accel.select import AccelCollector
    from hosttune.agent.sense.host import Host

_WATCH = typer.Option(None, "--watch", "-w", min=0.1, max=3600.0,
                      help="Repeat every SECONDS (also the rate interval) until --count "
                           "reports or Ctrl-C.")
_COUNT = typer.Option(None, "--count", "-n", min=1, help="Number of reports (default 1, "
                      "or unbounded with --watch).")
_INTERVAL = typer.Option(1.0, "--interval", "-i", min=0.05, max=3600.0,
                         help="Seconds between the two samples of one report.")
_ROOT = typer.Option(None, "--root", help="Read a captured host tree instead of this host "
                     "(one sample: counters show as totals, not rates).")
_TOP = typer.Option(8, "--top", min=1, help="How many of the busiest IRQs to show.")
_NO_ACCEL = typer.Option(False, "--no-accel", help="Leave accelerator backends out.")


def register(app: typer.Typer) -> None:
    app.command("telemetry")(telemetry_command)


def telemetry_command(  # noqa: PLR0917 (typer maps parameters to options)
    watch: float | None = _WATCH,
    count: int | None = _COUNT,
    interval: float = _INTERVAL,
    root: Path | None = _ROOT,
    top: int = _TOP,
    no_accel: bool = _NO_ACCEL,
    json_out: bool = JSON_OPTION,
) -> None:
    """Current rates: CPU, memory, vmstat/THP, pressure, disks, network,
    interrupts, accelerators, and the processes that look like AI work (with
    their CPU affinity and memory per NUMA node)."""
    from hosttune.agent.sense.errors import HosttuneError
    from hosttune.agent.sense.host import Host
    from hosttune.agent.sense.telemetry import report
    from hosttune.agent.sense.telemetry.sampler import Sampler, system_collectors, watch_rates

    if root is not None and not root.is_dir():
        raise fail(f"--root {root}: not a directory")
    host = Host(root if root is not None else "/")
    accel = None
    try:
        collectors = system_collectors(host)
        if not no_accel:
            accel = _accel_collector(host)
            if accel is not None:
                collectors.append(accel)
        # The CLI scans processes at every sample: it takes few samples.
        sampler = Sampler(host, collectors, process_every=1)
    except HosttuneError as exc:
        raise fail(str(exc)) from None

    with sampler:
        if root is not None:
            sample = sampler.sample()
            if json_out:
                emit_json(report.to_json(sample.values, sample, has_rates=False, interval=None))
            else:
                for line in report.render_lines(sample.values, sample.processes, sample.errors,
                                                has_rates=False, top_irqs=top,
                                                accel_lines=_accel_lines(accel, sample.values)):
                    typer.echo(line)
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
                    for line in report.render_lines(r, cur.processes, cur.errors,
                                                    has_rates=True, interval=step, top_irqs=top,
                                                    accel_lines=_accel_lines(accel, r)):
                        typer.echo(line)
                if reports is not None and done >= reports:
                    break
        except KeyboardInterrupt:
            return


def _accel_lines(accel: AccelCollector | None, values: Mapping[str, float]) -> list[str]:
    if accel is None:
        return []
    from hosttune.agent.sense.accel.render import telemetry_lines

    return telemetry_lines(accel.devices(), values)


def _accel_collector(host: Host) -> AccelCollector | None:
    """The accelerator collector of hosttune.agent.sense.accel (the seam the
    sampler leaves for accelerators), or None if it cannot start here."""
    from hosttune.agent.sense.errors import HosttuneError

    try:
        from hosttune.agent.sense.accel.select import AccelCollector
        from hosttune.agent.service.config import configured_backends
    except ImportError:
        return None
    try:
        return AccelCollector(host, configured_backends())
    except HosttuneError:
        return None
