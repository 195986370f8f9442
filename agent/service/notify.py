"""sd_notify: READY, STATUS, WATCHDOG and STOPPING for Type=notify.

The datagrams go to NOTIFY_SOCKET (a path, or an abstract name written
"@name"), sent without ever blocking (see `_sender`). systemd-python 235 has
no `watchdog_enabled()`, so the watchdog period is read from WATCHDOG_USEC
here, honouring WATCHDOG_PID (the watchdog is ours only when it names our
pid).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping


def _sender(env: Mapping[str, str] | None = None) -> Callable[[str], bool]:
    """A non-blocking sd_notify.

    systemd-python's `daemon.notify` (235) sends with a blocking sendmsg and
    keeps the GIL while it does: when the receiver's queue is full, every
    thread of the daemon stops, the control socket included (seen in the flood
    test with a slow reader). Here each datagram is sent with MSG_DONTWAIT and
    dropped if it cannot go at once: a lost STATUS costs nothing, and a lost
    WATCHDOG ping is re-sent at the next half period."""
    env = os.environ if env is None else env
    target = env.get("NOTIFY_SOCKET", "")
    if not target or target[0] not in "/@":
        def _none(_state: str) -> bool:
            return False

        return _none
    address = "\0" + target[1:] if target[0] == "@" else target
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def _send(state: str) -> bool:
        try:
            sock.sendto(state.encode(), socket.MSG_DONTWAIT, address)
        except OSError:
            return False
        return True

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
        self._send = send or _sender(env)
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
