"""`hosttune doctor` on host trees built to mirror real servers
(tests/datapath_hosts.py says where each comes from): the config space
parser against hand-assembled registers, then each check finding exactly
the problem planted and nothing on the clean host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from datapath_hosts import (
    ACS_LINUX_IOMMU,
    Fn,
    dgx_sockets,
    rccl_547,
    write_dgx,
)
from typer.testing import CliRunner

from hosttune.agent.sense.host import Host
from hosttune.agent.sense.pci import parse_pcie_config, read_iommu, read_path_configs, scan
from hosttune.agent.service.cli import build_app
from hosttune.models.datapath import PathFacts, check_all


def _doctor(root: Path) -> dict[str, Any]:
    res = CliRunner().invoke(build_app(), ["doctor", "--json", "--root", str(root)])
    assert res.exit_code == 0, res.output
    data: dict[str, Any] = json.loads(res.output)
    return data


def _facts(root: Path) -> PathFacts:
    host = Host(root)
    every = scan(host, roles=("accelerator", "nic", "nvme", "bridge", "other"))
    ends = [d for d in every if d.role in ("accelerator", "nic", "nvme")]
    return PathFacts(tuple(every), read_path_configs(host, ends),
                     read_iommu(host, tuple(d.address for d in ends), []))


def _checks(data: dict[str, Any]) -> list[str]:
    return sorted(f["check"] for f in data["findings"])


# -- config space ---------------------------------------------------------------------


def test_config_space_fields_decoded() -> None:
    fn = Fn("0000:44:01.0", 0x11F8, 0x4000, 0x060400, "downstream-port", 1, (16.0, 16),
            status=(8.0, 4), mps_supported=512, mps=256, mrrs=1024, acs_cap=0x5F,
            acs_ctrl=ACS_LINUX_IOMMU)
    cfg = parse_pcie_config(fn.address, fn.config())
    assert cfg is not None
    assert (cfg.port_type, cfg.mps_supported, cfg.mps, cfg.mrrs) == (
        "downstream-port", 512, 256, 1024)
    assert (cfg.link_cap_speed, cfg.link_cap_width, cfg.link_speed, cfg.link_width) == (
        16.0, 16, 8.0, 4)
    assert (cfg.acs_offset, cfg.acs_cap, cfg.acs_ctrl) == (0x100, 0x5F, 0x1D)
    assert cfg.to_dict()["acs_ctrl"] == "SrcValid ReqRedir CmpltRedir UpstreamFwd"


def test_config_space_read_without_root_is_unknown_not_guessed() -> None:
    fn = Fn("0000:45:00.0", 0x15B3, 0x101B, 0x020700, "endpoint", 1, (16.0, 16))
    data = fn.config()
    # a reader without CAP_SYS_ADMIN gets the first 64 bytes only
    assert parse_pcie_config(fn.address, data[:64]) is None
    # 256 bytes: the PCIe capability, but no extended capabilities (no ACS)
    short = parse_pcie_config(fn.address, data[:256])
    assert short is not None and short.acs_ctrl is None and short.mps == 256


# -- the real server shapes -----------------------------------------------------------


def test_rccl_547_acs_on_every_switch_port_between_gpus_and_nic(tmp_path: Path) -> None:
    data = _doctor(rccl_547(tmp_path))
    assert _checks(data) == ["acs", "iommu"]
    acs = next(f for f in data["findings"] if f["check"] == "acs")
    # the downstream ports of the PMC switch and of each MI100's own switch;
    # not the root port (both ends share it: traffic passes it anyway) and
    # not the NVMe drives' ports (no accelerator behind them)
    assert sorted(acs["details"]["ports"]) == [
        "0000:44:00.0", "0000:44:01.0", "0000:44:02.0", "0000:47:00.0", "0000:49:00.0",
        "0000:4d:00.0", "0000:4f:00.0"]
    assert set(acs["details"]["ports"].values()) == {"0x001d"}
    assert "setpci -s $p ECAP_ACS+0x6.w=0000" in acs["fix"]
    assert acs["needs"] == "runtime" and "docs.nvidia.com" in acs["source"]
    iommu = next(f for f in data["findings"] if f["check"] == "iommu")
    assert iommu["devices"] == ["0000:45:00.0", "0000:4a:00.0", "0000:50:00.0"]
    assert "iommu=pt" in iommu["fix"] and iommu["needs"] == "reboot"


def test_rccl_547_with_acs_cleared_leaves_only_the_iommu(tmp_path: Path) -> None:
    # the same server after `setpci ... ECAP_ACS+0x6.w=0000` on the switch ports
    data = _doctor(rccl_547(tmp_path, acs_ctrl=0))
    assert _checks(data) == ["iommu"]


def test_dgx_h100_as_shipped_is_clean(tmp_path: Path) -> None:
    data = _doctor(write_dgx(tmp_path, dgx_sockets()))
    assert data["findings"] == []
    assert data["checked"] == {"accelerators": 4, "nics": 2, "nvme": 0}
    assert data["iommu"]["params"] == ["intel_iommu=on", "iommu=pt"]


def test_acs_left_on_in_one_switch(tmp_path: Path) -> None:
    sockets = dgx_sockets()
    for dsp in sockets[1].switch_usp.children:
        dsp.acs_ctrl = ACS_LINUX_IOMMU
    data = _doctor(write_dgx(tmp_path, sockets))
    assert _checks(data) == ["acs"]
    assert sorted(data["findings"][0]["details"]["ports"]) == [
        d.address for d in sockets[1].switch_usp.children]
    # socket 0's GPUs and NIC are not named: their switch forwards peer traffic
    assert not set(data["findings"][0]["devices"]) & {g.address for g in sockets[0].gpus}


def test_translated_iommu_on_a_dgx(tmp_path: Path) -> None:
    sockets = dgx_sockets()
    sockets[0].gpus[1].iommu_type = "DMA-FQ"
    data = _doctor(write_dgx(tmp_path, sockets))
    assert _checks(data) == ["iommu"]
    assert data["findings"][0]["devices"] == [sockets[0].gpus[1].address]
    assert "DMA-FQ" in data["findings"][0]["what"]


@pytest.mark.parametrize(("status", "needs", "words"), [
    ((32.0, 8), "hardware", "x8 of x16"),
    ((2.5, 16), "bios", "2.5 GT/s of 32"),
])
def test_link_below_capability(tmp_path: Path, status: tuple[float, int], needs: str,
                               words: str) -> None:
    sockets = dgx_sockets()
    sockets[1].gpus[0].status = status
    data = _doctor(write_dgx(tmp_path, sockets))
    assert _checks(data) == ["link"]
    finding = data["findings"][0]
    assert finding["devices"] == [sockets[1].gpus[0].address]
    assert words in finding["what"] and finding["needs"] == needs
    if needs == "bios":  # speed only: GPUs lower it when idle; say so
        assert "idle" in finding["why"]


def test_link_limited_by_the_slot_is_not_below_capability(tmp_path: Path) -> None:
    # a Gen5 NIC in a Gen4 slot runs at 16 GT/s: all that both ends can do
    sockets = dgx_sockets()
    dsp = sockets[0].switch_usp.children[2]
    dsp.link = (16.0, 16)
    sockets[0].nic.status = (16.0, 16)
    assert _doctor(write_dgx(tmp_path, sockets))["findings"] == []


def test_payload_size_mismatch_along_the_path(tmp_path: Path) -> None:
    sockets = dgx_sockets()
    sockets[0].nic.mps = 128
    data = _doctor(write_dgx(tmp_path, sockets))
    assert _checks(data) == ["mps"]
    finding = data["findings"][0]
    assert finding["devices"] == [sockets[0].nic.address]
    assert finding["details"]["mps"][sockets[0].nic.address] == 128
    assert finding["details"]["mps"][sockets[0].rp.address] == 256
    assert "pci=pcie_bus_safe" in finding["fix"] and finding["needs"] == "reboot"


def test_payload_size_below_what_the_path_supports(tmp_path: Path) -> None:
    sockets = dgx_sockets()

    def lower(fn: Fn) -> None:
        fn.mps = 128
        for child in fn.children:
            lower(child)
    lower(sockets[1].rp)
    data = _doctor(write_dgx(tmp_path, sockets))
    assert _checks(data) == ["mps", "mps", "mps"]  # two GPUs and the NIC of socket 1
    assert all("pci=pcie_bus_perf" in f["fix"] for f in data["findings"])


def test_read_request_too_small_gets_the_exact_register_value(tmp_path: Path) -> None:
    sockets = dgx_sockets()
    sockets[1].nic.mrrs = 128
    data = _doctor(write_dgx(tmp_path, sockets))
    assert _checks(data) == ["mrrs"]
    finding = data["findings"][0]
    # DevCtl of the fixture: MPS 256 (1 << 5) | MRRS 128 (0 << 12) | 0x10 -> MRRS 512 (2 << 12)
    assert finding["details"] == {"mrrs": 128, "devctl": "0x0030", "new_devctl": "0x2030"}
    assert f"setpci -s {sockets[1].nic.address} CAP_EXP+0x8.w=0x2030" in finding["fix"]


def test_accelerators_without_a_nic_on_their_node(tmp_path: Path) -> None:
    sockets = dgx_sockets()
    sockets[1].nic.node = 0  # both NICs on socket 0 (a single-socket NIC layout)
    data = _doctor(write_dgx(tmp_path, sockets))
    assert _checks(data) == ["nic-node", "nic-node"]
    assert sorted(d for f in data["findings"] for d in f["devices"]) == sorted(
        g.address for g in sockets[1].gpus)
    assert all(f["needs"] == "hardware" and "NCCL_NET_GDR_LEVEL" in f["why"]
               for f in data["findings"])


def test_checks_are_pure_functions_of_the_facts(tmp_path: Path) -> None:
    facts = _facts(rccl_547(tmp_path))
    assert [f.to_dict() for f in check_all(facts)] == [f.to_dict() for f in check_all(facts)]
    assert {f.check for f in check_all(facts)} == {"acs", "iommu"}


def test_text_output_names_fix_source_and_what_it_takes(tmp_path: Path) -> None:
    res = CliRunner().invoke(build_app(), ["doctor", "--root", str(rccl_547(tmp_path))])
    assert res.exit_code == 0, res.output
    assert "[acs]" in res.output and "needs:  now (lost at reboot)" in res.output
    assert "needs:  a reboot" in res.output and "source: https://" in res.output
