"""What every tuner family shares: the Tuner base class, with every hook a
family may have declared, and the FileTuner base of one-file-per-knob families.

Each tuner normalises what it accepts (`validate`) and compares values as
values (`equal`: "4096 87380 6291456" equals "4096\\t87380\\t6291456").
The knob vocabulary (names, Change, Plan) is in `hosttune.tuners.knobs`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from hosttune.agent.sense.errors import HostReadError, KnobError, ParseError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.ownership import Owner
from hosttune.agent.sense.peers import PeerReport
from hosttune.tuners.knobs import SearchHint


class Tuner:
    """One knob family: how to read and write its knobs (never why), and what
    the rest of hosttune needs to know about it, declared in one place.

    A subclass sets `family` and overrides `available`, `read`, `validate` and
    `apply`; every other hook has a default that fits a family without that
    concern. The class attributes are plain data that `tuners.registry`
    assembles: the default allowlist, what `hosttune capture` copies, and the
    search steps of `hosttune tune`."""

    family: ClassVar[str] = ""
    # Default allowlist entries (knob or fnmatch pattern -> min/max/choices/...):
    # what hosttune may set on its own, within which bounds (tuners.allowlist).
    allowlist: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    # Host path patterns (fnmatch per path component) `hosttune capture` copies
    # so that a fixture tree holds this family's knobs.
    capture: ClassVar[tuple[str, ...]] = ()
    # Knob pattern -> how `hosttune tune` steps through its range.
    search: ClassVar[Mapping[str, SearchHint]] = {}

    def __init__(self, host: Host) -> None:
        self.host = host

    # -- reading and writing ------------------------------------------------------

    def available(self, key: str) -> bool:
        """Whether this host has the knob (a kernel without cpufreq has no governor)."""
        raise NotImplementedError

    def read(self, key: str) -> str:
        """The current value, normalised the way `validate` normalises."""
        raise NotImplementedError

    def validate(self, key: str, value: str) -> str:
        """The normalised value, or KnobError saying what is wrong with it."""
        raise NotImplementedError

    def apply(self, key: str, value: str) -> None:
        """Write a validated value. Raises KnobError/HostWriteError on refusal."""
        raise NotImplementedError

    def verify(self, key: str, value: str) -> bool:
        """Whether the knob now holds `value` (read back)."""
        return self.equal(self.read(key), value)

    def equal(self, a: str, b: str) -> bool:
        """Whether two values of this knob mean the same."""
        return a.strip() == b.strip()

    def advise(self, key: str, value: str) -> list[str]:
        """Warnings worth showing with a change (irqbalance would undo it, ...)."""
        return []

    def identity(self, key: str) -> str:
        """What the knob's object is, beyond its key: a knob on a process names
        the process by its start time too, so a rollback never touches another
        process that got the same pid. "" when the key says it all."""
        return ""

    def conflict(self, key: str, value: str, before: str) -> str | None:
        """Why `value` may not be set even though it is valid (it places work
        on CPUs the admin isolated); None when nothing stands in the way."""
        return None

    # -- who else owns these knobs ------------------------------------------------------

    def owned_by_files(self) -> dict[str, Owner]:
        """Knobs (or patterns) an administrator's configuration files set
        (sysctl.d for sysctl)."""
        return {}

    @classmethod
    def owned_by_cmdline(cls, params: Sequence[str]) -> dict[str, Owner]:
        """Knobs (or patterns) the kernel command line `params` owns."""
        return {}

    @classmethod
    def tuned_knobs(cls, plugin: str, option: str, devices: Sequence[str]) -> list[str]:
        """The knobs (or patterns) a tuned unit's option sets: [vm]
        transparent_hugepages is thp:enabled. `devices`: a [disk] unit's devices."""
        return []

    @classmethod
    def owned_by_daemons(cls, report: PeerReport) -> dict[str, Owner]:
        """Knobs owned by peer daemons other than tuned (irqbalance, numad)."""
        return {}


class FileTuner(Tuner):
    """A family whose knobs are one kernel file each (`_path(key)` names it,
    through sense.knobfiles): sysctl, thp, hugepages, irq and block.
    Subclasses parse and validate; reading, writing and the read-back check
    are the same for all of them."""

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
