from __future__ import annotations

import gzip
import math
from pathlib import Path

import pytest

from hosttune.models.trace import TraceError, TraceWriter, read_trace, trace_row


def test_roundtrip_keeps_header_columns_and_gaps(tmp_path: Path) -> None:
    p = tmp_path / "t.csv.gz"
    with TraceWriter(p, {"label": "training", "command": "python -m x\n--y"}) as w:
        w.write(1.0, {"cpu.util": 0.5, "mem.used_ratio": 0.25})
        w.write(2.0, {"cpu.util": 0.75, "extra": 1.0})  # new name dropped, missing one empty
        w.write(3.0, {"cpu.util": math.nan, "mem.used_ratio": 0.5})
    t = read_trace(p)
    assert t.label == "training"
    assert t.header["command"] == "python -m x --y"  # one line, whitespace folded
    assert t.columns == ["cpu.util", "mem.used_ratio"]
    assert t.elapsed == [1.0, 2.0, 3.0]
    assert t.rows[0] == [0.5, 0.25]
    assert t.rows[1][0] == 0.75 and math.isnan(t.rows[1][1])
    assert math.isnan(t.rows[2][0])
    assert t.matrix().shape == (3, 2)
    with gzip.open(p, "rt") as fh:
        assert fh.readline().startswith("# hosttune-trace 1")


def test_a_killed_recording_keeps_its_flushed_rows(tmp_path: Path) -> None:
    p = tmp_path / "t.csv.gz"
    w = TraceWriter(p, {"label": "idle"}).__enter__()
    for i in range(5):
        w.write(float(i + 1), {"cpu.util": 0.1 * i})
    # no close(): the gzip stream has no end marker, as after SIGKILL
    data = p.read_bytes()
    (tmp_path / "cut.csv.gz").write_bytes(data)
    t = read_trace(tmp_path / "cut.csv.gz")
    assert len(t.rows) == 5
    w.close()


def test_bad_files_name_path_and_line(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="no such trace"):
        read_trace(tmp_path / "absent.csv.gz")
    (tmp_path / "plain.csv.gz").write_text("elapsed,a\n1,2\n")
    with pytest.raises(TraceError, match="not a gzip"):
        read_trace(tmp_path / "plain.csv.gz")
    with gzip.open(tmp_path / "nomagic.csv.gz", "wt") as fh:
        fh.write("elapsed,a\n1,2\n")
    with pytest.raises(TraceError, match=r"nomagic.csv.gz:1: not a hosttune trace"):
        read_trace(tmp_path / "nomagic.csv.gz")
    with gzip.open(tmp_path / "short.csv.gz", "wt") as fh:
        fh.write("# hosttune-trace 1\n# label=x\nelapsed,a,b\n1,2,3\n2,3\n4,5,6\n")
    with pytest.raises(TraceError, match=r"short.csv.gz:5: 2 cells, expected 3"):
        read_trace(tmp_path / "short.csv.gz")
    with gzip.open(tmp_path / "future.csv.gz", "wt") as fh:
        fh.write("# hosttune-trace 99\nelapsed,a\n")
    with pytest.raises(TraceError, match="newer"):
        read_trace(tmp_path / "future.csv.gz")


def test_trace_row_keeps_host_independent_names_only() -> None:
    row = trace_row({
        "cpu.util": 0.5,
        "cpu.0.util": 0.9, "cpu.1.util": 0.1, "cpu.0.user.rate": 0.8,
        "cpu.user": 1234.0,  # a counter's raw value: only its rate means anything
        "cpu.user.rate": 1.5,
        "disk.write_bytes.rate": 10.0, "disk.vda.write_bytes.rate": 10.0,
        "disk.vda.util": 0.3, "disk.vdb.util": 0.7,
        "net.lo.rx_packets.rate": 100.0, "net.eth0.rx_packets.rate": 5.0,
        "psi.io.some.total.rate": 0.25,
        "not.a.metric": 1.0,
        "mem.used_ratio": math.nan,
    })
    assert row == {
        "cpu.util": 0.5, "cpu.user.rate": 1.5, "disk.write_bytes.rate": 10.0,
        "psi.io.some.total.rate": 0.25,
        "cpu.<cpu>.util:max": 0.9, "cpu.<cpu>.util:min": 0.1,
        "disk.<dev>.util:max": 0.7,
        "net.<if>.rx_packets.rate:sum": 105.0,
    }


def test_preset_columns_hold_names_seen_late(tmp_path: Path) -> None:
    p = tmp_path / "t.csv.gz"
    with TraceWriter(p, {"label": "x"}, columns=["ai.cpu_util", "cpu.util"]) as w:
        w.write(1.0, {"cpu.util": 0.5})
        w.write(2.0, {"cpu.util": 0.5, "ai.cpu_util": 1.5})
    t = read_trace(p)
    assert t.columns == ["ai.cpu_util", "cpu.util"]
    assert math.isnan(t.rows[0][0]) and t.rows[1][0] == 1.5
