"""sd_notify without systemd: a datagram socket the test binds."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from hosttune.agent.service.notify import Notifier, watchdog_period


def _bind(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(1)
    return s


def test_messages_reach_a_path_socket(tmp_path: Path) -> None:
    rx = _bind(str(tmp_path / "n.sock"))
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "n.sock"), "WATCHDOG_USEC": "1000000"})
    n.ready("observe: starting")
    assert rx.recv(4096) == b"READY=1\nSTATUS=observe: starting"
    assert rx.recv(4096) == b"WATCHDOG=1"
    n.status("observe: starting")  # unchanged: not sent again
    n.status("observe: idle")
    assert rx.recv(4096) == b"STATUS=observe: idle"
    n.ping()  # within the half period: nothing
    time.sleep(0.55)
    n.ping()
    assert rx.recv(4096) == b"WATCHDOG=1"
    n.stopping()
    assert rx.recv(4096).startswith(b"STOPPING=1")


def test_abstract_socket() -> None:
    name = f"hosttune-test-{os.getpid()}"
    rx = _bind("\0" + name)
    Notifier(env={"NOTIFY_SOCKET": "@" + name}).ready("x")
    assert rx.recv(4096) == b"READY=1\nSTATUS=x"


def test_full_queue_never_blocks(tmp_path: Path) -> None:
    _rx = _bind(str(tmp_path / "n.sock"))  # bound, never read
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "n.sock")})
    t0 = time.monotonic()
    for i in range(5000):
        n.status(f"status {i}")
    assert time.monotonic() - t0 < 2.0


def test_no_socket_is_quiet() -> None:
    n = Notifier(env={})
    n.ready("x")
    n.ping()
    assert n.ping_every is None and n.next_ping_in() is None


def test_watchdog_period_honours_pid() -> None:
    assert watchdog_period({}, pid=10) is None
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}, pid=10) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "10"}, pid=10) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "11"}, pid=10) is None
    assert watchdog_period({"WATCHDOG_USEC": "0"}, pid=10) is None
    assert watchdog_period({"WATCHDOG_USEC": "soon"}, pid=10) is None
