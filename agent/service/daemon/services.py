"""What the daemon's parts (loop, auto-mode policy, request handlers) share:
the configuration in force, the host access, the log, the store, and the
lock and wake-up event between the loop's thread and the socket's."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from hosttune.agent.sense.paths import Paths
from hosttune.agent.service import config as cfg
from hosttune.agent.service.control import ControlServer
from hosttune.agent.service.daemon.host_access import HostAccess
from hosttune.agent.service.log import Log
from hosttune.agent.service.notify import Notifier
from hosttune.agent.service.store import Store


@dataclass
class Services:
    paths: Paths
    config: cfg.Config  # replaced as a whole on reload
    access: HostAccess
    log: Log
    notifier: Notifier
    # Guards what the socket's thread reads of the loop's state.
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Set to wake the loop early: a signal, a queued request, a finished plan.
    wake: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False
    opened: Store | None = None

    @property
    def store(self) -> Store:
        if self.opened is None:
            raise RuntimeError("the store is opened when the daemon runs")
        return self.opened

    def stop(self) -> None:
        self.stopping = True
        self.wake.set()


@dataclass
class RunInfo:
    """What the loop learnt at start and shows in status."""

    started_wall: float = field(default_factory=time.time)
    started_mono: float = field(default_factory=time.monotonic)
    host: dict[str, Any] = field(default_factory=dict)  # HostAccess.prepare()
    geometry_warning: str | None = None
    server: ControlServer | None = None
