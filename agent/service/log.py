"""The daemon's log: the journal with structured fields when journald runs,
else one line per message on stderr.

The choice is made up front: journald is used when its socket exists (or
stderr is already the journal, JOURNAL_STREAM) and HOSTTUNE_LOG does not say
`stderr`. Fields are upper-cased and prefixed HOSTTUNE_, so
`journalctl -u hosttuned HOSTTUNE_KNOB=sysctl:vm.swappiness` finds them.

Entries go to journald over its native protocol (one datagram per entry,
as sd_journal_send does, systemd's "Native Journal Protocol" document), written
here rather than through systemd-python: importing `systemd.journal` costs
the daemon ~2 MB of resident memory for one sendto. An entry journald does not
take (socket gone, queue full) is written to stderr instead, never lost
silently and never blocking the loop.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import sys
import time
from typing import Any, TextIO

LEVELS = {"debug": 7, "info": 6, "warning": 4, "error": 3}
_JOURNAL_SOCKET = "/run/systemd/journal/socket"
_FIELD_BAD = re.compile(r"[^A-Z0-9_]")


class JournalSender:
    """Sends entries to journald's native socket without blocking."""

    def __init__(self, path: str = _JOURNAL_SOCKET) -> None:
        self.path = path
        self._sock = socket.socket(socket.AF_UNIX,
                                   socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

    def __call__(self, message: str, **fields: Any) -> bool:
        """One entry; False when journald did not take it."""
        parts = []
        for key, value in (("MESSAGE", message), *fields.items()):
            name = _FIELD_BAD.sub("_", key.upper()).lstrip("_").encode() or b"X"
            data = str(value).encode("utf-8", "replace")
            if b"\n" in data:
                # Binary-safe form: name, newline, little-endian 64-bit size, data.
                parts.append(name + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
            else:
                parts.append(name + b"=" + data + b"\n")
        try:
            self._sock.sendto(b"".join(parts), self.path)
        except OSError:
            return False
        return True

    def close(self) -> None:
        self._sock.close()


class Log:
    def __init__(self, level: str = "info", *, use_journal: bool | None = None,
                 stream: TextIO | None = None, journal_socket: str = _JOURNAL_SOCKET) -> None:
        self.threshold = LEVELS[level]
        self._stream = stream or sys.stderr
        self._send: Any = None
        if use_journal is None:
            choice = os.environ.get("HOSTTUNE_LOG", "auto")
            use_journal = choice == "journal" or (
                choice == "auto"
                and (os.path.exists(journal_socket) or "JOURNAL_STREAM" in os.environ))
        if use_journal:
            self._send = JournalSender(journal_socket)

    def set_level(self, level: str) -> None:
        self.threshold = LEVELS[level]

    def __call__(self, level: str, message: str, **fields: Any) -> None:
        priority = LEVELS.get(level, 6)
        if priority > self.threshold:
            return
        if self._send is not None:
            extra = {f"HOSTTUNE_{k.upper()}": str(v) for k, v in fields.items()}
            sent = self._send(message, PRIORITY=priority, SYSLOG_IDENTIFIER="hosttuned", **extra)
            if sent is not False:
                return
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        line = f"{stamp} hosttuned[{os.getpid()}] {level}: {message}"
        print(f"{line} {detail}" if detail else line, file=self._stream, flush=True)
