"""sd_notify: READY, STATUS, WATCHDOG and STOPPING for Type=notify.

systemd-python's `daemon.notify` sends the datagram (abstract sockets
included) and returns False when NOTIFY_SOCKET is unset; version 235 has no
`watchdog_enabled()`, so the watchdog period is read from WATCHDOG_USEC here,
honouring WATCHDOG_PID (the watchdog is ours only when it names our pid).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping


def _sender() -> Callable[[str], bool]:
    try:
        from systemd import daemon as sd_daemon
    except ImportError:  # the library is a dependency; be explicit if it is gone
        def _missing(_state: str) -> bool:
            return False

        return _missing

    def _send(state: str) -> bool:
        return bool(sd_daemon.notify(state))

    return _send


def watchdog_period(env: Mapping[str, str] | None = None, pid: int | None = None
                    ) -> float | None:
    """Seconds between the pings systemd expects, or None without a watchdog."""
    env = os.environ if env is None else env
    pid = os.getpid() if pid is None else pid
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1e6


class Notifier:
    def __init__(self, send: Callable[[str], bool] | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self._send = send or _sender()
        period = watchdog_period(env)
        # Ping at half the period, as sd_watchdog_enabled(3) advises.
        self.ping_every = None if period is None else period / 2
        self._last_ping = 0.0
        self._last_status = ""

    def ready(self, status: str) -> None:
        self._last_status = status
        self._send(f"READY=1\nSTATUS={status}")
        self.ping(force=True)

    def status(self, status: str) -> None:
        if status != self._last_status:
            self._last_status = status
            self._send(f"STATUS={status}")

    def reloading(self) -> None:
        self._send("RELOADING=1")

    def reloaded(self, status: str) -> None:
        self._last_status = status
        self._send(f"READY=1\nSTATUS={status}")

    def ping(self, force: bool = False) -> None:
        if self.ping_every is None:
            return
        now = time.monotonic()
        if force or now - self._last_ping >= self.ping_every:
            self._last_ping = now
            self._send("WATCHDOG=1")

    def next_ping_in(self) -> float | None:
        if self.ping_every is None:
            return None
        return max(0.0, self._last_ping + self.ping_every - time.monotonic())

    def stopping(self, status: str = "stopping") -> None:
        self._send(f"STOPPING=1\nSTATUS={status}")
