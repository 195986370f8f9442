"""Number parsing shared by the /proc parsers.

The parsers follow one rule (psutil's _pslinux.py style): a line they cannot
read is skipped; a file with nothing usable in it raises `ParseError` naming
the path. They never raise anything else, whatever the text.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from itertools import repeat
from operator import getitem, itemgetter, mul
from typing import cast

from hosttune.agent.sense.errors import ParseError


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
    start with its key (and, in a file of `kB` values, to still end or not
    end with " kB" as before); if one does not, or the line count changed,
    the parser reads the whole file again and records a new layout. Results
    are the same either way for any file whose keys keep their places.

    `values` does the per-line work with C loops (itemgetter, map): a
    Python loop over ~60 lines was most of the cost of /proc/vmstat."""

    __slots__ = ("_get", "_kb", "_names", "_prefixes", "_scales", "_slices", "kb", "lines",
                 "spots")

    def __init__(self) -> None:
        self.kb = False  # values may end in " kB" (meminfo): scaled to bytes
        self.lines = -1
        # (line number, the line's start up to and including the separator,
        #  metric name)
        self.spots: list[tuple[int, str, str]] = []
        self._get: Callable[[list[str]], tuple[str, ...]] = _nothing
        self._prefixes: tuple[str, ...] = ()
        self._kb: tuple[bool, ...] = ()
        self._slices: tuple[slice, ...] = ()
        self._scales: tuple[float, ...] = ()
        self._names: tuple[str, ...] = ()

    def usable(self, lines: list[str]) -> bool:
        return bool(self.spots) and self.lines == len(lines)

    def record(self, lines: list[str], spots: dict[str, tuple[int, str]], *,
               kb: bool = False) -> None:
        self.kb = kb
        self.lines = len(lines)
        self.spots = sorted((i, prefix, name) for name, (i, prefix) in spots.items())
        index = [i for i, _, _ in self.spots]
        if not index:
            self._get = _nothing
        elif len(index) == 1:  # itemgetter of one index returns the item, not a tuple
            one = index[0]
            self._get = lambda ls: (ls[one],)
        else:
            self._get = itemgetter(*index)
        self._prefixes = tuple(p for _, p, _ in self.spots)
        self._names = tuple(n for _, _, n in self.spots)
        self._kb = tuple(self.kb and lines[i].endswith(" kB") for i in index)
        self._slices = tuple(slice(len(p), -3 if k else None)
                             for p, k in zip(self._prefixes, self._kb, strict=True))
        self._scales = tuple(1024.0 if k else 1.0 for k in self._kb)

    def values(self, lines: list[str]) -> dict[str, float] | None:
        """The wanted values of `lines` as a full parse would give them, or
        None when the layout no longer fits (the caller parses it all)."""
        if not self.usable(lines):
            return None
        wanted = self._get(lines)
        if not all(map(str.startswith, wanted, self._prefixes)):
            return None
        if self.kb and tuple(map(str.endswith, wanted, repeat(" kB"))) != self._kb:
            return None
        try:
            cuts = cast("Iterator[str]", map(getitem, wanted, self._slices))
            found = list(map(mul, map(float, cuts), self._scales))
        except ValueError:
            found = None
        if found is not None:
            total = sum(found)
            if total - total == 0:  # all finite (nan and inf give nan)
                return dict(zip(self._names, found, strict=True))
        # Some value is not a finite number: that line is left out.
        out: dict[str, float] = {}
        for line, cut, scale, name in zip(wanted, self._slices, self._scales, self._names,
                                          strict=True):
            try:
                value = float(line[cut]) * scale
            except ValueError:
                continue
            if value - value == 0:
                out[name] = value
        return out


def _nothing(lines: list[str]) -> tuple[str, ...]:
    return ()
