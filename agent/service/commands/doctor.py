"""`hosttune doctor`: checks of the accelerator data paths (ACS, IOMMU, PCIe
link training, payload and read request sizes, NIC locality), each finding
with the exact fix, its source and what the fix takes."""

from __future__ import annotations

from pathlib import Path

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

NEEDS_TEXT = {"runtime": "now (lost at reboot)", "reboot": "a reboot",
              "bios": "BIOS setup", "hardware": "moving hardware (power off)"}


def register(app: typer.Typer) -> None:
    add_command(app, "doctor", doctor_command)


def doctor_command(
    json_out: bool = JSON_OPTION,
    root: Path | None = ROOT_OPTION,
) -> None:
    """Check the accelerator data paths and say what to fix: ACS, IOMMU mode,
    PCIe links, payload sizes, NIC locality.

    Reads sysfs and each device's PCI config space (all of it needs root; as
    another user the checks that need the extended config space see less and
    say nothing). Advice only: nothing is changed. Each finding names the
    devices, why it matters, the exact fix, the document it comes from and
    whether the fix works at once, needs a reboot, the BIOS setup or moving a
    card. Exits 0 whether or not it found something."""
    # sense.pci's scan and the checks: not for --help
    from hosttune.agent.sense.bootparams import kernel_params
    from hosttune.agent.sense.pci import read_iommu, read_path_configs, scan
    from hosttune.models.datapath import PathFacts, check_all

    host = Host(host_root(root))
    everything = scan(host, roles=("accelerator", "nic", "nvme", "bridge", "other"))
    endpoints = [d for d in everything if d.role in ("accelerator", "nic", "nvme")]
    configs = read_path_configs(host, endpoints)
    iommu = read_iommu(host, tuple(d.address for d in endpoints), kernel_params(host))
    facts = PathFacts(devices=tuple(everything), configs=configs, iommu=iommu)
    findings = check_all(facts)
    if json_out:
        emit_json({"findings": [f.to_dict() for f in findings],
                   "pcie": {a: c.to_dict() for a, c in sorted(configs.items())},
                   "iommu": iommu.to_dict(),
                   "checked": {"accelerators": sum(d.role == "accelerator" for d in endpoints),
                               "nics": sum(d.role == "nic" for d in endpoints),
                               "nvme": sum(d.role == "nvme" for d in endpoints)}})
        return
    lines = [f"checked {len(endpoints)} device(s) "
             f"({sum(d.role == 'accelerator' for d in endpoints)} accelerator(s)), "
             f"{len(configs)} PCIe function(s) with config space read"]
    if not findings:
        lines.append("no data-path problem found")
    for i, finding in enumerate(findings, 1):
        lines += ["", f"{i}. [{finding.check}] {finding.what}",
                  f"   why:    {finding.why}",
                  f"   fix:    {finding.fix}",
                  f"   needs:  {NEEDS_TEXT.get(finding.needs, finding.needs)}",
                  f"   source: {finding.source}"]
    echo_lines(lines)
