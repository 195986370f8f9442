#!/usr/bin/env python3
"""Cost of one accelerator sampling pass on the fixture trees, through the
collector (worker thread with a deadline) and the bare backend.

    .venv/bin/python benchmarks/accel_cost.py
    FAKE_NVML_GPUS=8 LD_LIBRARY_PATH=DIR .venv/bin/python benchmarks/accel_cost.py --nvml
        (DIR holding libnvidia-ml.so.1 built from tests/fixtures/accel/fake_nvml.c,
         or nothing on a host with a real NVIDIA driver and --root /)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from hosttune.agent.sense.accel.nvidia import NvidiaBackend
from hosttune.agent.sense.accel.select import AccelCollector
from hosttune.agent.sense.accel.sysfs import SysfsBackend
from hosttune.agent.sense.host import Host

HOSTS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "hosts"


def median_us(fn: Callable[[], None], n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nvml", action="store_true", help="time the NVML backend")
    parser.add_argument("--root", default=str(HOSTS / "nvidia-8gpu"))
    parser.add_argument("-n", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.nvml:
        coll = AccelCollector(Host(args.root), ["nvidia"])
        bare = NvidiaBackend()
        took = median_us(lambda: coll.collect({}), args.n)
        bare_took = median_us(lambda: bare.sample({}), args.n)
        print(f"nvml {coll.backend_names}: collect {took:.0f} us, bare sample {bare_took:.0f} us")
        return
    for name in ("nvidia-8gpu", "mixed", "ascend-8npu"):
        host = Host(HOSTS / name)
        coll = AccelCollector(host)
        sysfs = SysfsBackend(host)
        took = median_us(partial(coll.collect, {}), args.n)
        bare_took = median_us(partial(sysfs.sample, {}), args.n)
        print(f"{name} {coll.backend_names}: collect {took:.0f} us, "
              f"bare sysfs sample {bare_took:.0f} us")


if __name__ == "__main__":
    main()
