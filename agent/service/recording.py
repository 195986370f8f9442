"""Recording labelled traces: sample the host every interval while a command
runs (or while a given process lives, or for a fixed time) and write each
sample's host-independent columns (`hosttune.models.trace.trace_row`) to a
trace file."""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from hosttune.agent.sense.errors import HosttuneError
from hosttune.agent.sense.host import Host
from hosttune.agent.sense.telemetry.processes import pid_alive
from hosttune.agent.sense.telemetry.sampler import Sampler, open_sampler, rates
from hosttune.models.trace import TraceWriter, read_trace, trace_columns, trace_row


@dataclass
class RecordResult:
    path: Path
    rows: int
    seconds: float
    exit_code: int | None  # the command's, None when watching a pid or the host
    stopped: str  # "exited", "duration", "pid-gone", "interrupted"


Progress = Callable[[float, int], None]  # (elapsed seconds, rows written)


def hosttune_version() -> str:
    try:
        return version("hosttune")
    except PackageNotFoundError:
        return "0+unknown"


def make_sampler(process_every: int = 5, accelerators: bool = True) -> Sampler:
    """The live host's Sampler with every system collector, plus the
    accelerator collector when it opens."""
    # no accelerator view: the trace has no accel columns
    return open_sampler(Host(), process_every=process_every, accelerators=accelerators)


def record(
    output: str | Path,
    label: str,
    *,
    command: Sequence[str] | None = None,
    pid: int | None = None,
    duration: float | None = None,
    interval: float = 1.0,
    meta: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    sampler: Sampler | None = None,
    quiet_command: bool = False,
) -> RecordResult:
    """Records until the command exits, the pid is gone or `duration` passes
    (whichever comes first). A command still running at `duration` is sent
    SIGTERM (its whole process group), then SIGKILL after 5 s."""
    if interval <= 0:
        raise HosttuneError("interval must be positive", subject="--interval")
    if command and pid is not None:
        raise HosttuneError("give a command or --pid, not both", subject="record")
    if not command and pid is None and duration is None:
        raise HosttuneError("give a command, --pid, or --duration", subject="record")
    if pid is not None and not pid_alive(pid):
        raise HosttuneError("no such process", subject=f"pid {pid}")
    own_sampler = sampler is None
    s = make_sampler() if sampler is None else sampler
    header = {
        "host": socket.gethostname(),
        "kernel": platform.release(),
        "hosttune": hosttune_version(),
        "label": label,
        "command": shlex.join(command) if command else (f"pid {pid}" if pid else "host"),
        "interval": f"{interval:g}",
        "started": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpus": str(os.cpu_count() or 0),
    }
    for key, value in (meta or {}).items():
        header.setdefault(key, value)
    proc: subprocess.Popen[bytes] | None = None
    stopped = "duration"
    start = time.monotonic()
    try:
        with TraceWriter(output, header, trace_columns()) as writer:
            prev = s.sample()
            if command:
                try:
                    proc = subprocess.Popen(
                        list(command), start_new_session=True,
                        stdout=subprocess.DEVNULL if quiet_command else None,
                    )
                except OSError as exc:
                    raise HosttuneError(f"cannot run: {exc.strerror}",
                                        subject=command[0]) from exc
            next_at = prev.monotonic + interval
            while True:
                if proc is not None and proc.poll() is not None:
                    stopped = "exited"
                    break
                if pid is not None and not pid_alive(pid):
                    stopped = "pid-gone"
                    break
                if duration is not None and time.monotonic() - start >= duration:
                    stopped = "duration"
                    break
                delay = next_at - time.monotonic()
                if delay > 0:
                    _wait(proc, delay)
                    if proc is not None and proc.poll() is not None and \
                            time.monotonic() < next_at - 1e-3:
                        stopped = "exited"
                        break
                cur = s.sample()
                writer.write(cur.monotonic - start, trace_row(rates(prev, cur)))
                prev = cur
                next_at += interval
                if next_at < time.monotonic():  # fell behind (a stalled host): skip ahead
                    next_at = time.monotonic() + interval
                if progress is not None:
                    progress(time.monotonic() - start, writer.rows)
            rows = writer.rows
    except KeyboardInterrupt:
        stopped = "interrupted"
        rows = -1
    finally:
        if proc is not None and proc.poll() is None:
            _stop(proc)
        if own_sampler:
            s.close()
    if rows < 0:
        rows = len(read_trace(output).rows)
    return RecordResult(
        path=Path(output), rows=rows, seconds=time.monotonic() - start,
        exit_code=proc.returncode if proc is not None else None, stopped=stopped,
    )


def _wait(proc: subprocess.Popen[bytes] | None, delay: float) -> None:
    if proc is None:
        time.sleep(delay)
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=delay)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def live_window(
    seconds: float, interval: float = 1.0, progress: Callable[[float], None] | None = None,
) -> tuple[list[str], Any]:
    """Samples the live host for `seconds` and returns the trace columns and
    rows, as `hosttune record` would have written them."""
    import numpy as np  # numpy (60 ms, 17 MB) only for the commands that classify

    sampler = make_sampler()
    rows: list[dict[str, float]] = []
    try:
        prev = sampler.sample()
        start = prev.monotonic
        next_at = start + interval
        while next_at <= start + seconds + 1e-6:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            cur = sampler.sample()
            rows.append(trace_row(rates(prev, cur)))
            prev = cur
            next_at += interval
            if progress is not None:
                progress(cur.monotonic - start)
    finally:
        sampler.close()
    columns = sorted({name for row in rows for name in row})
    matrix = np.array([[row.get(c, np.nan) for c in columns] for row in rows], dtype=np.float64)
    return columns, matrix.reshape(len(rows), len(columns))
