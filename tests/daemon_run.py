"""Running hosttuned as a subprocess for tests and benchmarks: temp state,
run and config paths, a NOTIFY_SOCKET the caller binds, stderr captured."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def hosttuned_exe() -> str:
    return str(Path(sys.executable).parent / "hosttuned")


def hosttune_exe() -> str:
    return str(Path(sys.executable).parent / "hosttune")


class RunningDaemon:
    def __init__(self, root: Path, config_text: str, *, watchdog_usec: int | None = None,
                 extra_env: dict[str, str] | None = None, args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.state = root / "state"
        self.run = root / "run"
        self.config = root / "hosttune.yaml"
        self.config.write_text(config_text)
        self.notify_path = root / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.messages: list[tuple[float, str]] = []
        self.env = dict(os.environ, HOSTTUNE_STATE_DIR=str(self.state),
                        HOSTTUNE_RUN_DIR=str(self.run), HOSTTUNE_CONFIG=str(self.config),
                        HOSTTUNE_LOG="stderr", PYTHONFAULTHANDLER="1",
                        NOTIFY_SOCKET=str(self.notify_path))
        self.env.pop("WATCHDOG_PID", None)
        self.env.pop("WATCHDOG_USEC", None)
        if watchdog_usec is not None:
            self.env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.env.update(extra_env or {})
        self.stderr_path = root / "stderr.log"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen([hosttuned_exe(), "--foreground", *args], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=self._stderr)

    @property
    def socket_path(self) -> Path:
        return self.run / "hosttune.sock"

    def read_notify(self, timeout: float) -> list[str]:
        """Datagrams that arrive within `timeout`."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.notify.settimeout(left)
            try:
                data = self.notify.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), data))
            got.append(data)
        return got

    def wait_for(self, needle: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        for _t, msg in self.messages:
            if needle in msg:
                return msg
        while time.monotonic() < deadline:
            for msg in self.read_notify(min(0.5, deadline - time.monotonic())):
                if needle in msg:
                    return msg
            if self.proc.poll() is not None:
                raise AssertionError(f"hosttuned exited {self.proc.returncode}: {self.log()}")
        raise AssertionError(f"no {needle!r} from hosttuned within {timeout} s; got "
                             f"{[m for _t, m in self.messages]}; log: {self.log()}")

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([hosttune_exe(), *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout, check=False)

    def status(self) -> Any:
        res = self.cli("status", "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def log(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.notify.close()
        self._stderr.close()
