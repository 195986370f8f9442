"""Huawei Ascend NPUs through the `npu-smi` command.

`npu-smi info` prints one table: per chip, NPU id, name, health, power (W),
temperature (C), AI core use (%), memory and HBM use (MB) and the PCI bus id,
then the processes holding each chip's memory. Atlas A2 (910B) hosts list one
chip per NPU; A3 (Ascend910 "910_93") hosts two chips per NPU with a Phy-ID
column, and the second chip's power is "-". `npu-smi info -t usages -i N`
adds HBM bandwidth use per chip; `npu-smi info -t topo` gives the chip-to-chip
paths (HCCS, PIX, PHB, SYS, ...) and each NPU's CPU affinity. The shapes are
those recorded in tests/fixtures/accel/ascend/ (see its README for sources).

Commands run through `Host.run`, so a fixture tree replays recorded output.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from hosttune.agent.sense.accel.base import (
    AccelDevice,
    AccelLink,
    AccelProcess,
    BackendUnavailable,
    ProcessListing,
    metric_name,
    normalize_pci_address,
)
from hosttune.agent.sense.cpulist import parse_cpulist
from hosttune.agent.sense.errors import HostCommandError, ParseError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.vendors import for_backend

log = logging.getLogger("hosttune.accel")

MB = 1 << 20
_BUS_RE = re.compile(r"^[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7]$")
_HEALTH = {"OK", "Warning", "Alarm", "Critical", "Unknown", "NA"}
_PAIR_RE = re.compile(r"(\d+)\s*/\s*(\d+)")
_VERSION_RE = re.compile(r"npu-smi\s+(\S+)\s+Version:\s*(\S+)")
_TOPO_KINDS = {"HCCS": "hccs", "SIO": "sio", "PIX": "pcie-switch", "PXB": "pcie-switches",
               "PHB": "pcie-hostbridge", "SYS": "system"}


@dataclass
class NpuChip:
    """One row pair of `npu-smi info`: one chip, one PCI function."""

    npu: int
    chip: int
    phy_id: int | None
    name: str
    health: str
    bus_id: str | None
    power_w: float | None
    temp_c: float | None
    aicore_pct: float | None
    hbm_used_mb: int | None
    hbm_total_mb: int | None
    memory_used_mb: int | None = None
    memory_total_mb: int | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (self.npu, self.chip)


@dataclass(frozen=True)
class NpuProcess:
    npu: int
    chip: int
    pid: int
    name: str
    memory_mb: int | None


@dataclass
class NpuSmiInfo:
    version: str | None = None
    chips: list[NpuChip] = field(default_factory=list)
    processes: list[NpuProcess] = field(default_factory=list)


def _cells(line: str) -> list[str] | None:
    line = line.strip()
    if not line.startswith("|") or set(line) <= set("|+-= "):
        return None
    return [c.strip() for c in line.strip("|").split("|")]


def _float(token: str) -> float | None:
    try:
        return float(token)
    except ValueError:
        return None  # "-", "NA"


def parse_npu_smi_info(text: str, *, source: str = "npu-smi info") -> NpuSmiInfo:
    """Parse the table `npu-smi info` prints. Rows it cannot read are skipped;
    a table with no chip at all is a ParseError naming `source`."""
    info = NpuSmiInfo()
    pending: tuple[int, str, str, list[str]] | None = None
    in_processes = False
    for line in text.splitlines():
        version = _VERSION_RE.search(line)
        if version:
            info.version = version.group(2)
            continue
        cells = _cells(line)
        if cells is None:
            continue
        if any(c.startswith("Process id") for c in cells):
            in_processes = True
            continue
        if in_processes:
            proc = _parse_process_row(cells)
            if proc is not None:
                info.processes.append(proc)
            continue
        first = cells[0].split()
        if len(cells) >= 3 and len(first) >= 2 and first[0].isdigit() \
                and cells[1] in _HEALTH and not first[1].isdigit():
            # first row of a chip: "<npu> <name>", health, "<power> <temp> <hugepages>"
            pending = (int(first[0]), " ".join(first[1:]), cells[1], cells[2].split())
            continue
        if pending is not None and len(cells) >= 3 and first and first[0].isdigit() \
                and (_BUS_RE.match(cells[1]) or cells[1] == "NA"):
            npu, name, health, top = pending
            pending = None
            pairs = [(int(a), int(b)) for a, b in _PAIR_RE.findall(cells[2])]
            bottom = cells[2].split()
            # a "Memory-Usage" pair then an "HBM-Usage" pair; parts without HBM show one pair
            hbm = pairs[-1] if len(pairs) >= 2 else None
            memory = pairs[0] if pairs else None
            info.chips.append(NpuChip(
                npu=npu, chip=int(first[0]),
                phy_id=int(first[1]) if len(first) > 1 and first[1].isdigit() else None,
                name=name, health=health,
                bus_id=normalize_pci_address(cells[1]) if cells[1] != "NA" else None,
                power_w=_float(top[0]) if top else None,
                temp_c=_float(top[1]) if len(top) > 1 else None,
                aicore_pct=_float(bottom[0]) if bottom else None,
                hbm_used_mb=hbm[0] if hbm else None, hbm_total_mb=hbm[1] if hbm else None,
                memory_used_mb=memory[0] if memory and hbm else None,
                memory_total_mb=memory[1] if memory and hbm else None,
            ))
    if not info.chips:
        raise ParseError(source, "no NPU rows in the npu-smi table")
    return info


def _parse_process_row(cells: list[str]) -> NpuProcess | None:
    ids = cells[0].split()
    if len(cells) < 4 or not ids or not ids[0].isdigit() or not cells[1].isdigit():
        return None  # "No running processes found in NPU 1", separators
    memory = cells[3].split()
    return NpuProcess(
        npu=int(ids[0]), chip=int(ids[1]) if len(ids) > 1 and ids[1].isdigit() else 0,
        pid=int(cells[1]), name=cells[2],
        memory_mb=int(memory[0]) if memory and memory[0].isdigit() else None,
    )


def parse_usages(text: str) -> dict[int, dict[str, float]]:
    """`npu-smi info -t usages -i N`: "Key : value" lines, each chip's block
    closed by its "Chip ID : n" line. Returns chip id -> key -> value."""
    out: dict[int, dict[str, float]] = {}
    block: dict[str, float] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "Chip ID":
            if value.isdigit():
                out[int(value)] = block
            block = {}
            continue
        number = _float(value)
        if number is not None and key not in ("NPU ID", "Chip Count"):
            block[key] = number
    if block and not out:
        # a single-chip answer printed without a Chip ID line
        out[0] = block
    return out


@dataclass(frozen=True)
class TopoEntry:
    links: dict[int, str]  # peer NPU label number -> path code (HCCS, PIX, ...)
    cpus: tuple[int, ...]


def parse_topo(text: str, *, source: str = "npu-smi info -t topo") -> dict[int, TopoEntry]:
    """The `npu-smi info -t topo` matrix: header "NPU0 NPU1 ... CPU Affinity",
    one row per NPU with X on the diagonal, then a legend."""
    header: list[int] | None = None
    out: dict[int, TopoEntry] = {}
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if header is None:
            if words[0].startswith("NPU") and "Affinity" in words:
                header = [int(w[3:]) for w in words if w.startswith("NPU") and w[3:].isdigit()]
            continue
        if not (words[0].startswith("NPU") and words[0][3:].isdigit()):
            if out:
                break  # the legend
            continue
        me = int(words[0][3:])
        codes = words[1:1 + len(header)]
        rest = words[1 + len(header):]
        try:
            cpus = parse_cpulist(rest[0], source=source) if rest else ()
        except ParseError:
            cpus = ()
        out[me] = TopoEntry(
            {peer: code for peer, code in zip(header, codes, strict=False) if code != "X"}, cpus)
    return out


class AscendBackend:
    name = "ascend"
    vendor = for_backend(name)

    def __init__(self, host: Host, *, timeout: float = 10.0, usages: bool = True) -> None:
        """`usages`: also run `npu-smi info -t usages -i N` for each NPU every
        pass (HBM bandwidth use); one more process per NPU per pass."""
        self.host = host
        self.timeout = timeout
        self.usages = usages
        info = self._info()
        self.version = info.version
        self._chips = {c.key: c for c in info.chips}
        self._index = {c.key: n for n, c in enumerate(info.chips)}
        self._last = info
        self._topo = self._read_topo()
        # whether `_last` came from a sample not yet used for a process listing
        self._fresh = True

    def _run(self, *args: str) -> str:
        argv = ["npu-smi", "info", *args]
        try:
            result = self.host.run(argv, self.timeout)
        except HostCommandError as exc:
            raise BackendUnavailable("ascend", str(exc)) from None
        if result.returncode != 0:
            said = (result.stderr or result.stdout).strip().splitlines()
            raise BackendUnavailable(
                "ascend", f"{' '.join(argv)} exited {result.returncode}"
                + (f": {said[0]}" if said else ""))
        return result.stdout

    def _info(self) -> NpuSmiInfo:
        try:
            return parse_npu_smi_info(self._run())
        except ParseError as exc:
            raise BackendUnavailable("ascend", str(exc)) from None

    def _read_topo(self) -> dict[int, TopoEntry]:
        try:
            return parse_topo(self._run("-t", "topo"))
        except BackendUnavailable:
            return {}  # older npu-smi without -t topo: no links, sysfs gives locality

    def _label(self, chip: NpuChip) -> int:
        """The number npu-smi uses for a chip in topo output and as device id:
        the Phy-ID where there is one (A3), else the NPU id."""
        return chip.phy_id if chip.phy_id is not None else chip.npu

    def reindex(self, by_address: Mapping[str, int]) -> None:
        for key, chip in self._chips.items():
            if chip.bus_id is not None and chip.bus_id in by_address:
                self._index[key] = by_address[chip.bus_id]

    def devices(self) -> list[AccelDevice]:
        by_label = {self._label(c): self._index[k] for k, c in self._chips.items()}
        out = []
        for key, chip in self._chips.items():
            topo = self._topo.get(self._label(chip))
            links: tuple[AccelLink, ...] = ()
            if topo is not None:
                links = tuple(AccelLink(by_label[peer], _TOPO_KINDS.get(code, code.lower()), code)
                              for peer, code in sorted(topo.links.items()) if peer in by_label)
            facts = {"npu_id": str(chip.npu), "chip_id": str(chip.chip), "health": chip.health}
            if self.version:
                facts["npu_smi_version"] = self.version
            out.append(AccelDevice(
                index=self._index[key], vendor=self.vendor.name, backend=self.name,
                pci_address=chip.bus_id, model=chip.name, vendor_index=self._label(chip),
                local_cpus=topo.cpus if topo is not None else (),
                memory_total_bytes=chip.hbm_total_mb * MB if chip.hbm_total_mb else None,
                links=links, facts=facts,
            ))
        return out

    def sample(self, values: dict[str, float]) -> None:
        info = self._info()
        self._last = info
        seen = {c.key: c for c in info.chips}
        for key, old in self._chips.items():
            i = self._index[key]
            chip = seen.get(key)
            if chip is None or chip.bus_id != old.bus_id:
                values[metric_name(i, "lost")] = 1.0
                continue
            values[metric_name(i, "lost")] = 0.0
            if chip.aicore_pct is not None:
                values[metric_name(i, "util")] = chip.aicore_pct / 100.0
            if chip.hbm_used_mb is not None:
                values[metric_name(i, "mem_used_bytes")] = float(chip.hbm_used_mb * MB)
            if chip.hbm_total_mb is not None:
                values[metric_name(i, "mem_total_bytes")] = float(chip.hbm_total_mb * MB)
            if chip.power_w is not None:
                values[metric_name(i, "power_watts")] = chip.power_w
            if chip.temp_c is not None:
                values[metric_name(i, "temp_c")] = chip.temp_c
            held = [p for p in info.processes if (p.npu, p.chip) == key]
            values[metric_name(i, "processes")] = float(len(held))
        if self.usages:
            for npu in sorted({c.npu for c in self._chips.values()}):
                try:
                    usage = parse_usages(self._run("-t", "usages", "-i", str(npu)))
                except BackendUnavailable:
                    continue  # usages is extra detail; the table above stands
                for chip_id, fields in usage.items():
                    key = (npu, chip_id)
                    if key not in self._index or key not in seen:
                        continue
                    i = self._index[key]
                    bw = fields.get("HBM Bandwidth Usage Rate(%)")
                    if bw is not None:
                        values[metric_name(i, "mem_util")] = bw / 100.0
        self._fresh = True

    def processes(self) -> ProcessListing:
        """The process table of `npu-smi info` (NPU id, chip id, pid, name,
        memory in MB; no per-process AI core share: npu-smi has none). The
        table of the last sample serves if no listing used it yet, so a
        listing once per role window with a sample every pass runs no extra
        npu-smi; otherwise npu-smi runs now."""
        if self._fresh:
            info = self._last
        else:
            try:
                info = self._info()
            except BackendUnavailable as exc:
                return ProcessListing((), {"ascend": exc.reason})
            self._last = info
        self._fresh = False
        return ProcessListing(tuple(
            AccelProcess(p.pid, self._index[(p.npu, p.chip)],
                         p.memory_mb * MB if p.memory_mb is not None else None, p.name or None,
                         pci_address=self._chips[(p.npu, p.chip)].bus_id, backend=self.name)
            for p in info.processes if (p.npu, p.chip) in self._index), {})

    def close(self) -> None:
        pass
