"""`hosttune accel`: every accelerator, where it sits, and one sample of it."""

from __future__ import annotations

from pathlib import Path

import typer

from hosttune.agent.service.commands.output import JSON_OPTION, emit_json

_ROOT = typer.Option(Path("/"), "--root", help="Read this tree instead of the live host "
                     "(a fixture host such as tests/fixtures/hosts/mixed).")
_BACKEND = typer.Option(None, "--backend", "-b",
                        help="Use only this backend (repeatable): nvidia, amd, ascend, sysfs. "
                             "Default: the configuration's `backends`, else automatic.")


def register(app: typer.Typer) -> None:
    @app.command("accel")
    def accel(
        root: Path = _ROOT,
        backend: list[str] | None = _BACKEND,
        json_out: bool = JSON_OPTION,
    ) -> None:
        """Accelerators of every vendor: NUMA node, CPUs, nearby NICs, links,
        and utilization, memory, power and PCIe throughput now."""
        from hosttune.agent.sense.accel import render
        from hosttune.agent.sense.accel.select import AccelCollector
        from hosttune.agent.sense.accel.sysfs import scan_nics
        from hosttune.agent.sense.host import Host
        from hosttune.agent.service.config import configured_backends

        host = Host(root)
        names = list(backend) if backend else configured_backends()
        coll = AccelCollector(host, names)
        try:
            values: dict[str, float] = {}
            coll.collect(values)
            devices = coll.devices()
            processes = coll.processes()
            backends = coll.backend_names
        finally:
            coll.close()
        nics = scan_nics(host)
        if json_out:
            emit_json({
                "backends": backends,
                "devices": render.topology_json(devices, nics),
                "metrics": {k: v for k, v in sorted(values.items()) if k.startswith("accel.")},
                "processes": [{"pid": p.pid, "device": p.device, "memory_bytes": p.memory_bytes,
                               "name": p.name} for p in processes],
            })
            return
        for line in render.topology_lines(devices, nics):
            typer.echo(line)
        if devices:
            typer.echo("")
            for line in render.telemetry_lines(devices, values):
                typer.echo(line)
        if processes:
            typer.echo("")
            typer.echo("Processes on accelerators")
            for p in processes:
                mem = "-" if p.memory_bytes is None else f"{p.memory_bytes / (1 << 20):.0f} MiB"
                typer.echo(f"  pid {p.pid:<8} accel{p.device:<3} {mem:>10}  {p.name or ''}")
