"""Shared plumbing of the workload suite: argument parsing, the run clock and a
clear message when PyTorch (the optional `workloads` extra) or another
framework is missing."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--seconds", type=float, default=60.0, help="how long to run (default 60)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    p.add_argument("--quiet", action="store_true", help="print no summary line at the end")
    return p


def require_torch() -> ModuleType:
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        sys.stderr.write(
            "this workload needs PyTorch: pip install 'hosttune[workloads]' "
            "(the CPU build: torch==2.13.0)\n"
        )
        raise SystemExit(2) from None
    return torch


def require(module: str, install: str, without: tuple[str, ...] = ()) -> ModuleType:
    """Imports a framework that only some workloads use (JAX, TensorFlow);
    exits with code 2 and the pip line when it is absent, as require_torch.
    `without` names optional packages the framework would import if they were
    installed beside it (TensorFlow's lite utilities import jax): they are
    made unimportable first, so the process maps what a host with that
    framework alone would, not whatever else this environment holds."""
    for name in without:
        if name not in sys.modules:
            # None in sys.modules is the import system's "not importable"
            sys.modules[name] = None  # type: ignore[assignment]
    try:
        return importlib.import_module(module)
    except ImportError:
        sys.stderr.write(f"this workload needs {module}: pip install '{install}'\n")
        raise SystemExit(2) from None


class Clock:
    """Runs a loop until `seconds` have passed since construction."""

    def __init__(self, seconds: float) -> None:
        self.start = time.monotonic()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def running(self) -> bool:
        return self.elapsed() < self.seconds

    def ticks(self) -> Iterator[int]:
        i = 0
        while self.running():
            yield i
            i += 1


def report(name: str, quiet: bool, **figures: Any) -> None:
    """One JSON line on stdout: what the run did (the recorder keeps the
    command; this says what it achieved)."""
    if not quiet:
        sys.stdout.write(json.dumps({"workload": name, **figures}, sort_keys=True) + "\n")
        sys.stdout.flush()


def serve_against_client(server: socketserver.BaseServer, port: int, seconds: float,
                         *client_args: str) -> None:
    """Serve from a thread while the suite's load generator (`_client`, its
    own session so a signal to the server's group spares it) sends requests
    to `port`, until `seconds` have passed or the client ends; then stop
    both."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = subprocess.Popen(
        [sys.executable, "-m", "hosttune.models.workloads._client", "--port", str(port),
         *client_args, "--seconds", str(seconds)], start_new_session=True)
    clock = Clock(seconds)
    while clock.running() and client.poll() is None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            client.wait(timeout=0.5)
    client.terminate()
    client.wait()
    server.shutdown()
