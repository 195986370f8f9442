from __future__ import annotations

import pytest

from hosttune.agent.sense.sample import Sample
from hosttune.agent.sense.telemetry.catalogue import CATALOGUE, lookup
from hosttune.agent.sense.telemetry.sampler import derive_rates, rates


def _s(t: float, **values: float) -> Sample:
    return Sample(monotonic=t, wall=t, values={k.replace("__", "."): v for k, v in values.items()})


def test_counter_becomes_rate_and_gauge_is_copied() -> None:
    prev = _s(10.0, vmstat__pgfault=100.0, mem__used_ratio=0.2)
    cur = _s(12.0, vmstat__pgfault=300.0, mem__used_ratio=0.3)
    r = rates(prev, cur)
    assert r["vmstat.pgfault.rate"] == pytest.approx(100.0)
    assert r["mem.used_ratio"] == 0.3
    assert "vmstat.pgfault" not in r


def test_counter_wrap_or_reset_gives_no_rate() -> None:
    r = rates(_s(0.0, net__eth0__rx_bytes=2**64 - 10.0), _s(1.0, net__eth0__rx_bytes=5.0))
    assert "net.eth0.rx_bytes.rate" not in r
    assert all(v >= 0 for v in r.values())


def test_zero_interval_gives_no_counter_rates() -> None:
    s = _s(5.0, vmstat__pgfault=1.0, load__1=0.5)
    r = rates(s, _s(5.0, vmstat__pgfault=2.0, load__1=0.7))
    assert r == {"load.1": 0.7}


def test_metric_missing_in_one_sample() -> None:
    r = rates(_s(0.0, vmstat__pgfault=1.0), _s(1.0, disk__vda__reads=7.0))
    assert r == {}
    r = rates(_s(0.0, disk__vda__reads=1.0, vmstat__pgfault=1.0), _s(1.0, vmstat__pgfault=4.0))
    assert r == {"vmstat.pgfault.rate": 3.0}


def test_cpu_util_derived_from_time_rates() -> None:
    prev = {f"cpu.{f}": 0.0 for f in ("user", "nice", "system", "idle", "iowait", "irq",
                                        "softirq", "steal")}
    prev.update({f"cpu.1.{f}": 0.0 for f in ("user", "system", "idle", "iowait")})
    cur = dict(prev)
    cur.update({"cpu.user": 0.5, "cpu.system": 0.25, "cpu.idle": 1.0, "cpu.iowait": 0.25,
                "cpu.1.user": 0.9, "cpu.1.idle": 0.1})
    r = rates(Sample(0.0, 0.0, prev), Sample(1.0, 1.0, cur))
    assert r["cpu.util"] == pytest.approx(0.75 / 2.0)
    assert r["cpu.iowait_ratio"] == pytest.approx(0.125)
    assert r["cpu.1.util"] == pytest.approx(0.9)
    for name in r:
        assert lookup(name) is not None, name


def test_disk_util_is_capped() -> None:
    r = {"disk.vda.busy_seconds.rate": 1.02}
    derive_rates(r)
    assert r["disk.vda.util"] == 1.0


def test_lookup() -> None:
    assert lookup("cpu.12.user") is not None
    assert lookup("cpu.12.user.rate") is not None
    assert lookup("cpu.12.user.rate").unit == "s/s"  # type: ignore[union-attr]
    assert lookup("cpu.util.rate") is None  # a gauge has no rate
    assert lookup("net.eth0.100.rx_bytes") is not None  # VLAN names contain dots
    assert lookup("irq.LOC.count") is not None
    assert lookup("accel.3.util") is not None
    assert lookup("accel.x.util") is None
    assert lookup("nonsense") is None
    assert len({m.pattern for m in CATALOGUE}) == len(CATALOGUE)
