from __future__ import annotations

import io
from pathlib import Path

from hosttune.agent.service.log import Log


def test_stderr_lines_carry_fields_and_respect_level() -> None:
    out = io.StringIO()
    log = Log("info", use_journal=False, stream=out)
    log("debug", "hidden")
    log("warning", "configuration not reloaded", key="interval", line=2)
    text = out.getvalue()
    assert "hidden" not in text
    assert text.count("\n") == 1
    assert " warning: configuration not reloaded key=interval line=2" in text
    log.set_level("debug")
    log("debug", "shown")
    assert "debug: shown" in out.getvalue()


def test_journal_fields_are_prefixed() -> None:
    sent: list[tuple[str, dict[str, object]]] = []
    log = Log("info", use_journal=False)
    log._send = lambda message, **fields: sent.append((message, fields))
    log("error", "apply failed", knob="sysctl:vm.swappiness")
    assert sent == [("apply failed", {"PRIORITY": 3, "SYSLOG_IDENTIFIER": "hosttuned",
                                      "HOSTTUNE_KNOB": "sysctl:vm.swappiness"})]


def _fields(datagram: bytes) -> dict[str, str]:
    """Decode journald's native format (KEY=VALUE lines, or KEY, newline,
    64-bit little-endian size and the raw value for values with newlines)."""
    import struct

    out: dict[str, str] = {}
    pos = 0
    while pos < len(datagram):
        end = datagram.index(b"\n", pos)
        line = datagram[pos:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            pos = end + 1
        else:
            key = line
            (size,) = struct.unpack("<Q", datagram[end + 1:end + 9])
            value = datagram[end + 9:end + 9 + size]
            assert datagram[end + 9 + size:end + 10 + size] == b"\n"
            pos = end + 10 + size
        out[key.decode()] = value.decode()
    return out


def test_journal_native_protocol(tmp_path: Path) -> None:
    """Entries reach a datagram socket standing where journald's is, in its
    native format; with nobody listening the line goes to stderr instead."""
    import socket

    path = str(tmp_path / "journal.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    out = io.StringIO()
    log = Log("info", use_journal=True, stream=out, journal_socket=path)
    log("warning", "configuration not reloaded", key="interval", detail="two\nlines")
    got = _fields(server.recv(65536))
    assert got == {"MESSAGE": "configuration not reloaded", "PRIORITY": "4",
                   "SYSLOG_IDENTIFIER": "hosttuned", "HOSTTUNE_KEY": "interval",
                   "HOSTTUNE_DETAIL": "two\nlines"}
    assert out.getvalue() == ""
    server.close()
    (tmp_path / "journal.sock").unlink()
    log("error", "apply failed", knob="sysctl:vm.swappiness")
    assert out.getvalue().endswith("error: apply failed knob=sysctl:vm.swappiness\n")
