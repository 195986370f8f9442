"""Labelled telemetry traces: the files `hosttune record` writes and the
classifier learns from.

A trace is a gzip-compressed CSV. It opens with comment lines
(`# hosttune-trace 1`, then `# key=value`: host, kernel, hosttune version,
label, command, interval, start time, ...), then one CSV header line
(`elapsed` and the metric columns), then one row per sample. An empty cell is
a value the host did not report (no PSI, no accelerator).

Which columns: only names that mean the same on every host. At record time a
row keeps every catalogue metric without an instance part (`cpu.util`,
`disk.write_bytes.rate`, `psi.io.some.total.rate`, ...), counters only as
their `.rate` (a counter's value since boot says nothing about the
workload), and folds the per-instance metrics that matter (per CPU, per disk,
per interface, per accelerator; their names differ from host to host) into
a few aggregates named `<catalogue pattern>:<how>`, e.g. `cpu.<cpu>.util:max`
(the busiest CPU) or `net.<if>.rx_packets.rate:sum` (every interface,
loopback included, unlike the catalogue's own `net.rx_packets` sum). Features
(`hosttune.models.features`) are computed from these columns, normalised by
the CPU count and memory size the trace also holds.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.telemetry.catalogue import CATALOGUE, RATE_SUFFIX, lookup

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

FORMAT_VERSION = 1
_MAGIC = "# hosttune-trace"

# per-instance pattern -> the aggregates of it a trace keeps
AGGREGATES: dict[str, tuple[str, ...]] = {
    "cpu.<cpu>.util": ("max", "min"),
    "disk.<dev>.util": ("max",),
    "disk.<dev>.weighted_seconds.rate": ("max",),
    "net.<if>.rx_bytes.rate": ("sum",),
    "net.<if>.tx_bytes.rate": ("sum",),
    "net.<if>.rx_packets.rate": ("sum",),
    "net.<if>.tx_packets.rate": ("sum",),
    "accel.<i>.util": ("mean", "max"),
    "accel.<i>.mem_util": ("mean",),
    "accel.<i>.mem_used_bytes": ("sum",),
    "accel.<i>.mem_total_bytes": ("sum",),
    "accel.<i>.power_watts": ("sum",),
    "accel.<i>.power_limit_watts": ("sum",),
    "accel.<i>.pcie_rx_bytes": ("sum",),
    "accel.<i>.pcie_tx_bytes": ("sum",),
}


class TraceError(HosttuneError):
    """A trace file is missing, unreadable or not a hosttune trace."""

    def __init__(self, path: str, message: str, *, line: int | None = None) -> None:
        where = f"{path}:{line}" if line is not None else path
        super().__init__(message, subject=where)
        self.path = path
        self.line = line


def trace_columns() -> list[str]:
    """Every column a trace row can hold: the catalogue's names without an
    instance part (counters as `.rate`) and the aggregates. A trace's header
    lists them all, so that a metric first seen late in a recording (the
    AI-process CPU share needs two process scans) still has its column."""
    names = {f"{pattern}:{how}" for pattern, hows in AGGREGATES.items() for how in hows}
    for metric in CATALOGUE:
        if "<" in metric.pattern:
            continue
        names.add(metric.pattern + RATE_SUFFIX if metric.kind == "counter" else metric.pattern)
    return sorted(names)


def trace_row(values: Mapping[str, float]) -> dict[str, float]:
    """The host-independent columns of one sample: `values` holds a Sample's
    values merged with the rates against the previous Sample."""
    row: dict[str, float] = {}
    groups: dict[str, list[float]] = {}
    for name, value in values.items():
        metric = lookup(name)
        if metric is None or not _finite(value):
            continue
        if "<" in metric.pattern:
            if metric.pattern in AGGREGATES:
                groups.setdefault(metric.pattern, []).append(float(value))
            continue
        if metric.kind == "counter":
            continue  # kept as its `.rate`
        row[name] = float(value)
    for pattern, found in groups.items():
        for how in AGGREGATES[pattern]:
            row[f"{pattern}:{how}"] = _aggregate(how, found)
    return row


def _aggregate(how: str, values: list[float]) -> float:
    if how == "max":
        return max(values)
    if how == "min":
        return min(values)
    if how == "sum":
        return sum(values)
    if how == "mean":
        return sum(values) / len(values)
    raise ValueError(f"unknown aggregate {how!r}")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


_HEADER_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


def _clean(value: str) -> str:
    return " ".join(str(value).split())


class TraceWriter:
    """Writes a trace row by row, flushing each one, so a recording cut short
    keeps what it saw. Columns are `columns` (if given) plus the first row's
    names; a later row's other names are dropped, its missing ones left
    empty."""

    def __init__(self, path: str | Path, header: Mapping[str, str],
                 columns: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        for key in header:
            if not _HEADER_KEY.match(key):
                raise ValueError(f"bad trace header key {key!r}")
        self._header = {k: _clean(v) for k, v in header.items()}
        self._raw: IO[bytes] | None = None
        self._gz: gzip.GzipFile | None = None
        self._text: io.TextIOWrapper | None = None
        self._writer: Any = None  # csv.writer has no public type
        self._preset = list(columns) if columns is not None else None
        self.columns: list[str] = []
        self.rows = 0

    def __enter__(self) -> TraceWriter:
        try:
            self._raw = open(self.path, "wb")
        except OSError as exc:
            raise TraceError(str(self.path), f"cannot write trace: {exc.strerror}") from exc
        self._gz = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0)
        self._text = io.TextIOWrapper(self._gz, encoding="utf-8", newline="")
        self._text.write(f"{_MAGIC} {FORMAT_VERSION}\n")
        for key, value in self._header.items():
            self._text.write(f"# {key}={value}\n")
        self._writer = csv.writer(self._text, lineterminator="\n")
        return self

    def write(self, elapsed: float, row: Mapping[str, float]) -> None:
        assert self._writer is not None and self._text is not None, "use as a context manager"
        if not self.columns:
            self.columns = sorted(set(row) | set(self._preset or ()))
            self._writer.writerow(["elapsed", *self.columns])
        cells = [f"{elapsed:.3f}"]
        for name in self.columns:
            v = row.get(name)
            cells.append("" if v is None or not math.isfinite(v) else f"{float(v):.7g}")
        self._writer.writerow(cells)
        self.rows += 1
        self._text.flush()
        assert self._gz is not None
        self._gz.flush()

    def close(self) -> None:
        for closer in (self._text, self._gz, self._raw):
            if closer is not None:
                closer.close()
        self._text = self._gz = self._raw = None

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Trace:
    """A trace read back: header, columns, and per row its elapsed seconds
    and values (NaN where the host reported nothing)."""

    path: str
    header: dict[str, str]
    columns: list[str]
    elapsed: list[float] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.header.get("label", "")

    def matrix(self) -> npt.NDArray[np.float64]:
        import numpy as np  # numpy: 60 ms, 17 MB; the daemon writes trace rows without it

        return np.asarray(self.rows, dtype=np.float64).reshape(len(self.rows), len(self.columns))


def read_trace(path: str | Path) -> Trace:
    """Reads a trace, including one whose recording was killed (its gzip
    stream has no end marker; every row flushed before that is kept)."""
    p = str(path)
    try:
        data = Path(p).read_bytes()
    except FileNotFoundError as exc:
        raise TraceError(p, "no such trace file") from exc
    except OSError as exc:
        raise TraceError(p, f"cannot read trace: {exc.strerror}") from exc
    try:
        text = zlib.decompressobj(wbits=31).decompress(data).decode("utf-8")
    except (zlib.error, UnicodeDecodeError) as exc:
        raise TraceError(p, f"not a gzip-compressed trace: {exc}") from exc
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()  # a row cut short by a killed recording
    return _parse(p, lines)


def _parse(path: str, lines: Iterable[str]) -> Trace:
    it: Iterator[str] = iter(lines)
    first = next(it, "")
    if not first.startswith(_MAGIC):
        raise TraceError(path, "not a hosttune trace (no '# hosttune-trace' line)", line=1)
    try:
        version = int(first[len(_MAGIC):].strip())
    except ValueError:
        raise TraceError(path, f"bad trace format line {first.strip()!r}", line=1) from None
    if version > FORMAT_VERSION:
        raise TraceError(
            path, f"trace format {version} is newer than this hosttune reads ({FORMAT_VERSION})",
            line=1,
        )
    header: dict[str, str] = {}
    lineno = 1
    body: list[str] = []
    for raw in it:
        lineno += 1
        if raw.startswith("#"):
            key, sep, value = raw[1:].strip().partition("=")
            if not sep:
                raise TraceError(path, f"header line without '=': {raw.strip()!r}", line=lineno)
            header[key.strip()] = value.strip()
            continue
        body.append(raw)
        break
    body.extend(it)
    reader = csv.reader(body)
    names = next(reader, None)
    if not names or names[0] != "elapsed":
        raise TraceError(path, "no column line starting with 'elapsed'", line=lineno)
    trace = Trace(path=path, header=header, columns=names[1:])
    width = len(names)
    nan = float("nan")
    for i, cells in enumerate(reader, start=lineno + 1):
        if not cells:
            continue
        if len(cells) != width:
            raise TraceError(path, f"{len(cells)} cells, expected {width}", line=i)
        try:
            trace.elapsed.append(float(cells[0]))
            trace.rows.append([float(c) if c else nan for c in cells[1:]])
        except ValueError as exc:
            raise TraceError(path, f"bad number: {exc}", line=i) from None
    return trace
