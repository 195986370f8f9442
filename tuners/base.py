"""What every tuner family shares: the Tuner protocol and the FileTuner base.

Each tuner normalises what it accepts (`validate`) and compares values as
values (`equal`: "4096 87380 6291456" equals "4096\\t87380\\t6291456").
The knob vocabulary (names, Change, Plan) is in `hosttune.tuners.knobs`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from hosttune.agent.sense.errors import KnobError
from hosttune.tuners.knobs import parse_knob

if TYPE_CHECKING:
    from hosttune.agent.sense.host import Host

@runtime_checkable
class Tuner(Protocol):
    """One knob family. It knows how to read and write its knobs, never why."""

    family: str

    def available(self, key: str) -> bool:
        """Whether this host has the knob (a kernel without cpufreq has no governor)."""
        ...

    def read(self, key: str) -> str:
        """The current value, normalised the way `validate` normalises."""
        ...

    def validate(self, key: str, value: str) -> str:
        """The normalised value, or KnobError saying what is wrong with it."""
        ...

    def apply(self, key: str, value: str) -> None:
        """Write a validated value. Raises KnobError/HostWriteError on refusal."""
        ...

    def verify(self, key: str, value: str) -> bool:
        """Whether the knob now holds `value` (read back)."""
        ...

    def equal(self, a: str, b: str) -> bool:
        """Whether two values of this knob mean the same."""
        ...

    def advise(self, key: str, value: str) -> list[str]:
        """Warnings worth showing with a change (irqbalance would undo it, ...)."""
        ...


class FileTuner:
    """A family whose knobs are one kernel file each (`_path(key)` names it):
    sysctl, thp and block. Subclasses parse and validate; reading, writing and
    the read-back check are the same for all of them."""

    family = ""

    def __init__(self, host: Host) -> None:
        self.host = host

    def _path(self, key: str) -> str:
        raise NotImplementedError

    def available(self, key: str) -> bool:
        try:
            path = self._path(key)
        except KnobError:
            return False
        return self.host.exists(path) and not self.host.is_dir(path)

    def _raw(self, key: str) -> str:
        """The file's text, stripped; KnobError naming the knob and the path."""
        from hosttune.agent.sense.errors import HostReadError

        path = self._path(key)
        if not self.available(key):
            raise KnobError(f"{self.family}:{key}", f"unavailable: this host has no {path}")
        try:
            return self.host.read_str(path)
        except HostReadError as exc:
            # kernel.sched_* and a few others answer EPERM to reads on recent kernels.
            raise KnobError(f"{self.family}:{key}", f"cannot read {path}: {exc.message}"
                            ) from exc

    def read(self, key: str) -> str:
        return self._raw(key)

    def apply(self, key: str, value: str) -> None:
        self.host.write_text(self._path(key), value)

    def verify(self, key: str, value: str) -> bool:
        return self.equal(self.read(key), value)

    def equal(self, a: str, b: str) -> bool:
        return a.strip() == b.strip()

    def advise(self, key: str, value: str) -> list[str]:
        return []


def tuners_for(host: Host) -> dict[str, Tuner]:
    """Every tuner family, bound to `host`."""
    from hosttune.tuners.block import BlockTuner
    from hosttune.tuners.cpu import CpuTuner
    from hosttune.tuners.cpuset import CpusetTuner
    from hosttune.tuners.hugepages import HugepagesTuner
    from hosttune.tuners.irq import IrqTuner
    from hosttune.tuners.numa import NumaTuner
    from hosttune.tuners.sysctl import SysctlTuner
    from hosttune.tuners.thp import ThpTuner

    tuners: list[Tuner] = [
        SysctlTuner(host), ThpTuner(host), HugepagesTuner(host), IrqTuner(host),
        NumaTuner(host), CpusetTuner(host), CpuTuner(host), BlockTuner(host),
    ]
    return {t.family: t for t in tuners}


def tuner_for(tuners: dict[str, Tuner], knob: str) -> tuple[Tuner, str]:
    family, key = parse_knob(knob)
    tuner = tuners.get(family)
    if tuner is None:
        known = ", ".join(sorted(tuners))
        raise KnobError(knob, f"unknown knob family {family!r} (known: {known})")
    return tuner, key


def split_values(value: str) -> list[str]:
    """Whitespace-separated fields: how the kernel prints multi-value knobs."""
    return value.split()


def parse_choice(text: str, *, source: str = "choice") -> tuple[str, tuple[str, ...]]:
    """"always [madvise] never" -> ("madvise", ("always", "madvise", "never")):
    the sysfs format for one selected option among several (THP modes, the
    I/O scheduler). A value with no brackets is its own only option."""
    options: list[str] = []
    selected: str | None = None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            selected = word[1:-1]
            options.append(selected)
        else:
            options.append(word)
    if selected is None:
        if len(options) == 1:
            return options[0], tuple(options)
        from hosttune.agent.sense.errors import ParseError

        raise ParseError(source, f"no [selected] option in {text[:80]!r}")
    return selected, tuple(options)


def validate_choice_or_count(knob: str, value: str, options: tuple[str, ...] | None) -> str:
    """The value of a sysfs file that is either a menu ("[mq-deadline] none",
    "always [madvise] never": `options` lists it) or one non-negative count."""
    value = value.strip()
    if options is not None:
        if value not in options:
            raise KnobError(knob, f"{value!r} is not offered (not one of {', '.join(options)})")
        return value
    try:
        number = int(value)
    except ValueError:
        raise KnobError(knob, f"expected an integer, got {value!r}") from None
    if number < 0:
        raise KnobError(knob, f"expected a non-negative integer, got {number}")
    return str(number)
