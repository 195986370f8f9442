"""`hosttuned`: the host daemon. For now it starts, tells systemd it is ready,
and stops cleanly on SIGTERM/SIGINT; the sampling loop lands with issue 7."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


def main(argv: list[str] | None = None) -> int:
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
