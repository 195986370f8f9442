"""The daemon's log: the journal with structured fields when journald runs,
else one line per message on stderr.

systemd-python's `journal.send` drops messages silently when journald is
absent, so the choice is made up front: journald is used when its socket
exists (or stderr is already the journal, JOURNAL_STREAM) and HOSTTUNE_LOG
does not say `stderr`. Fields are upper-cased and prefixed HOSTTUNE_, so
`journalctl -u hosttuned HOSTTUNE_KNOB=sysctl:vm.swappiness` finds them.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

LEVELS = {"debug": 7, "info": 6, "warning": 4, "error": 3}
_JOURNAL_SOCKET = "/run/systemd/journal/socket"


class Log:
    def __init__(self, level: str = "info", *, use_journal: bool | None = None,
                 stream: TextIO | None = None) -> None:
        self.threshold = LEVELS[level]
        self._stream = stream or sys.stderr
        self._send = None
        if use_journal is None:
            choice = os.environ.get("HOSTTUNE_LOG", "auto")
            use_journal = choice == "journal" or (
                choice == "auto"
                and (os.path.exists(_JOURNAL_SOCKET) or "JOURNAL_STREAM" in os.environ))
        if use_journal:
            try:
                from systemd import journal

                self._send = journal.send
            except ImportError:
                self._send = None

    def set_level(self, level: str) -> None:
        self.threshold = LEVELS[level]

    def __call__(self, level: str, message: str, **fields: Any) -> None:
        priority = LEVELS.get(level, 6)
        if priority > self.threshold:
            return
        if self._send is not None:
            extra = {f"HOSTTUNE_{k.upper()}": str(v) for k, v in fields.items()}
            self._send(message, PRIORITY=priority, SYSLOG_IDENTIFIER="hosttuned", **extra)
            return
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        line = f"{stamp} hosttuned[{os.getpid()}] {level}: {message}"
        print(f"{line} {detail}" if detail else line, file=self._stream, flush=True)
