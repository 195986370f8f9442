"""`hosttune accel`: every accelerator, where it sits, and one sample of it."""

from __future__ import annotations

from pathlib import Path

import typer

from hosttune.agent.sense.host import Host
from hosttune.agent.service import optional
from hosttune.agent.service.commands.options import (
    JSON_OPTION,
    ROOT_OPTION,
    add_command,
    echo_lines,
    emit_json,
    host_root,
)

_BACKEND = typer.Option(None, "--backend", "-b",
                        help="Use only this backend (repeatable): nvidia, amd, ascend, sysfs. "
                             "Default: the configuration's `backends`, else automatic.")


def register(app: typer.Typer) -> None:
    add_command(app, "accel", accel_command)


def accel_command(
    root: Path | None = ROOT_OPTION,
    backend: list[str] | None = _BACKEND,
    json_out: bool = JSON_OPTION,
) -> None:
    """Show every accelerator of every vendor: where it sits and how busy it is.

    For each: its NUMA node, CPUs, nearby NICs and links, and its utilization,
    memory, power and PCIe throughput now. A backend named with --backend
    whose Python package is missing (nvidia-ml-py, amdsmi) is refused, naming
    the package; without --backend, a vendor backend that cannot open leaves
    its devices to the sysfs view."""
    # sense.accel and config: 80 ms together, not for --help
    from hosttune.agent.sense.accel.select import AccelCollector
    from hosttune.agent.sense.accel.sysfs import scan_nics
    from hosttune.agent.service.config import configured_backends
    from hosttune.agent.service.render import accel as render

    optional.require_backends("accel", backend)
    host = Host(host_root(root))
    names = list(backend) if backend else configured_backends()
    coll = AccelCollector(host, names)
    try:
        values: dict[str, float] = {}
        coll.collect(values)
        devices = coll.devices()
        listing = coll.processes()
        backends = coll.backend_names
    finally:
        coll.close()
    nics = scan_nics(host)
    if json_out:
        emit_json({
            "backends": backends,
            "devices": render.topology_json(devices, nics),
            "metrics": {k: v for k, v in sorted(values.items()) if k.startswith("accel.")},
            "processes": [p.to_dict() for p in listing.processes],
            "process_problems": dict(listing.problems),
        })
        return
    echo_lines(render.topology_lines(devices, nics))
    if devices:
        typer.echo("")
        echo_lines(render.telemetry_lines(devices, values))
    if listing.processes:
        typer.echo("")
        typer.echo("Processes on accelerators")
        for p in listing.processes:
            mem = "-" if p.memory_bytes is None else f"{p.memory_bytes / (1 << 20):.0f} MiB"
            util = "" if p.util is None else f"  {p.util:.0%} busy"
            typer.echo(f"  pid {p.pid:<8} accel{p.device:<3} {mem:>10}{util}  {p.name or ''}")
