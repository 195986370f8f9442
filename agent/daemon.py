"""`hosttuned`: the host daemon. For now it starts, tells systemd it is ready,
and stops cleanly on SIGTERM/SIGINT; the sampling loop lands with issue 7."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


def check_config(path: str | None) -> int:
    """`hosttuned --check-config [FILE]`: 0 when the file loads, else one line
    naming file, key and line on stderr and 1 (ExecStartPre, packaging)."""
    from hosttune.agent import config as cfg
    from hosttune.agent.errors import ConfigError
    from hosttune.agent.paths import Paths

    target = path if path is not None else str(Paths.from_env().config)
    try:
        cfg.load(target, missing_ok=path is None)
    except ConfigError as exc:
        print(f"hosttuned: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="hosttuned", description="hosttune host daemon")
    parser.add_argument("--check-config", nargs="?", const="", default=None, metavar="FILE",
                        help="check the configuration (default file if none given) and exit")
    parser.add_argument("--foreground", action="store_true",
                        help="run in the foreground (the only way it runs; for systemd)")
    args = parser.parse_args(argv)
    if args.check_config is not None:
        return check_config(args.check_config or None)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        from systemd import daemon as sd_daemon

        sd_daemon.notify("READY=1")
    except ImportError:
        pass
    while not stop.wait(1.0):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
