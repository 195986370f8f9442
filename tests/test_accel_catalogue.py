"""Every name an accelerator backend may write is in the telemetry catalogue,
with the same unit, and AccelCollector is a telemetry Collector."""

from __future__ import annotations

from pathlib import Path

from hosttune.agent.sense.accel.base import METRICS, metric_name
from hosttune.agent.sense.accel.select import AccelCollector
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.catalogue import lookup
from hosttune.agent.sense.telemetry.collector import Collector
from hosttune.agent.sense.telemetry.sampler import Sampler

HOSTS = Path(__file__).parent / "fixtures" / "hosts"


def test_backend_metrics_are_catalogued() -> None:
    for suffix, (unit, _) in METRICS.items():
        metric = lookup(metric_name(3, suffix))
        assert metric is not None, suffix
        assert metric.unit == unit, suffix
    assert lookup("accel.count") is not None


def test_collector_in_the_sampler() -> None:
    host = Host(HOSTS / "mixed")
    coll = AccelCollector(host)
    assert isinstance(coll, Collector)
    sampler = Sampler(host, [coll], process_every=0)
    sample = sampler.sample()
    sampler.close()
    accel = {k: v for k, v in sample.values.items() if k.startswith("accel.")}
    assert accel["accel.3.power_watts"] == 143.0
    assert accel["accel.count"] == 5
    assert all(lookup(name) is not None for name in accel)
    assert sample.errors == {}
