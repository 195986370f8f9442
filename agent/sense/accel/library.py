"""What the backends that wrap a vendor library (NVML, amdsmi) share: one
record per device, the rule for a failed call, and the host-wide reindex.

A vendor call fails in one of four ways, and each backend says which its
library's error is (`fault`):
- UNSUPPORTED: this device cannot answer this question (NOT_SUPPORTED and
  kin): the metric stays absent for the device from then on;
- LOST: the device fell off the bus or vanished: reported lost, the other
  devices keep being sampled;
- FATAL: the driver or library itself is gone: BackendUnavailable, and the
  collector falls back to sysfs for the backend's devices;
- TRANSIENT: anything else the library reports (busy, timeout, retry):
  absent this pass only.
An exception that is not the library's at all is a bug and propagates.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from hosttune.agent.sense.accel.base import BackendUnavailable, ProcessListing
from hosttune.agent.sense.vendors import Vendor

log = logging.getLogger("hosttune.accel")


class Fault(enum.Enum):
    UNSUPPORTED = "unsupported"
    LOST = "lost"
    FATAL = "fatal"
    TRANSIENT = "transient"


@dataclass
class LibraryDevice:
    local: int  # the library's own index
    handle: Any
    address: str  # PCI address, normalized
    index: int  # global (see accel.base)
    lost: bool = False
    unsupported: set[str] = field(default_factory=set)


D = TypeVar("D", bound=LibraryDevice)


class LibraryBackend(Generic[D]):
    """Base of the NVML and amdsmi backends. Subclasses set `name` and
    `vendor` (their row in hosttune.agent.sense.vendors, `for_backend(name)`),
    fill `_devices` in __init__ and implement `fault`, `devices`, `sample` and
    `close`; they may override `reason` and `lost_words`."""

    name: str  # the backend's name, as its vendor row names it
    vendor: Vendor
    # how the lost-device log line puts it
    lost_words = "stopped answering"

    def __init__(self) -> None:
        self._devices: list[D] = []

    @property
    def library(self) -> str:
        return self.vendor.library_name or self.name

    def fault(self, exc: Exception) -> Fault | None:
        """How the library's error `exc` counts; None when it is not the
        library's error at all."""
        raise NotImplementedError

    def reason(self, exc: Exception) -> str:
        return str(exc)

    def _call(self, dev: D, what: str, fn: Callable[..., Any],
              *args: Any) -> Any | None:
        """One library call for one device: its value, or None when the device
        cannot say (and, unless transient, will not be asked again). Raises
        BackendUnavailable when the driver itself is gone."""
        if dev.lost or what in dev.unsupported:
            return None
        try:
            return fn(*args)
        except Exception as exc:
            fault = self.fault(exc)
            if fault is None:
                raise
            if fault is Fault.FATAL:
                raise BackendUnavailable(
                    self.name, f"{self.library} stopped working: {self.reason(exc)}") from None
            if fault is Fault.LOST:
                dev.lost = True
                log.warning("accel: %s GPU %d (%s) %s (%s: %s); reporting it as lost",
                            self.vendor.display, dev.local, dev.address, self.lost_words,
                            self.library, self.reason(exc))
            elif fault is Fault.UNSUPPORTED:
                dev.unsupported.add(what)
            return None

    # -- AccelBackend parts every library backend has the same way ----------

    def reindex(self, by_address: Mapping[str, int]) -> None:
        for dev in self._devices:
            dev.index = by_address.get(dev.address, dev.index)

    def sample(self, values: dict[str, float]) -> None:
        raise NotImplementedError

    def processes(self) -> ProcessListing:
        raise NotImplementedError

    def _listing_call(self, dev: D, what: str, fn: Callable[..., Any],
                      *args: Any) -> tuple[Any | None, str | None]:
        """One per-process listing call for one device: (its value, None), or
        (None, why not). Unlike `_call` it never raises for the library's
        own errors: a listing that cannot be had is a fact to show ("no
        permission"), and the sample path, not this one, gives up on a
        backend whose driver went away."""
        if dev.lost:
            return None, "device lost"
        if what in dev.unsupported:
            return None, "not supported"
        try:
            return fn(*args), None
        except Exception as exc:
            fault = self.fault(exc)
            if fault is None:
                raise
            if fault is Fault.LOST:
                dev.lost = True
                log.warning("accel: %s GPU %d (%s) %s (%s: %s); reporting it as lost",
                            self.vendor.display, dev.local, dev.address, self.lost_words,
                            self.library, self.reason(exc))
                return None, "device lost"
            if fault is Fault.UNSUPPORTED:
                dev.unsupported.add(what)
                return None, "not supported"
            if fault is Fault.FATAL:
                return None, f"{self.library} stopped working: {self.reason(exc)}"
            return None, self.reason(exc)
