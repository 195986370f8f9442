"""irq: the CPUs an interrupt may be delivered to (/proc/irq/N/smp_affinity_list).

The value is a CPU list ("0-3,8"). Verification compares smp_affinity_list
with what was asked: effective_affinity_list follows only at the next
interrupt. Managed IRQs (multi-queue drivers) and per-CPU IRQs refuse the
write with EIO or EPERM; that is reported as "cannot be moved". A running
irqbalance would move the IRQ again; it is detected and its own setting
(IRQBALANCE_BANNED_CPULIST) offered instead. While it runs irqbalance owns
IRQ affinity, but for the IRQs it was told to leave alone (--banirq) and
unless banned CPUs are configured (sense.peers); `irqaffinity=` on the kernel
command line owns every IRQ's affinity.

CPUs the admin set apart at boot (isolcpus=, nohz_full=, rcu_nocbs=; see
sense.isolation) or through a running tuned's isolated_cores
(sense.ownership.cpu_reservations) never get an interrupt from hosttune:
`conflict` names the parameter, and the transaction refuses such a change
unless an admin forces it by hand."""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from hosttune.agent.sense import knobfiles
from hosttune.agent.sense.cpulist import format_cpulist, parse_cpulist
from hosttune.agent.sense.errors import HostWriteError, KnobError, ParseError
from hosttune.agent.sense.ownership import Owner, cpu_reservations
from hosttune.agent.sense.peers import IRQBALANCE_CONFIGS, PeerReport, irqbalance_config, pids_of
from hosttune.agent.sense.topology import online_cpus
from hosttune.tuners.base import FileTuner


class IrqTuner(FileTuner):
    family = "irq"
    # any CPU list the validator accepts
    allowlist: ClassVar[Mapping[str, Mapping[str, Any]]] = {"irq:*": {}}
    capture = (knobfiles.irq("[0-9]*"), knobfiles.irq("[0-9]*", "effective_affinity_list"))

    @staticmethod
    def _irq(key: str) -> int:
        if not key.isdigit():
            raise KnobError(f"irq:{key}", "IRQ keys are IRQ numbers (irq:41)")
        return int(key)

    def _path(self, key: str) -> str:
        return knobfiles.irq(self._irq(key))

    def read(self, key: str) -> str:
        raw = self._raw(key)
        try:
            return format_cpulist(parse_cpulist(raw, source=self.host.describe(self._path(key))))
        except ParseError as exc:
            raise KnobError(f"irq:{key}", str(exc)) from exc

    def effective(self, key: str) -> str | None:
        """Where the IRQ is delivered now (changes only at its next interrupt)."""
        text = self.host.read_optional(knobfiles.irq(self._irq(key), "effective_affinity_list"))
        return None if text is None else format_cpulist(parse_cpulist(text))

    def validate(self, key: str, value: str) -> str:
        knob = f"irq:{key}"
        self.read(key)
        try:
            cpus = parse_cpulist(value, source=knob)
        except ParseError as exc:
            raise KnobError(knob, exc.message) from None
        if not cpus:
            raise KnobError(knob, "an IRQ needs at least one CPU")
        online = online_cpus(self.host)
        if online:
            offline = sorted(set(cpus) - set(online))
            if offline:
                raise KnobError(knob, f"CPU(s) {format_cpulist(offline)} are not online "
                                      f"(online: {format_cpulist(online)})")
        return format_cpulist(cpus)

    def apply(self, key: str, value: str) -> None:
        try:
            self.host.write_text(self._path(key), value)
        except HostWriteError as exc:
            if exc.errno in (errno.EIO, errno.EPERM):
                raise KnobError(f"irq:{key}", f"IRQ {key} cannot be moved (managed or per-CPU): "
                                              f"{exc.message}") from exc
            raise

    def equal(self, a: str, b: str) -> bool:
        try:
            return set(parse_cpulist(a)) == set(parse_cpulist(b))
        except ParseError:
            return a.strip() == b.strip()

    def irqbalance_pids(self) -> list[int]:
        return pids_of(self.host.proc_comms(), "irqbalance")

    def irqbalance_banned(self) -> tuple[str, str] | None:
        """(config file, the banned CPU setting's value) if one is set."""
        config = irqbalance_config(self.host)
        if config.path is None or not config.banned_setting:
            return None
        return config.path, config.banned_setting.split("=", 1)[1].strip().strip("\"'")

    def conflict(self, key: str, value: str, before: str) -> str | None:
        """Why `value` may not be set: it names CPUs the admin isolated."""
        try:
            cpus = parse_cpulist(value)
            if before and set(cpus) == set(parse_cpulist(before)):
                return None  # left where it is: nothing is placed
        except ParseError:
            return None
        isolation = cpu_reservations(self.host)
        reserved = sorted(set(cpus) & isolation.cpus)
        if not reserved:
            return None
        return (f"IRQ {key} would be served on isolated CPUs: {isolation.explain(reserved)}; "
                "hosttune keeps interrupts off them")

    def advise(self, key: str, value: str) -> list[str]:
        pids = self.irqbalance_pids()
        if not pids:
            return []
        config = self.irqbalance_banned()
        where = config[0] if config else IRQBALANCE_CONFIGS[0]
        banned = f" (now {config[1]!r})" if config else ""
        return [f"irqbalance is running (pid {', '.join(map(str, pids))}) and will move "
                f"IRQ {key} again: add --banirq={key} to IRQBALANCE_ARGS in {where} so it "
                f"leaves this IRQ alone, or set IRQBALANCE_BANNED_CPULIST{banned} there to keep "
                f"its IRQs off the CPUs you reserve, instead of fighting it"]

    @classmethod
    def owned_by_cmdline(cls, params: Sequence[str]) -> dict[str, Owner]:
        # irqaffinity=: the admin chose the default CPUs of every IRQ
        owned: dict[str, Owner] = {}
        for param in params:
            name, _, value = param.partition("=")
            if name == "irqaffinity" and value:
                owned["irq:*"] = Owner("cmdline", param)
        return owned

    @classmethod
    def owned_by_daemons(cls, report: PeerReport) -> dict[str, Owner]:
        balancer = report.irqbalance
        if balancer is None or balancer.shares:
            return {}
        owned = {"irq:[0-9]*": Owner("peer", f"{balancer.who} balances IRQ affinity")}
        for irq in balancer.banned_irqs:
            owned[f"irq:{irq}"] = Owner("excluded", f"{balancer.who} --banirq={irq}", "peer")
        return owned
