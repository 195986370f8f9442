"""`hosttune topology`: which accelerators, NICs and NVMe drives hang off
which NUMA node, like `nvidia-smi topo -m` but for any host."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from hosttune.agent.sense.host import Host
from hosttune.agent.service.commands.options import (
    JSON_OPTION,
    ROOT_OPTION,
    add_command,
    echo_lines,
    emit_json,
    host_root,
)

if TYPE_CHECKING:
    from hosttune.agent.sense.accel.base import AccelDevice

NO_ACCEL_OPTION = typer.Option(
    False, "--no-accel", help="Leave out what accelerator backends (NVML, amdsmi, npu-smi) say.",
)


def register(app: typer.Typer) -> None:
    add_command(app, "topology", topology_command)


def topology_command(
    json_out: bool = JSON_OPTION,
    root: Path | None = ROOT_OPTION,
    no_accel: bool = NO_ACCEL_OPTION,
) -> None:
    """Show which accelerators, NICs and NVMe drives hang off which NUMA node,
    like `nvidia-smi topo -m` but for any host.

    Lists NUMA nodes with their CPUs, memory and the devices attached to each,
    with IRQ counts and PCIe links; then each accelerator with its nearby NICs
    and its links to the others (NVLink, xGMI, HCCS) as its vendor backend
    reports them."""
    # topology discovery and the renderers: 100 ms, not for --help
    from hosttune.agent.sense.topology import discover
    from hosttune.agent.service.render import accel as accel_render
    from hosttune.agent.service.render.topology import topology_lines

    host = Host(host_root(root))
    topo = discover(host)
    accel = None if no_accel else _accelerators(host)
    if json_out:
        data = topo.to_dict()
        if accel is not None:
            data["accelerators"] = accel_render.topology_json(accel, topo.nics())
        emit_json(data)
        return
    echo_lines(topology_lines(topo))
    if accel:
        typer.echo("")
        echo_lines(accel_render.topology_lines(accel, topo.nics()))


def _accelerators(host: Host) -> list[AccelDevice]:
    """Each accelerator as the best backend describes it (hosttune.agent.sense.accel);
    vendor calls are bounded in time and fall back to sysfs."""
    # sense.accel and config: 80 ms, not for --help
    from hosttune.agent.sense.accel.select import AccelCollector
    from hosttune.agent.service.config import configured_backends

    coll = AccelCollector(host, configured_backends())
    try:
        return coll.devices()
    finally:
        coll.close()
