"""Number parsing shared by the /proc parsers.

The parsers follow one rule (psutil's _pslinux.py style): a line they cannot
read is skipped; a file with nothing usable in it raises `ParseError` naming
the path. They never raise anything else, whatever the text.
"""

from __future__ import annotations

import math

from hosttune.agent.errors import ParseError


def number(token: str) -> float | None:
    """A finite number, or None. Kernel counters are integers, but float() reads
    them as fast as int() and cannot overflow on a 400-digit token."""
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def nothing_usable(path: str, what: str) -> ParseError:
    return ParseError(path, f"no {what} found")


class Layout:
    """Where the wanted keys sat in the last read of one 'key value' file.

    The kernel writes /proc/vmstat, /proc/meminfo and a node's meminfo with
    the same keys in the same order on every read, so a parser can go
    straight to the lines it wants instead of splitting every line: about
    a third of the lines are wanted. Each wanted line is checked to still
    start with its key; if one does not, or the line count changed, the
    parser reads the whole file again and records a new layout. Results are
    the same either way for any file whose keys keep their places."""

    __slots__ = ("lines", "spots")

    def __init__(self) -> None:
        self.lines = -1
        # (line number, the line's start up to and including the separator,
        #  metric name)
        self.spots: list[tuple[int, str, str]] = []

    def usable(self, lines: list[str]) -> bool:
        return bool(self.spots) and self.lines == len(lines)

    def record(self, lines: list[str], spots: dict[str, tuple[int, str]]) -> None:
        self.lines = len(lines)
        self.spots = sorted((i, prefix, name) for name, (i, prefix) in spots.items())
