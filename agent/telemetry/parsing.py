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
