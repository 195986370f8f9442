"""hosttuned end to end, as a subprocess on the real host in observe mode:
sd_notify messages over a NOTIFY_SOCKET the test binds, the CLI over the
control socket, the socket's permissions, SIGHUP with a broken and then a good
config, a flood of clients, and SIGTERM."""

from __future__ import annotations

import grp
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_run import RunningDaemon, hosttuned_exe

from hosttune.agent.service.client import DaemonClient, DaemonError

pytestmark = pytest.mark.daemon

GROUP = "nogroup" if any(g.gr_name == "nogroup" for g in grp.getgrall()) else "root"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    d = RunningDaemon(tmp_path, f"interval: 0.5\nwindow: 3\nsocket:\n  group: {GROUP}\n",
                      watchdog_usec=2_000_000)
    try:
        yield d
    finally:
        d.close()


def test_lifecycle(daemon: RunningDaemon) -> None:
    ready = daemon.wait_for("READY=1", timeout=20)
    assert "STATUS=observe" in ready
    # Watchdog: WATCHDOG_USEC=2 s asks for a ping at least every second.
    t0 = time.monotonic()
    daemon.read_notify(3.2)
    pings = [t for t, m in daemon.messages if "WATCHDOG=1" in m and t >= t0]
    assert len(pings) >= 3, daemon.messages
    assert "STATUS=observe: workload" in ready

    st = os.stat(daemon.socket_path)
    assert st.st_mode & 0o777 == 0o660
    assert st.st_gid == grp.getgrnam(GROUP).gr_gid

    status = daemon.status()
    assert status["running"] is True and status["mode"] == "observe"
    assert status["pid"] == daemon.proc.pid
    assert status["sampling"]["samples"] >= 4
    assert status["last_sample"]["age_s"] < 2
    assert "cpu.util" in status["last_sample"]["metrics"]
    text = daemon.cli("status")
    assert text.returncode == 0 and "hosttuned: running" in text.stdout
    assert "mode: observe" in text.stdout and "workload:" in text.stdout

    # A second daemon on the same state directory refuses to start and
    # leaves the first one's socket alone.
    second = subprocess.run([hosttuned_exe(), "--foreground"], env=daemon.env,
                            capture_output=True, text=True, timeout=30, check=False)
    assert second.returncode == 1
    assert f"another hosttuned (pid {daemon.proc.pid}) already runs" in second.stderr
    assert daemon.status()["pid"] == daemon.proc.pid

    # SIGHUP with a broken file: refused, logged with key and line, old config kept.
    daemon.config.write_text("mode: recommend\ninterval: fast\n")
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "not reloaded" not in daemon.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = daemon.log()
    assert "configuration not reloaded, keeping the old one" in log
    assert "line 2: interval: expected a number" in log
    status = daemon.status()
    assert status["mode"] == "observe" and status["sampling"]["interval_s"] == 0.5

    # A good file is taken.
    daemon.config.write_text("mode: recommend\ninterval: 0.5\nwindow: 3\n"
                             f"socket: {{group: {GROUP}}}\n")
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("RELOADING=1", timeout=10)
    deadline = time.monotonic() + 10
    while daemon.status()["mode"] != "recommend":
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.2)

    # SIGTERM: clean exit within seconds, STOPPING=1, socket gone.
    t0 = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=10) == 0
    assert time.monotonic() - t0 < 5
    daemon.wait_for("STOPPING=1", timeout=2)
    assert not daemon.socket_path.exists()
    # Without the daemon, status says so and still shows what it can.
    res = daemon.cli("status")
    assert res.returncode == 0 and "not running" in res.stdout
    assert "mode: recommend (configured" in res.stdout
    direct = json.loads(daemon.cli("status", "--json").stdout)
    assert direct["running"] is False and "cpu.util" in direct["sample"]


def _hostile_clients(path: Path, stop: threading.Event, counts: dict[str, int]) -> None:
    """One flooding client: good requests, garbage, oversized, half-sent."""
    kinds = ["status", "garbage", "big", "slow", "status", "telemetry"]
    i = 0
    while not stop.is_set():
        kind = kinds[i % len(kinds)]
        i += 1
        try:
            if kind in ("status", "telemetry"):
                DaemonClient(path, timeout=5).request(kind)
            else:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(5)
                    s.connect(str(path))
                    if kind == "garbage":
                        s.sendall(b"\x00\x01{{{not json\n")
                    elif kind == "big":
                        s.sendall(b"[" * 70_000)
                    else:  # slow: half a request, then wait for the cut-off
                        s.sendall(b'{"version": 1, "op"')
                    reply = json.loads(s.recv(65536).split(b"\n")[0])
                    assert reply["ok"] is False
            counts[kind] = counts.get(kind, 0) + 1
        except DaemonError as exc:
            counts[exc.code] = counts.get(exc.code, 0) + 1
        except (OSError, ValueError) as exc:
            counts[type(exc).__name__] = counts.get(type(exc).__name__, 0) + 1


def test_flood_keeps_sampling_on_time(tmp_path: Path) -> None:
    d = RunningDaemon(tmp_path, "interval: 0.25\nwindow: 4\nsocket: {max_clients: 16, "
                      "timeout: 1.0}\n")
    try:
        d.wait_for("READY=1", timeout=20)
        time.sleep(1.0)
        before = d.status()["sampling"]
        stop = threading.Event()
        counts: dict[str, int] = {}
        threads = [threading.Thread(target=_hostile_clients, args=(d.socket_path, stop, counts))
                   for _ in range(24)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(5.0)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        elapsed = time.monotonic() - t0
        after = d.status()["sampling"]
        assert d.proc.poll() is None, d.log()
        taken = after["samples"] - before["samples"]
        expected = elapsed / 0.25
        # Every tick happened (none skipped) and none started late by more than
        # a fraction of the interval, while 24 clients hammered the socket.
        assert taken >= expected - 3, (taken, expected, counts)
        assert after["missed_ticks"] == 0
        assert after["max_lateness_s"] < 0.2, after
        served = sum(v for k, v in counts.items() if k in ("status", "telemetry"))
        assert served > 50 and counts.get("slow", 0) > 0 and counts.get("big", 0) > 0, counts
        assert d.stop() == 0
    finally:
        d.close()
