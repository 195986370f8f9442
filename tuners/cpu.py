"""cpu: frequency governor and energy-performance preference of every CPU.

Keys: `governor` (cpufreq/scaling_governor) and `epp`
(cpufreq/energy_performance_preference). The value is one setting for all
CPUs ("performance"), or per CPU ("0=performance 1=powersave") when they
differ: `read` prints the per-CPU form only then, so a rollback restores a
mixed state exactly. Hosts without cpufreq (most VMs) report the knobs
unavailable. Owned by tuned's [cpu] governor and energy_performance_preference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from hosttune.agent.sense import knobfiles
from hosttune.agent.sense.errors import HostReadError, KnobError
from hosttune.tuners.base import Tuner

_FILES = {
    "governor": ("scaling_governor", "scaling_available_governors"),
    "epp": ("energy_performance_preference", "energy_performance_available_preferences"),
}
_TUNED_CPU = {"governor": "cpu:governor", "energy_performance_preference": "cpu:epp"}


class CpuTuner(Tuner):
    family = "cpu"
    # absent on many VMs: the tuner reports them unavailable
    allowlist: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "cpu:governor": {"choices": ["performance", "schedutil", "ondemand", "powersave"]},
        "cpu:epp": {"choices": ["performance", "balance_performance", "balance_power", "power"]},
    }
    capture = tuple(knobfiles.cpufreq("[0-9]*", name) for files in _FILES.values()
                    for name in files)

    def _files(self, key: str) -> tuple[str, str]:
        if key not in _FILES:
            raise KnobError(f"cpu:{key}", f"unknown cpu knob {key!r} (governor, epp)")
        return _FILES[key]

    def cpus(self, key: str) -> list[int]:
        """The CPUs that have this cpufreq file."""
        return knobfiles.cpufreq_cpus(self.host, self._files(key)[0])

    def _path(self, key: str, cpu: int, which: int = 0) -> str:
        return knobfiles.cpufreq(cpu, self._files(key)[which])

    def available(self, key: str) -> bool:
        try:
            return bool(self.cpus(key))
        except KnobError:
            return False

    def _require(self, key: str) -> list[int]:
        cpus = self.cpus(key)
        if not cpus:
            raise KnobError(f"cpu:{key}", "unavailable: this host has no cpufreq "
                                          f"{self._files(key)[0]} (a VM, or no cpufreq driver)")
        return cpus

    def per_cpu(self, key: str) -> dict[int, str]:
        values = {}
        for cpu in self._require(key):
            try:
                values[cpu] = self.host.read_str(self._path(key, cpu))
            except HostReadError as exc:
                raise KnobError(f"cpu:{key}", str(exc)) from exc
        return values

    def read(self, key: str) -> str:
        values = self.per_cpu(key)
        distinct = set(values.values())
        if len(distinct) == 1:
            return distinct.pop()
        return " ".join(f"{cpu}={v}" for cpu, v in sorted(values.items()))

    def _parse(self, key: str, value: str, cpus: list[int]) -> dict[int, str]:
        fields = value.split()
        if len(fields) == 1 and "=" not in fields[0]:
            return dict.fromkeys(cpus, fields[0])
        result = {}
        for field in fields:
            cpu, sep, setting = field.partition("=")
            if not sep or not cpu.isdigit() or not setting:
                raise KnobError(f"cpu:{key}",
                                f"bad value {value!r} (a setting, or CPU=setting ...)")
            result[int(cpu)] = setting
        return result

    def validate(self, key: str, value: str) -> str:
        knob = f"cpu:{key}"
        cpus = self._require(key)
        wanted = self._parse(key, value, cpus)
        for cpu, setting in wanted.items():
            if cpu not in cpus:
                raise KnobError(knob, f"CPU {cpu} has no cpufreq {self._files(key)[0]}")
            offered = self.host.read_optional(self._path(key, cpu, 1))
            if offered is not None and setting not in offered.split():
                raise KnobError(knob, f"{setting!r} is not offered by CPU {cpu} ({offered})")
        if len(set(wanted.values())) == 1 and set(wanted) == set(cpus):
            return next(iter(wanted.values()))
        return " ".join(f"{cpu}={v}" for cpu, v in sorted(wanted.items()))

    def apply(self, key: str, value: str) -> None:
        for cpu, setting in self._parse(key, value, self._require(key)).items():
            self.host.write_text(self._path(key, cpu), setting)

    def verify(self, key: str, value: str) -> bool:
        current = self.per_cpu(key)
        wanted = self._parse(key, value, sorted(current))
        return all(current.get(cpu) == setting for cpu, setting in wanted.items())

    def equal(self, a: str, b: str) -> bool:
        cpus = list(range(4096))
        try:
            pa, pb = self._parse("governor", a, cpus), self._parse("governor", b, cpus)
        except KnobError:
            return a.split() == b.split()
        if len(a.split()) == 1 or len(b.split()) == 1:
            # One side names a single setting for all CPUs.
            return set(pa.values()) == set(pb.values()) if set(pa) & set(pb) else False
        return pa == pb

    @classmethod
    def tuned_knobs(cls, plugin: str, option: str, devices: Sequence[str]) -> list[str]:
        return [_TUNED_CPU[option]] if plugin == "cpu" and option in _TUNED_CPU else []
